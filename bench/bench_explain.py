"""Time occlusion and Grad-CAM, the two explain methods a user waits for most, on simple_cnn and resnet20.

Usage::

    python bench/bench_explain.py                  # 5 timed runs per case, median printed
    python bench/bench_explain.py --repeats 3 --models resnet20
    python bench/bench_explain.py --dry-run        # tiny sizes, one run: checks the script works

Cases (float32, CPU, weights untrained: the cost does not depend on them):

- ``occlusion``: one 32x32 image, an 8x8 window with stride 2 (13 x 13 = 169
  windows), the probability score; the 169 occluded copies go through the
  network in two batched forward passes (128 + 41 images).
- ``grad_cam``: a batch of 64 images at the default layer (one forward and
  one backward pass from that layer).

For each it prints the median wall time in seconds. There is no PyTorch
column: PyTorch itself has no occlusion or Grad-CAM (Captum does, and it is
not a dependency). Each case should take no more than a few seconds on a
2-core CPU.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minicnn import explain  # noqa: E402
from minicnn.models import get_model  # noqa: E402
from minicnn.speed import apply_process_settings  # noqa: E402


def median_time(fn, repeats):
    fn()                                   # one untimed run: the allocator settles
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["simple_cnn", "resnet20"])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (the median is printed)")
    ap.add_argument("--batch", type=int, default=64, help="Grad-CAM batch size")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes and one run, to check the script")
    args = ap.parse_args(argv)
    apply_process_settings()
    rng = np.random.default_rng(0)
    window, stride, batch, repeats = 8, 2, args.batch, args.repeats
    if args.dry_run:
        window, stride, batch, repeats = 8, 8, 2, 1
    print(f"{'model':<12} {'case':<44} {'median s':>9}")
    for name in args.models:
        model = get_model(name).eval()
        one = rng.random((1, 3, 32, 32)).astype(np.float32)
        many = rng.random((batch, 3, 32, 32)).astype(np.float32)
        n_windows = ((32 - window) // stride + 1) ** 2
        occ = median_time(lambda: explain.occlusion(model, one, 0, window=window, stride=stride), repeats)
        print(f"{name:<12} {f'occlusion 1 image, {window}x{window} stride {stride} ({n_windows} windows)':<44} "
              f"{occ:9.3f}")
        layer = explain.default_cam_layer(model, one)
        gc = median_time(lambda: explain.grad_cam(model, many, 0, layer), repeats)
        print(f"{name:<12} {f'grad_cam {batch} images at {layer}':<44} {gc:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
