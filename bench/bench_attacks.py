"""Time FGSM and 10-step PGD against one forward+backward pass over the same images.

Usage::

    python bench/bench_attacks.py                                  # 1,000 CIFAR-10 test images, simple_cnn
    python bench/bench_attacks.py --checkpoint runs/simple_cnn/best.npz --data ../shared/data/cifar10-jpeg
    python bench/bench_attacks.py --n 20 --batch-size 10 --repeats 1 # dry run (seconds)

The model is simple_cnn with untrained weights behind an ``nn.Normalize``
(as ``minicnn.load_model`` builds it), or the trained model of
``--checkpoint``; the timing hardly depends on the weights. The images are
the first ``--n`` CIFAR-10 test images when ``--data`` (or a default place
``minicnn train`` looks in) has them, else uniform noise of the same shape
(printed). For each of

- ``fwd+bwd``: one forward pass and one backward pass to the input (what an
  attack step costs: the baseline, measured in the same run);
- ``FGSM``: ``attacks.fgsm`` at eps 8/255;
- ``PGD-10``: ``attacks.pgd`` at eps 8/255, 10 steps, random start;

it prints the median over ``--repeats`` of the wall time over all images
and the ratio to fwd+bwd. Expected: FGSM about 1x and PGD-10 about 10x
(plus the clipping and projection, which are cheap). Robust accuracy is
printed too (meaningful only with a trained ``--checkpoint``).
"""
import argparse
import os
import sys
import time
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minicnn  # noqa: E402
from minicnn import Tensor, attacks, enable_grad, nn  # noqa: E402
from minicnn import functional as F  # noqa: E402


def build_model(checkpoint):
    if checkpoint:
        return minicnn.load_model(checkpoint), f"checkpoint {checkpoint}"
    from minicnn.models import get_model

    np.random.seed(0)
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])),
                                       ("net", get_model("simple_cnn", num_classes=10))]))
    model.eval()
    return model, "simple_cnn, untrained weights"


def load_images(data, n):
    try:
        from minicnn.train.datasets import load_datasets

        _, test, desc = load_datasets(data, progress=False, splits=("test",))
        images, labels = test.get_batch(np.arange(min(n, len(test))))
        return images.astype(np.float32) / 255, labels, f"{len(images)} CIFAR-10 test images from {desc}"
    except Exception as e:  # no data: noise of the same shape
        rng = np.random.default_rng(0)
        return (rng.uniform(0, 1, (n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n),
                f"{n} uniform-noise images (no CIFAR-10 found: {type(e).__name__})")


def forward_backward(model, x, y, batch_size):
    """One forward and one backward pass to the input over all images, in batches (the baseline)."""
    for i in range(0, len(x), batch_size):
        xt = Tensor(x[i:i + batch_size], requires_grad=True)
        with enable_grad():
            F.cross_entropy(model(xt), y[i:i + batch_size], reduction="sum").backward()


def in_batches(fn, x, y, batch_size):
    return np.concatenate([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def timed(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (median printed)")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: untrained simple_cnn)")
    ap.add_argument("--data", default=None, help="CIFAR-10 location (as minicnn train --data)")
    ap.add_argument("--eps", type=float, default=8 / 255)
    args = ap.parse_args(argv)
    try:
        from minicnn.speed import apply_process_settings
        apply_process_settings()
    except ImportError:
        pass

    model, what = build_model(args.checkpoint)
    x, y, desc = load_images(args.data, args.n)
    bs = args.batch_size
    print(f"model: {what}; data: {desc}; batch {bs}; eps {args.eps:.4f}; median of {args.repeats} run(s)")
    forward_backward(model, x[:bs], y[:bs], bs)                 # warm-up (allocator, thread pool)

    model.requires_grad_(False)      # as the attacks do: gradients to the input only
    base, _ = timed(lambda: forward_backward(model, x, y, bs), args.repeats)
    model.requires_grad_(True)
    t_fgsm, adv_f = timed(lambda: in_batches(lambda a, b: attacks.fgsm(model, a, b, args.eps), x, y, bs),
                          args.repeats)
    t_pgd, adv_p = timed(lambda: in_batches(lambda a, b: attacks.pgd(model, a, b, args.eps, steps=10), x, y, bs),
                         args.repeats)

    def acc(images):
        with minicnn.no_grad():
            preds = np.concatenate([model(Tensor(images[i:i + bs])).numpy().argmax(1)
                                    for i in range(0, len(images), bs)])
        return float((preds == y).mean())

    print(f"{'case':>10} {'seconds':>9} {'x fwd+bwd':>10} {'accuracy':>9}")
    print(f"{'fwd+bwd':>10} {base:9.3f} {1.0:10.2f} {100 * acc(x):8.1f}%")
    print(f"{'FGSM':>10} {t_fgsm:9.3f} {t_fgsm / base:10.2f} {100 * acc(adv_f):8.1f}%")
    print(f"{'PGD-10':>10} {t_pgd:9.3f} {t_pgd / base:10.2f} {100 * acc(adv_p):8.1f}%")


if __name__ == "__main__":
    main()
