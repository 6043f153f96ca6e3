"""End-to-end training-step benchmark: minicnn vs PyTorch on the same data and threads.

    python bench/bench_step.py                      # simple_cnn and resnet20, CPU, batch 128
    python bench/bench_step.py --models resnet20 --steps 20
    python bench/bench_step.py --device gpu         # minicnn on CuPy vs torch on CUDA

One step = forward, cross-entropy loss, backward, SGD with momentum (and
weight decay), float32, batch 128, on the same random batch for both
frameworks, their steps taken in turn. Printed: the median step time of
each, the ratio minicnn / PyTorch (below 1 minicnn is faster; minicnn aims to
stay within 1.5x of PyTorch on a CPU and 3x on a GPU) with the spread of step-by-step ratios, a per-op breakdown
of minicnn's step (im2col, GEMM, col2im, pooling, batchnorm, elementwise,
...), and the peak memory of a step (resident-set high-water mark of a fresh
process, above its state before the first step).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


# ---------------------------------------------------------------------- minicnn
def minicnn_setup(model_name, batch, device, seed=0):
    import minicnn
    from minicnn import models, optim
    from minicnn.speed import apply_process_settings

    apply_process_settings()     # what every training entry point does (idempotent): see minicnn/speed.py

    minicnn.nn.init.manual_seed(seed)
    model = models.get_model(model_name).to(device)
    model.train()
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = minicnn.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)).to(device)
    y = minicnn.tensor(rng.integers(0, 10, batch).astype(np.int64)).to(device)
    return model, opt, x, y


def minicnn_step(model, opt, x, y):
    import minicnn.functional as F

    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()          # also synchronises the GPU


# ---------------------------------------------------------------------- PyTorch
def torch_model(name):
    import torch.nn as tnn
    import torch.nn.functional as TF

    if name == "simple_cnn":
        def block(ci, co):
            return [tnn.Conv2d(ci, co, 3, padding=1, bias=False), tnn.BatchNorm2d(co), tnn.ReLU(), tnn.MaxPool2d(2)]
        return tnn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), tnn.Flatten(), tnn.Linear(2048, 10))

    class Block(tnn.Module):
        def __init__(self, ci, co, stride):
            super().__init__()
            self.c1 = tnn.Conv2d(ci, co, 3, stride, 1, bias=False)
            self.b1 = tnn.BatchNorm2d(co)
            self.c2 = tnn.Conv2d(co, co, 3, 1, 1, bias=False)
            self.b2 = tnn.BatchNorm2d(co)
            self.stride, self.extra = stride, co - ci

        def forward(self, x):
            out = TF.relu(self.b1(self.c1(x)))
            out = self.b2(self.c2(out))
            sc = x
            if self.stride != 1 or self.extra:
                sc = TF.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return TF.relu(out + sc)

    if name == "fast_cnn":
        class Scale(tnn.Module):
            def forward(self, x):
                return x / 9

        def group(ci, co):
            bns = [tnn.BatchNorm2d(co), tnn.BatchNorm2d(co)]
            for bn in bns:
                bn.weight.requires_grad_(False)
            return [tnn.Conv2d(ci, co, 3, padding=1, bias=False), tnn.MaxPool2d(2), bns[0], tnn.ReLU(),
                    tnn.Conv2d(co, co, 3, padding=1, bias=False), bns[1], tnn.ReLU()]
        whiten = tnn.Conv2d(3, 24, 2)
        whiten.weight.requires_grad_(False)
        return tnn.Sequential(whiten, tnn.ReLU(), *group(24, 32), *group(32, 64), *group(64, 128),
                              tnn.MaxPool2d(3), tnn.Flatten(), tnn.Linear(128, 10, bias=False), Scale())

    if name != "resnet20":
        raise SystemExit(f"no PyTorch twin for {name}")
    layers, ci = [tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU()], 16
    for stage, w in enumerate((16, 32, 64)):
        for i in range(3):
            layers.append(Block(ci, w, 2 if stage and i == 0 else 1))
            ci = w
    return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))


def torch_setup(model_name, batch, device, seed=0):
    import torch

    torch.manual_seed(seed)
    dev = "cuda" if device == "gpu" else "cpu"
    model = torch_model(model_name).to(dev)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device=dev)
    y = torch.tensor(rng.integers(0, 10, batch).astype(np.int64), device=dev)
    return model, opt, x, y


def torch_step(model, opt, x, y):
    import torch.nn.functional as TF

    loss = TF.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


# ---------------------------------------------------------------------- timing
def time_steps(runners, model_name, batch, device, warmup, steps):
    """Step times of each (setup, step) pair in ``runners``, their steps taken in turn.

    Alternating the frameworks step by step means a slow spell of a shared
    machine lands on both of them, so their ratio is steadier than two runs
    one after the other would give. Returns one list of times per runner.
    """
    states = [setup(model_name, batch, device) for setup, _ in runners]
    for _ in range(warmup):
        for (_, step), state in zip(runners, states):
            step(*state)
    times = [[] for _ in runners]
    for _ in range(steps):
        for i, ((_, step), state) in enumerate(zip(runners, states)):
            t0 = time.perf_counter()
            step(*state)
            times[i].append(time.perf_counter() - t0)
    return times


def breakdown(model_name, batch, device, steps=3):
    """minicnn's step time by category, from the op profiler (median-free: summed over ``steps``)."""
    import minicnn.functional as F
    from minicnn.functional import conv as conv_mod, windows as windows_mod
    from minicnn.profiler import Profiler

    state = minicnn_setup(model_name, batch, device)
    minicnn_step(*state)
    model, opt, x, y = state
    with Profiler(sync=device == "gpu") as prof:
        # col2im (and conv2d's dx, col2im_of_product, one kernel tap at a time) adds through add_tap.
        prof.wrap(conv_mod, "im2col").wrap(conv_mod, "add_tap", "col2im").wrap(windows_mod, "add_tap", "col2im")
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            with prof.timing("optimizer", "step"):
                opt.step()
            loss.item()
        wall = (time.perf_counter() - t0) / steps
    per = {k: v / steps for k, v in prof.totals.items()}
    im2col = per.get(("im2col", "call"), 0.0)
    col2im = per.get(("col2im", "call"), 0.0)
    conv = sum(v for (n, p), v in per.items() if n in ("Conv2d", "ConvTranspose2d"))
    cats = {
        "im2col": im2col,
        "col2im": col2im,
        "GEMM (conv minus im2col/col2im)": conv - im2col - col2im,
        "pooling": sum(v for (n, p), v in per.items() if "Pool" in n),
        "batchnorm": sum(v for (n, p), v in per.items() if n == "BatchNorm"),
        "linear (matmul)": sum(v for (n, p), v in per.items() if n == "MatMul"),
        "loss": sum(v for (n, p), v in per.items() if n == "CrossEntropy"),
        "optimizer": per.get(("optimizer", "step"), 0.0),
    }
    accounted = set()
    for (n, p) in per:
        if n in ("Conv2d", "ConvTranspose2d", "BatchNorm", "MatMul", "CrossEntropy", "im2col", "col2im",
                 "optimizer") or "Pool" in n:
            accounted.add((n, p))
    cats["elementwise & shape ops"] = sum(v for k, v in per.items() if k not in accounted)
    cats["autograd + Python (rest of wall time)"] = wall - sum(cats.values())
    return wall, cats, prof.table(top=12)


def peak_memory(framework, model_name, batch, device):
    """Run 3 steps in a fresh process; return (MiB before the first step, MiB peak during the steps)."""
    code = (
        "import sys, resource, json; sys.path.insert(0, %r); import bench_step as b\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20\n"
        "setup, step = (b.minicnn_setup, b.minicnn_step) if %r == 'minicnn' else (b.torch_setup, b.torch_step)\n"
        "st = setup(%r, %d, %r)\n"
        "base = rss()\n"
        "for _ in range(3): step(*st)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps([base, peak]))\n") % (HERE, framework, model_name, batch, device)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        return None
    base, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return base, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="simple_cnn,resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()

    try:
        import torch
        torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"device {args.device}, batch {args.batch}, float32, {args.threads} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up"
          + ("" if have_torch else "; PyTorch not installed: no baseline"))
    for name in args.models.split(","):
        runners = [(minicnn_setup, minicnn_step)] + ([(torch_setup, torch_step)] if have_torch else [])
        times = time_steps(runners, name, args.batch, args.device, args.warmup, args.steps)
        m_ours = statistics.median(times[0])
        line = f"\n== {name}: minicnn {1000 * m_ours:.1f} ms/step"
        if have_torch:
            m_theirs = statistics.median(times[1])
            pair = sorted(a / b for a, b in zip(*times))          # step i of each, taken back to back
            q1, q3 = pair[len(pair) // 4], pair[(3 * len(pair)) // 4]
            line += (f", PyTorch {1000 * m_theirs:.1f} ms/step, ratio minicnn/PyTorch = {m_ours / m_theirs:.2f}"
                     f" (ratio of neighbouring steps: quartiles {q1:.2f}-{q3:.2f})")
        print(line)
        wall, cats, table = breakdown(name, args.batch, args.device)
        print(f"minicnn step breakdown (profiled step {1000 * wall:.1f} ms):")
        for k, v in cats.items():
            print(f"  {k:<40}{1000 * v:8.1f} ms  {100 * v / wall:5.1f}%")
        print("top ops:\n  " + table.replace("\n", "\n  "))
        if not args.no_memory and args.device == "cpu":
            mem_ours = peak_memory("minicnn", name, args.batch, args.device)
            msg = "peak memory of a step (RSS high-water above the state before it): "
            if mem_ours:
                msg += f"minicnn {mem_ours[1] - mem_ours[0]:.0f} MiB"
            if have_torch:
                mem_theirs = peak_memory("torch", name, args.batch, args.device)
                if mem_theirs and mem_ours:
                    d_ours, d_theirs = mem_ours[1] - mem_ours[0], mem_theirs[1] - mem_theirs[0]
                    msg += f", PyTorch {d_theirs:.0f} MiB, ratio {d_ours / max(d_theirs, 1e-9):.2f}"
            print(msg)


if __name__ == "__main__":
    main()
