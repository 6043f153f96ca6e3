"""Time forward+backward of single layers at the CIFAR ResNet-20 shapes, against PyTorch CPU.

Usage::

    python bench/bench_layers.py                 # batch 128, 2 threads, 7 timed runs per case
    python bench/bench_layers.py --repeats 11 --threads 2

For each layer (3x3 conv, stride 1 and 2; 2x2 max pool; batch norm in
training mode) it prints the median time of forward+backward in float32:

- ``minicnn cl``: minicnn on channels-last memory, the layout its own conv
  layers produce inside a network (the normal case);
- ``minicnn nchw``: minicnn on a plain C-contiguous NCHW array (e.g. the
  first layer, or arrays made by hand);
- ``torch``: PyTorch CPU with the same number of threads, measured in the
  same run (the column is skipped when PyTorch is not installed), and the
  ratio minicnn cl / torch.

The input is made a non-leaf tensor (``from_previous_layer``), as inside a
network: dL/dx is computed and handed back, not copied into a leaf's
``.grad``. One untimed pass over all cases comes first (the allocator
settles), then each side runs its repeats in a block right after the
other's (``--interleave`` alternates calls instead, fairer to a noisy
machine, but each library's spinning idle threads then slow the other).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minicnn  # noqa: E402
import minicnn.functional as F  # noqa: E402
from minicnn.speed import apply_process_settings  # noqa: E402

try:
    import torch
except ImportError:  # the torch columns are skipped
    torch = None


def channels_last(a):
    """The same NCHW array with channels-last (NHWC) memory, as a conv layer outputs it."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


class _FromPreviousLayer(minicnn.Function):
    """Identity whose backward drops the gradient: makes x a non-leaf, like a layer's output."""

    def forward(self, x):
        return x

    def backward(self, g):
        return None


def from_previous_layer(array):
    return _FromPreviousLayer.apply(minicnn.tensor(array, requires_grad=True))


def cases(batch, rng):
    """(name, minicnn step for a given input layout, torch step or None) for every layer."""
    out = []
    conv_shapes = [(16, 16, 32, 1), (16, 32, 32, 2), (32, 32, 16, 1), (32, 64, 16, 2), (64, 64, 8, 1)]
    for c_in, c_out, hw, stride in conv_shapes:
        x = rng.standard_normal((batch, c_in, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        oh = (hw + 2 - 3) // stride + 1
        g = rng.standard_normal((batch, c_out, oh, oh)).astype(np.float32)

        def mini(layout, x=x, w=w, g=g, stride=stride):
            x_ = layout(x)
            wt = minicnn.tensor(w, requires_grad=True)
            g_ = layout(g)

            def step():
                wt.grad = None
                F.conv2d(from_previous_layer(x_), wt, stride=stride, padding=1).backward(g_)
            return step

        out.append((f"conv3x3 {c_in:>2}->{c_out:<2} {hw:>2}x{hw:<2} s{stride}", mini,
                    _torch_step(lambda X, W, s=stride: torch.nn.functional.conv2d(X, W, stride=s, padding=1),
                                x, w, g)))
    for c, hw in [(16, 32), (32, 16), (64, 8)]:
        x = rng.permutation(batch * c * hw * hw).reshape(batch, c, hw, hw).astype(np.float32)
        g = rng.standard_normal((batch, c, hw // 2, hw // 2)).astype(np.float32)

        def mini(layout, x=x, g=g):
            x_ = layout(x)
            g_ = layout(g)

            def step():
                F.max_pool2d(from_previous_layer(x_), 2).backward(g_)
            return step

        out.append((f"maxpool2x2 {c:>2}ch {hw:>2}x{hw:<2}", mini,
                    _torch_step(lambda X: torch.nn.functional.max_pool2d(X, 2), x, None, g)))
    for c, hw in [(16, 32), (32, 16), (64, 8)]:
        x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
        g = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
        gamma = np.ones(c, np.float32)

        def mini(layout, x=x, g=g, gamma=gamma, c=c):
            x_ = layout(x)
            wt = minicnn.tensor(gamma, requires_grad=True)
            bt = minicnn.tensor(np.zeros(c, np.float32), requires_grad=True)
            rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
            g_ = layout(g)

            def step():
                wt.grad = bt.grad = None
                F.batch_norm(from_previous_layer(x_), rm, rv, wt, bt, training=True).backward(g_)
            return step

        def torch_bn(X, W, c=c):
            return torch.nn.functional.batch_norm(X, torch.zeros(c), torch.ones(c), W, torch.zeros(c),
                                                  training=True)
        out.append((f"batchnorm  {c:>2}ch {hw:>2}x{hw:<2} train", mini, _torch_step(torch_bn, x, gamma, g)))
    return out


def _torch_step(fn, x, w, g):
    if torch is None:
        return None
    X = torch.tensor(x, requires_grad=True)
    W = None if w is None else torch.tensor(w, requires_grad=True)
    G = torch.tensor(g)

    def step():
        X.grad = None
        if W is not None:
            W.grad = None
        (fn(X) if W is None else fn(X, W)).backward(G)
    return step


def median_ms(steps, repeats, interleave=False, warmup=3):
    """Median wall time in ms of each step (after ``warmup`` untimed calls).

    By default each step runs its repeats as one block: interleaving NumPy
    and PyTorch calls lets one library's idle worker threads (OpenBLAS and
    OpenMP spin for a while after each call) slow the other down.
    """
    times = [[] for _ in steps]
    if interleave:
        for s in steps:
            for _ in range(warmup):
                s()
        for _ in range(repeats):
            for s, t in zip(steps, times):
                t0 = time.perf_counter()
                s()
                t.append(time.perf_counter() - t0)
    else:
        for s, t in zip(steps, times):
            for _ in range(warmup):
                s()
            for _ in range(repeats):
                t0 = time.perf_counter()
                s()
                t.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (match the cores NumPy's BLAS uses)")
    ap.add_argument("--interleave", action="store_true",
                    help="alternate minicnn and torch calls instead of timing each in a block")
    args = ap.parse_args(argv)
    apply_process_settings()     # as every training entry point does: see minicnn/speed.py
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    head = f"{'layer (batch %d, float32, fwd+bwd)' % args.batch:<40} {'minicnn cl':>11} {'minicnn nchw':>13}"
    if torch is not None:
        head += f" {'torch':>9} {'ratio cl/torch':>15}"
    print(head)
    print("-" * len(head))
    rows = []
    for name, mini, torch_step in cases(args.batch, rng):
        steps = [mini(channels_last), mini(lambda a: a)]
        if torch_step is not None:
            steps.append(torch_step)
        rows.append((name, steps))
    # One untimed pass over everything first: the allocator (glibc's mmap threshold,
    # the heap size) settles into its steady state, as in the second epoch of training.
    for _, steps in rows:
        for step in steps:
            step()
    for name, steps in rows:
        ms = median_ms(steps, args.repeats, args.interleave)
        line = f"{name:<40} {ms[0]:>9.1f}ms {ms[1]:>11.1f}ms"
        if len(steps) == 3:
            line += f" {ms[2]:>7.1f}ms {ms[0] / ms[2]:>14.2f}x"
        print(line, flush=True)
    if torch is not None:
        print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")


if __name__ == "__main__":
    main()
