"""Two training jobs on one machine: does each get its fair share of the cores?

    python bench/bench_two_jobs.py                        # simple_cnn, batch 128, on 2 cores
    python bench/bench_two_jobs.py --models simple_cnn,resnet20 --steps 20
    python bench/bench_two_jobs.py --batch 4 --steps 2 --warmup 1      # a dry run (seconds)

For each setting it runs the minicnn training step (forward, loss, backward,
SGD; the step of bench/bench_step.py) in a fresh process ALONE, then in TWO
processes AT ONCE, both pinned to the same ``--cores`` cores (default: the
first 2, a small laptop's or CI machine's share). The two jobs wait for each
other after their warm-up, so their timed steps overlap. Printed per
setting: the median step time alone, of each job together, and the
slowdown together / alone. Two jobs sharing the cores that one job used
alone can each run at best half as fast: a slowdown of about 2x is fair,
more means the jobs fight.

Settings (each is a real way to run minicnn):

- ``minicnn``: what the training entry points do, ``apply_process_settings()``
  (OpenBLAS single-threaded; minicnn's own pool splits the products);
- ``blas-threads``: OpenBLAS keeps its own threads and runs minicnn's
  products with them (``MINICNN_BLAS_THREADS=<cores>``,
  ``OPENBLAS_THREAD_TIMEOUT=4``);
- ``blas-default``: as a notebook gets it (``import minicnn`` only: OpenBLAS
  keeps its default threads outside minicnn's calls; minicnn's own
  products still run it single-threaded on minicnn's pool).

The figures to report (docs/performance.md) are the slowdowns of
``minicnn`` (should be about 2x) next to the other two.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = ("minicnn", "blas-threads", "blas-default")


def worker(args):
    """One job: warm up, wait for the other job (if any), time ``args.steps`` steps, print them as JSON."""
    os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import numpy as np
    import minicnn
    import minicnn.functional as F
    from minicnn import models, optim
    from minicnn.speed import apply_process_settings, blas_threads

    if args.setting != "blas-default":
        apply_process_settings()
    minicnn.nn.init.manual_seed(0)
    model = models.get_model(args.model)
    model.train()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32))
    y = minicnn.tensor(rng.integers(0, 10, args.batch).astype(np.int64))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    for _ in range(args.warmup):
        step()
    if args.barrier:                      # both jobs start timing together
        open(os.path.join(args.barrier, f"ready{args.job}"), "w").close()
        deadline = time.time() + 600
        while len([f for f in os.listdir(args.barrier) if f.startswith("ready")]) < args.jobs:
            if time.time() > deadline:
                raise SystemExit("the other job never got ready")
            time.sleep(0.002)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, "blas_threads": blas_threads()}))


def run_jobs(setting, model, n_jobs, args):
    """Step times (lists of seconds) of ``n_jobs`` concurrent worker processes."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "MINICNN_BLAS_THREADS", "OPENBLAS_NUM_THREADS")}
    if setting == "blas-threads":
        env.update(MINICNN_BLAS_THREADS=str(len(args.cores.split(","))), OPENBLAS_THREAD_TIMEOUT="4")
    with tempfile.TemporaryDirectory() as barrier:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--setting", setting, "--model", model,
               "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--cores", args.cores, "--jobs", str(n_jobs), "--barrier", barrier if n_jobs > 1 else ""]
        procs = [subprocess.Popen(cmd + ["--job", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for i in range(n_jobs)]
        results = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a job failed ({setting}, {model}):\n{err}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    return [r["times"] for r in results], results[0]["blas_threads"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="simple_cnn", help="comma-separated model names (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per job (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    ap.add_argument("--cores", default="0,1", help="the cores both jobs share (default: %(default)s)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="which settings (default: %(default)s)")
    # the worker side (one job)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--setting", default="minicnn", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="simple_cnn", help=argparse.SUPPRESS)
    ap.add_argument("--barrier", default="", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    print(f"batch {args.batch}, float32, jobs pinned to cores {args.cores}, "
          f"median of {args.steps} steps after {args.warmup} warm-up; fair slowdown ~2x")
    print(f"{'model':<12}{'setting':<14}{'BLAS thr':>9}{'alone':>11}{'job 1':>11}{'job 2':>11}"
          f"{'slowdown 1':>12}{'slowdown 2':>12}")
    for model in args.models.split(","):
        for setting in args.settings.split(","):
            (alone,), blas = run_jobs(setting, model, 1, args)
            together, _ = run_jobs(setting, model, 2, args)
            a = statistics.median(alone)
            t1, t2 = (statistics.median(t) for t in together)
            print(f"{model:<12}{setting:<14}{str(blas):>9}{1000 * a:>9.1f}ms{1000 * t1:>9.1f}ms{1000 * t2:>9.1f}ms"
                  f"{t1 / a:>11.2f}x{t2 / a:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
