"""What each part of the fast recipe buys: ``minicnn train`` with one part switched off at a time.

    python bench/bench_recipe.py --epochs 3                 # the ablation table of docs/13-fast-recipe.md
    python bench/bench_recipe.py --epochs 3 --only full,no-ema
    python bench/bench_recipe.py --epochs 3 --only full --reencode   # the JPEG estimate (see below)

Every variant is one ``minicnn train`` process (the fast recipe, all 50,000
training images, the full test set), run one after the other on a quiet
machine; each prints its test accuracy and wall time. Test-time
augmentation needs no training: the full recipe's checkpoint is evaluated
again with ``minicnn eval --tta none|flip|flip-translate``.

``--reencode`` writes a copy of the training images JPEG-encoded once more
(``--quality``, 75 by default as the shared copy; the test images are left
as they are) and trains on it. Re-encoding at the copy's own quality
barely changes a pixel (JPEG at a fixed quality is nearly idempotent); a
lower quality shows how sensitive the recipe is to JPEG's losses.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VARIANTS = {
    "full": [],
    "no-whiten": ["--no-whiten"],
    "no-label-smoothing": ["--label-smoothing", "0"],
    "random-flip": ["--flip", "random"],
    "no-translate": ["--translate", "0"],
    "no-ema": ["--ema", "0"],
    "bias-lr-x1": ["--bias-lr-scale", "1"],
}


def run(cmd, log):
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    with open(log, "w") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}; see {log}")
    acc = next(float(line.split()[2].rstrip("%")) for line in out.stdout.splitlines()
               if line.startswith("test accuracy:"))
    return acc, seconds


def reencode(src, dst, quality=75):
    """Copy ``src/train`` JPEG-encoded once more into ``dst/train``; link ``dst/test`` to ``src/test``."""
    from PIL import Image

    if os.path.isdir(os.path.join(dst, "train")):
        return
    for cls in sorted(os.listdir(os.path.join(src, "train"))):
        os.makedirs(os.path.join(dst, "train", cls), exist_ok=True)
        for name in os.listdir(os.path.join(src, "train", cls)):
            with Image.open(os.path.join(src, "train", cls, name)) as im:
                im.convert("RGB").save(os.path.join(dst, "train", cls, name), quality=quality)
    os.symlink(os.path.abspath(os.path.join(src, "test")), os.path.join(dst, "test"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants: " + ", ".join(VARIANTS))
    ap.add_argument("--reencode", action="store_true", help="train on the training images JPEG-encoded again")
    ap.add_argument("--quality", type=int, default=75, help="JPEG quality of --reencode (the shared copy: 75)")
    ap.add_argument("--out", default="runs/bench_recipe")
    args = ap.parse_args()
    data = args.data
    if args.reencode:
        data = os.path.join(args.out, f"reencoded-q{args.quality}")
        reencode(args.data, data, args.quality)
    rows = []
    for name in args.only.split(","):
        out = os.path.join(args.out, f"{name}{f'-reencoded-q{args.quality}' if args.reencode else ''}-e{args.epochs}")
        cmd = [sys.executable, "-m", "minicnn", "train", "--data", data, "--epochs", str(args.epochs),
               "--out", out, "--no-progress"] + VARIANTS[name]
        if os.path.exists(os.path.join(out, "test.json")):
            with open(os.path.join(out, "test.json")) as f:
                acc, seconds = 100 * json.load(f)["test_accuracy"], float("nan")
        else:
            acc, seconds = run(cmd, out + ".log")
        rows.append((name, acc, seconds))
        print(f"{name:22s} test {acc:6.2f}%  {seconds:6.0f} s   ({' '.join(VARIANTS[name]) or 'the recipe'})",
              flush=True)
        if name == "full" and not args.reencode:
            for tta in ("none", "flip", "flip-translate"):
                acc_tta, sec = run([sys.executable, "-m", "minicnn", "eval", "--checkpoint",
                                    os.path.join(out, "last.npz"), "--data", args.data, "--tta", tta,
                                    "--no-progress"], out + f"-eval-{tta}.log")
                print(f"  eval --tta {tta:15s} test {acc_tta:6.2f}%  {sec:5.0f} s", flush=True)


if __name__ == "__main__":
    main()
