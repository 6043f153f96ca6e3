"""End-to-end training-step benchmark: minicnn vs PyTorch on the same data and threads.

    python bench/bench_step.py                      # simple_cnn, fast_cnn, resnet20, vgg_small; CPU, batch 128
    python bench/bench_step.py --models resnet20 --steps 20
    python bench/bench_step.py --modes plain        # only the loop of a process that just imports minicnn
    python bench/bench_step.py --device gpu         # minicnn on CuPy vs torch on CUDA

One step = forward, cross-entropy loss, backward, SGD with momentum (and
weight decay), float32, batch 128, on the same random batch for both
frameworks, each framework in a fresh process of its own (as a user runs
it), the two processes taking their steps in turn. Two modes for minicnn:

- ``train``: as ``minicnn train`` runs, after ``speed.apply_process_settings()``;
- ``plain``: a loop written by hand in a process that only does ``import minicnn``.

Printed per model: the median step time of each framework in each mode, the
ratio minicnn / PyTorch (below 1 minicnn is faster) with the spread of
step-by-step ratios; the GEMM work of a step and the fraction of the
measured sgemm peak each framework achieves on it; a per-op breakdown of
minicnn's step (im2col, GEMM, col2im, pooling, batchnorm, elementwise, ...);
a per-convolution table (its three GEMMs alone, the whole minicnn layer
and PyTorch's, each as GFLOP/s and % of the peak); and the peak memory of a
step (resident-set high-water mark of a fresh process, above its state
before the first step).
"""
import argparse
import functools
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
def minicnn_setup(model_name, batch, device, seed=0, settings=True):
    import minicnn
    from minicnn import models, optim
    from minicnn.speed import apply_process_settings

    if settings:
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

    def cbr(ci, co):
        return [tnn.Conv2d(ci, co, 3, padding=1, bias=False), tnn.BatchNorm2d(co), tnn.ReLU()]

    if name == "simple_cnn":
        return tnn.Sequential(*cbr(3, 32), tnn.MaxPool2d(2), *cbr(32, 64), tnn.MaxPool2d(2), *cbr(64, 128),
                              tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(2048, 10))
    if name == "vgg_small":
        return tnn.Sequential(*cbr(3, 64), *cbr(64, 64), tnn.MaxPool2d(2), *cbr(64, 128), *cbr(128, 128),
                              tnn.MaxPool2d(2), *cbr(128, 256), *cbr(256, 256), tnn.MaxPool2d(2), tnn.Flatten(),
                              tnn.Dropout(0.5), tnn.Linear(4096, 10))

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
def breakdown(model_name, batch, device, steps=3):
    """minicnn's step time by category, from the op profiler (median-free: summed over ``steps``)."""
    import minicnn.functional as F
    from minicnn.functional import conv as conv_mod, windows as windows_mod
    from minicnn.profiler import Profiler

    state = minicnn_setup(model_name, batch, device)
    minicnn_step(*state)
    model, opt, x, y = state
    with Profiler(sync=device == "gpu") as prof:
        # im2col's copy on the CPU is ``unfold`` (also called block by block by the conv helpers); col2im
        # (and conv2d's dx, col2im_of_product, one kernel tap at a time) adds through add_tap.
        prof.wrap(conv_mod, "unfold" if device == "cpu" else "im2col", "im2col")
        prof.wrap(conv_mod, "add_tap", "col2im").wrap(windows_mod, "add_tap", "col2im")
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
    """Run 3 steps in a fresh process; return (MiB before the first step, MiB peak during the steps).

    The peak is the process's own resident-set high-water mark (``VmHWM``),
    reset after the setup (``/proc/self/clear_refs``), not ``ru_maxrss``:
    Linux carries ``ru_maxrss`` over from the parent through fork and exec,
    so a child of a large benchmark process would report the parent's size.
    """
    code = (
        "import sys, resource, json; sys.path.insert(0, %r); import bench_step as b\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20\n"
        "def high_water():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "setup, step = (b.minicnn_setup, b.minicnn_step) if %r == 'minicnn' else (b.torch_setup, b.torch_step)\n"
        "st = setup(%r, %d, %r)\n"
        "try:\n"
        "    open('/proc/self/clear_refs', 'w').write('5')      # the high-water mark starts again from now\n"
        "except OSError:\n"
        "    pass\n"
        "base = rss()\n"
        "for _ in range(3): step(*st)\n"
        "print(json.dumps([base, max(base, high_water())]))\n") % (HERE, framework, model_name, batch, device)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        return None
    base, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return base, peak


def run_mode(mode, model_name, args):
    """Step times [minicnn, PyTorch or None] of one model in one mode, each framework in a fresh process.

    ``mode`` is "train" (after ``apply_process_settings()``, as ``minicnn train``)
    or "plain" (a process that only imports minicnn, as a loop written by hand).
    The two processes take their steps in turn, each waiting (asleep, on a
    pipe) while the other steps, so a slow spell of a shared machine lands on
    both and neither framework's threads or allocator settings touch the other.
    """
    def start(role):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", role, "--models", model_name,
               "--batch", str(args.batch), "--device", args.device, "--threads", str(args.threads)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                env=os.environ.copy())
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise SystemExit(f"bench_step: the {role} process for {model_name} did not start (its error is above)")
        return proc

    def step(proc):
        proc.stdin.write("step\n")
        return float(proc.stdout.readline())
    procs = [start(mode)] + ([start("torch")] if have_module("torch") else [])
    try:
        for _ in range(args.warmup):
            for proc in procs:
                step(proc)
        times = [[] for _ in procs]
        for _ in range(args.steps):
            for i, proc in enumerate(procs):
                times[i].append(step(proc))
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait()
    return times + [None] * (2 - len(times))


def child(args):
    """The body of one of ``run_mode``'s processes: set up, say "ready", then time one step per "step" line."""
    if args.child == "torch":
        torch_threads(args.threads)
        setup, step = torch_setup, torch_step
    else:
        setup = functools.partial(minicnn_setup, settings=args.child == "train")
        step = minicnn_step
    state = setup(args.models, args.batch, args.device)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        step(*state)
        print(time.perf_counter() - t0, flush=True)


def have_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def torch_threads(threads):
    """Give PyTorch ``threads`` threads; False when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return False
    torch.set_num_threads(threads)
    return True


def ratio_line(label, times):
    ours, theirs = times
    m_ours = statistics.median(ours)
    line = f"  {label:<34} minicnn {1000 * m_ours:7.1f} ms/step"
    if theirs:
        m_theirs = statistics.median(theirs)
        pair = sorted(a / b for a, b in zip(ours, theirs))          # step i of each, taken back to back
        q1, q3 = pair[len(pair) // 4], pair[(3 * len(pair)) // 4]
        line += (f", PyTorch {1000 * m_theirs:7.1f} ms/step, ratio {m_ours / m_theirs:.2f}"
                 f" (neighbouring steps: quartiles {q1:.2f}-{q3:.2f})")
    return line, m_ours, (statistics.median(theirs) if theirs else None)


# ---------------------------------------------------------------------- GEMM efficiency
def sgemm_peak(n=2048, repeats=5):
    """The best float32 GFLOP/s this process reaches on one big square product (either way minicnn could run it)."""
    from minicnn import speed
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    best = min(best_time(lambda: product(a, b), repeats)       # minicnn's pool of single-threaded calls;
               for product in (speed.matmul, np.matmul))           # OpenBLAS's own threads
    return 2 * n ** 3 / best / 1e9


@functools.lru_cache(maxsize=None)
def conv_geometries(model_name, batch):
    """The distinct convolutions of one forward pass: [(x shape, weight shape, settings, count, needs dx, needs dW)].

    Found by running the model once at ``batch``; cached, as the GEMM count and the conv table both need it.
    """
    import minicnn
    from minicnn import models
    from minicnn.functional import conv as conv_mod

    seen, order = {}, []
    original = conv_mod.Conv2d.forward

    def spy(fn, x, weight, bias, **settings):
        key = (tuple(x.shape), tuple(weight.shape), settings["stride"], settings["padding"],
               settings["dilation"], settings["groups"])
        if key not in seen:
            seen[key] = [0, bool(fn.needs_input_grad[0]), bool(fn.needs_input_grad[1])]
            order.append(key)
        seen[key][0] += 1
        return original(fn, x, weight, bias, **settings)
    minicnn.nn.init.manual_seed(0)
    model = models.get_model(model_name)
    model.train()
    conv_mod.Conv2d.forward = spy
    try:
        model(minicnn.tensor(np.zeros((batch, 3, 32, 32), np.float32)))
    finally:
        conv_mod.Conv2d.forward = original
    return [(k[0], k[1], dict(stride=k[2], padding=k[3], dilation=k[4], groups=k[5]), *seen[k]) for k in order]


def gemm_sizes(x_shape, w_shape, settings):
    """(M, K, P) of a convolution's forward GEMM, (M, K) @ (K, P), per group times groups."""
    from minicnn.reference import output_size
    N, C = x_shape[:2]
    Co, Cg, KH, KW = w_shape
    OH, OW = (output_size(x_shape[2 + i], (KH, KW)[i], settings["stride"][i], settings["padding"][i],
                          settings["dilation"][i]) for i in range(2))
    return N * OH * OW, KH * KW * Cg, Co


def step_gemm_flops(model_name, batch):
    """Multiply-add work of one training step's GEMMs, in FLOPs (2 per multiply-add): each conv's
    forward, dx (where needed) and dW, and the linear layers (forward, dx, dW)."""
    from minicnn import models
    flops = 0
    for x_shape, w_shape, settings, count, needs_dx, needs_dw in conv_geometries(model_name, batch):
        M, K, P = gemm_sizes(x_shape, w_shape, settings)
        flops += count * 2 * M * K * P * (1 + needs_dx + needs_dw)
    for p in models.get_model(model_name).parameters():
        if p.data.ndim == 2 and p.requires_grad:                           # a linear layer's weight (out, in)
            flops += 3 * 2 * batch * p.data.shape[0] * p.data.shape[1]
    return flops


def best_time(f, repeats=5):
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def conv_table(model_name, batch, peak, have_torch):
    """One row per distinct convolution: its GEMMs alone, minicnn's layer (forward + backward) and PyTorch's."""
    from minicnn import speed
    from minicnn.functional.conv import Conv2d
    rng = np.random.default_rng(0)
    rows = ["  conv (x -> weight)                  count   GEMMs alone        minicnn layer      PyTorch layer",
            "                                              GFLOP/s  % peak    GFLOP/s  % peak    GFLOP/s  % peak"]
    for x_shape, w_shape, settings, count, needs_dx, needs_dw in conv_geometries(model_name, batch):
        M, K, P = gemm_sizes(x_shape, w_shape, settings)
        flops = 2 * M * K * P * (1 + needs_dx + needs_dw)
        G = settings["groups"]
        cols = rng.standard_normal((G, M, K), dtype=np.float32)
        W2T = rng.standard_normal((G, K, P // G), dtype=np.float32)
        gy = rng.standard_normal((G, M, P // G), dtype=np.float32)

        def gemms():
            speed.matmul(cols, W2T)                                   # forward: cols @ W2.T
            if needs_dx:
                speed.matmul(gy, W2T.transpose(0, 2, 1))              # dcols = G_y @ W2
            if needs_dw:
                speed.matmul_t(gy, cols)                              # dW2 = G_y.T @ cols
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)

        def layer():
            fn = Conv2d()
            fn.needs_input_grad = (needs_dx, needs_dw, False)
            y = fn.forward(x, w, None, **settings)
            fn.backward(np.ones_like(y))
        cells = [flops / best_time(gemms) / 1e9, flops / best_time(layer) / 1e9]
        if have_torch:
            import torch
            X = torch.tensor(x).contiguous(memory_format=torch.channels_last).requires_grad_(needs_dx)
            W = torch.tensor(w, requires_grad=needs_dw)

            def torch_layer():
                Y = torch.nn.functional.conv2d(X, W, **settings)
                Y.backward(torch.ones_like(Y))
            cells.append(flops / best_time(torch_layer) / 1e9)
        label = f"{tuple(x_shape[1:])} -> {tuple(w_shape)}" + ("" if settings["stride"] == (1, 1) else " /2")
        rows.append(f"  {label:<36}{count:5d}   " + "".join(f"{c:7.1f}  {100 * c / peak:5.1f}%   " for c in cells))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="simple_cnn,fast_cnn,resnet20,vgg_small")
    ap.add_argument("--modes", default="train,plain", help="train, plain or both (comma-separated)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-op breakdown and the conv table")
    ap.add_argument("--child", choices=["train", "plain", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    from minicnn.speed import apply_process_settings
    apply_process_settings()
    have_torch = torch_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in ("train", "plain")]
    if bad:
        raise SystemExit(f"bench_step: --modes takes train and/or plain, got {', '.join(bad)}")
    peak = sgemm_peak() if args.device == "cpu" else None
    print(f"device {args.device}, batch {args.batch}, float32, {args.threads} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up, each model and mode in a fresh process"
          + (f"; measured sgemm peak {peak:.1f} GFLOP/s" if peak else "")
          + ("" if have_torch else "; PyTorch not installed: no baseline"))
    labels = {"train": "train (apply_process_settings):", "plain": "plain `import minicnn`:"}
    for name in args.models.split(","):
        print(f"\n== {name}")
        medians = {}
        for mode in modes:
            line, m_ours, m_theirs = ratio_line(labels[mode], run_mode(mode, name, args))
            medians[mode] = (m_ours, m_theirs)
            print(line)
        if peak and modes:
            flops = step_gemm_flops(name, args.batch)
            m_ours, m_theirs = medians[modes[0]]
            line = (f"  GEMM work {flops / 1e9:.2f} GFLOP per step; achieved on it ({modes[0]}): "
                    f"minicnn {flops / m_ours / 1e9:.1f} GFLOP/s = {100 * flops / m_ours / 1e9 / peak:.0f}% of peak")
            if m_theirs:
                line += f", PyTorch {flops / m_theirs / 1e9:.1f} GFLOP/s = {100 * flops / m_theirs / 1e9 / peak:.0f}%"
            print(line)
        if not args.no_breakdown:
            wall, cats, table = breakdown(name, args.batch, args.device)
            print(f"minicnn step breakdown (profiled step {1000 * wall:.1f} ms; times inside the pool's threads "
                  f"are summed over the threads):")
            for k, v in cats.items():
                print(f"  {k:<40}{1000 * v:8.1f} ms  {100 * v / wall:5.1f}%")
            print("top ops:\n  " + table.replace("\n", "\n  "))
            if peak:
                print("convolutions, forward + backward (GFLOP/s of their GEMM work):")
                print(conv_table(name, args.batch, peak, have_torch))
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
