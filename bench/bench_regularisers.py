"""Regularisers and an ensemble on CIFAR-10: the table of docs/11-regularisation.md.

    python bench/bench_regularisers.py --data ../shared/data/cifar10-jpeg --out runs/reg            # CPU: an hour or more
    python bench/bench_regularisers.py --data ../shared/data/cifar10-jpeg --out runs/reg --device gpu
    python bench/bench_regularisers.py --data tiny_tree --out /tmp/reg --subset 200 --epochs 1 --val-split 20   # dry run

Trains simple_cnn with the default recipe (one-cycle, 15 epochs unless
``--epochs``, augmentation on) once per setting below, each in its own
folder under ``--out`` (an existing run there is resumed or reused, so an
interrupted bench continues), then evaluates the ensemble of the default
recipe's three seeds (``minicnn eval`` with three checkpoints). Prints one
markdown row per run: its options and test accuracy, then the ensemble's and
its best member's.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

RUNS = [   # (name, options of minicnn train)
    ("none", dict(weight_decay=0.0)),
    ("wd5e-4", dict()),                                    # the default recipe
    ("l2", dict(weight_decay=0.0, l2=2.5e-4)),
    ("l1", dict(weight_decay=0.0, l1=1e-5)),
    ("l1l2", dict(weight_decay=0.0, l1=1e-5, l2=2.5e-4)),
    ("maxnorm3", dict(max_norm=3.0)),
    ("wd5e-4-s1", dict(seed=1)),
    ("wd5e-4-s2", dict(seed=2)),
]
ENSEMBLE = ("wd5e-4", "wd5e-4-s1", "wd5e-4-s2")


def options_text(opts):
    return " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in opts.items()) or "(defaults)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--subset", type=int, default=None, help="train on N images (dry runs)")
    parser.add_argument("--val-split", type=int, default=5000)
    args = parser.parse_args(argv)

    from minicnn.speed import apply_process_settings
    from minicnn.train import TrainConfig, Trainer, evaluate_checkpoints

    apply_process_settings()
    rows = []
    for name, opts in RUNS:
        out = os.path.join(args.out, name)
        result = os.path.join(out, "test.json")
        if not os.path.isfile(result):
            cfg = TrainConfig(model="simple_cnn", data=args.data, epochs=args.epochs, subset=args.subset,
                              val_split=args.val_split, device=args.device, out=out, progress=False,
                              resume=os.path.isfile(os.path.join(out, "last.npz")), **opts)
            Trainer(cfg, log=lambda line: print(f"[{name}] {line}", flush=True)).run()
        with open(result) as f:
            acc = json.load(f)["test_accuracy"]
        rows.append((name, options_text(opts), acc))
    ens = evaluate_checkpoints([os.path.join(args.out, n, "best.npz") for n in ENSEMBLE], data=args.data,
                               device=args.device, log=lambda *_: None, progress=False)
    print("\n| run | options | test accuracy |\n|---|---|---|")
    for name, opts, acc in rows:
        print(f"| {name} | `{opts}` | {100 * acc:.2f}% |")
    print(f"| ensemble of 3 | seeds 0, 1, 2 of the default (best.npz) | {100 * ens.accuracy:.2f}% "
          f"(members {', '.join(f'{100 * a:.2f}%' for a in ens.member_accuracies)}) |")


if __name__ == "__main__":
    main()
