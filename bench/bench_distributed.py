"""Data-parallel speed on this machine: K = 2 MPI workers against one process (docs/17-distributed.md).

    python bench/bench_distributed.py                     # simple_cnn, fast_cnn, resnet20; global batch 128
    python bench/bench_distributed.py --models simple_cnn --batch 256 --steps 5

For each model, the time of one training step (forward, backward, the
gradient all-reduce, the SGD step) on the same global batch:

- one process on one core, and on two cores (minicnn's thread pool);
- K = 2 workers (``mpiexec -n 2``), one core each, each with half the batch;
  their step includes the all-reduce, timed on its own too ("all-reduce
  in step", which also holds the wait for the slower worker), and the bare
  all-reduce of the same buffer after a barrier ("bare all-reduce").

Scaling efficiency = (one process, one core) / (K workers) / K. The
machine is shared: numbers are rough; run it on an idle machine to quote them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
LOOPBACK = {"HYDRA_IFACE": "lo", "HYDRA_LAUNCHER": "fork", "UCX_TLS": "self,sm,tcp", "UCX_NET_DEVICES": "lo"}


def worker(args):
    """One process: time the steps of every model; print one JSON line per model (rank 0)."""
    cores = sorted(os.sched_getaffinity(0))
    from minicnn.distributed import communicator
    comm = communicator()
    rank, size = (comm.rank, comm.size) if comm else (0, 1)
    os.sched_setaffinity(0, set(cores[rank::size][:args.threads]) if comm else set(cores[:args.threads]))
    from minicnn import functional as F
    from minicnn import models, optim
    from minicnn.autograd import Tensor
    from minicnn.nn import init
    from minicnn.speed import apply_process_settings

    apply_process_settings()
    rng = np.random.default_rng(0)
    local = args.batch // size + (1 if rank < args.batch % size else 0)
    for name in args.models:
        init.manual_seed(0)
        model = models.get_model(name, num_classes=10)
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = Tensor(rng.normal(size=(local, 3, 32, 32)).astype(np.float32))
        y = Tensor(rng.integers(0, 10, local))
        steps, reduces = [], []
        for i in range(args.warmup + args.steps):
            if comm:
                comm.barrier()
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            t1 = time.perf_counter()
            if comm:
                comm.average_gradients(model.parameters(), local)
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if i >= args.warmup:
                steps.append(t3 - t0)
                reduces.append(t2 - t1)
        n = sum(p.size for p in model.parameters())
        bare = None
        if comm:
            flat = np.zeros(n + 1, np.float32)
            times = []
            for _ in range(10):
                comm.barrier()
                t0 = time.perf_counter()
                comm.allreduce_sum(flat)
                times.append(time.perf_counter() - t0)
            bare = float(np.median(times))
        if rank == 0:
            print(json.dumps({"model": name, "step_s": float(np.median(steps)),
                              "allreduce_in_step_s": float(np.median(reduces)), "bare_allreduce_s": bare,
                              "params": n}), flush=True)


def run(argv, env=None):
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{out.stderr[-3000:]}")
    return {r["model"]: r for r in map(json.loads, filter(None, out.stdout.splitlines()))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["simple_cnn", "fast_cnn", "resnet20"])
    p.add_argument("--batch", type=int, default=128, help="the global batch")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--models", *args.models, "--batch",
          str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit('no mpiexec: pip install "minicnn[mpi]"')
    one1 = run(me + ["--threads", "1"])
    one2 = run(me + ["--threads", "2"])
    two = run([mpiexec, "-n", "2"] + me + ["--threads", "1"], env=LOOPBACK)
    print(f"global batch {args.batch}; median of {args.steps} steps; seconds per step (shared machine: rough)")
    print(f"{'model':<11} {'params':>8} {'1 proc 1 core':>14} {'1 proc 2 cores':>15} {'2 workers':>10} "
          f"{'all-reduce in step':>19} {'bare all-reduce':>16} {'speed-up':>9} {'efficiency':>11}")
    for m in args.models:
        t1, t2, tk = one1[m]["step_s"], one2[m]["step_s"], two[m]["step_s"]
        ar, bare = two[m]["allreduce_in_step_s"], two[m]["bare_allreduce_s"]
        print(f"{m:<11} {one1[m]['params']:>8,} {t1:>14.3f} {t2:>15.3f} {tk:>10.3f} "
              f"{ar:>10.4f} ({100 * ar / tk:4.1f}%) {bare * 1e3:>13.2f} ms {t1 / tk:>8.2f}x {t1 / tk / 2:>10.0%}")


if __name__ == "__main__":
    main()
