"""``minicnn attack``: break a trained CNN and measure how robust it is (``minicnn.attacks``)."""
import argparse
import json
import os
import re

from .common import CLIError, HelpFormatter, integer, number, output_folder, positive_int, prepare_run

METHODS = ("fgsm", "pgd", "deepfool", "one-pixel", "universal", "fooling", "minimal")

DESCRIPTION = """\
Attack a trained model (a checkpoint of `minicnn train`) on test images and
print the robust evaluation: clean accuracy, accuracy under attack for each
--eps, the attack's success rate and the size of the perturbations it used
(L-inf, L2, L0 recomputed from the adversarial images). Figures go to --out:

  examples.png         original | perturbation (scaled, scale printed) | adversarial,
                       with the predicted class and confidence under each
  robust_accuracy.png  accuracy against eps (fgsm, pgd)
  universal.png        the universal perturbation and its effect (universal)
  fooling.png          one fooling image per class with its confidence (fooling)
  report.json          the numbers, and which test images were used (index and class)

The images are a seeded random choice spread over the classes (or exactly
the --index ones); examples.png shows the attack's successes first, one
class after another.

Methods: fgsm (one signed-gradient step: a weak attack), pgd (--steps steps
from a random start, L-inf or --norm 2: the standard; report robust accuracy
from it, never from FGSM alone), deepfool (minimal L2), minimal (Szegedy's
L-BFGS, towards the runner-up class, 5 L-BFGS-B runs of 50 iterations
per batch: slow, use a small --n), one-pixel (differential
evolution over --pixels pixels; succeeds on a minority of images),
universal (one perturbation for all images; its fooling rate is measured on
held-out images), fooling (noise classified at 99%). --eps is in pixel units
of [0, 1] images; fractions like 8/255 are accepted (an L-inf eps above 1
is refused: write 8/255, not 8)."""

EXAMPLES = """\
examples:
  minicnn attack --checkpoint runs/simple_cnn/best.npz --method pgd --eps 2/255 4/255 8/255 --n 500
  minicnn attack --checkpoint runs/simple_cnn/best.npz --method one-pixel --n 20 --out attacks/one_pixel"""


def _eps(text):
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (like 8/255), got {text}: a budget is a size")
    return value


_eps.__name__ = "eps"


def add_parser(sub):
    p = sub.add_parser("attack", help="adversarial attacks and robust accuracy of a checkpoint",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .npz written by minicnn train")
    p.add_argument("--method", choices=METHODS, default="pgd", help="the attack")
    p.add_argument("--eps", type=_eps, nargs="+", default=[8 / 255], metavar="EPS",
                   help="budget(s) in pixel units, e.g. 8/255 or 2/255 4/255 8/255 (default: 8/255)")
    # argparse reads "-8/255" as an option (only "-8" and "-0.5" count as negative numbers before Python
    # 3.13), so "--eps -8/255" would fail with "expected at least one argument": let fractions count as
    # numbers too, so that _eps refuses the negative budget with its own message.
    p._negative_number_matcher = re.compile(r"^-(\d+|\d*\.\d+)(/\d+)?$")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--n", type=positive_int, default=500,
                       help="test images to attack: a seeded random choice, spread over the classes")
    which.add_argument("--index", nargs="+", type=integer, metavar="I",
                       help="attack exactly these test images (by index in the test set)")
    p.add_argument("--data", default=None, help="the test set (default: the places minicnn train looks in)")
    p.add_argument("--out", default="attacks", help="folder for the figures and report.json")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of images and the random attacks")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="PGD steps (default 10); fooling: most gradient-ascent steps (default 300)")
    p.add_argument("--max-passes", type=positive_int, default=10, help="universal: most passes over the images")
    p.add_argument("--norm", choices=["inf", "2"], default="inf", help="PGD's and universal's norm")
    p.add_argument("--pixels", type=positive_int, default=1, help="one-pixel: pixel positions changed")
    p.add_argument("--population", type=positive_int, default=400, help="one-pixel: DE population")
    p.add_argument("--generations", type=positive_int, default=100, help="one-pixel: most DE generations")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per attack call")
    p.add_argument("--examples", type=int, default=4, help="images shown in examples.png")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.set_defaults(func=run)


def across_classes(indices, labels):
    """``indices`` reordered so that the classes take turns: the first of each class, then the second...

    Within a class the given order is kept; the classes come in the order of
    their first appearance. The first ten of a CIFAR-10 choice are then ten
    different classes, whatever the order of the test set (an image folder
    is sorted by class).
    """
    import numpy as np

    indices, labels = np.asarray(indices), np.asarray(labels)
    rank = np.zeros(len(indices), dtype=np.int64)       # the position of each image within its class
    for k in np.unique(labels):
        where = np.flatnonzero(labels == k)
        rank[where] = np.arange(len(where))
    first = {k: i for i, k in reversed(list(enumerate(labels.tolist())))}
    order = sorted(range(len(indices)), key=lambda i: (rank[i], first[labels[i]]))
    return indices[order]


def _load(args):
    import numpy as np

    from ..checkpoint import load_model
    from ..errors import CheckpointError, TrainingError
    from ..train.datasets import load_datasets

    try:
        model = load_model(args.checkpoint, device=args.device)
    except CheckpointError as e:
        raise CLIError(str(e)) from None
    if args.method == "fooling":
        return model, None, None, None
    try:
        _, test, desc = load_datasets(args.data, progress=False, splits=("test",))
    except TrainingError as e:
        raise CLIError(f"the test set is needed: {e}") from None
    if list(test.classes) != list(model.classes):
        raise CLIError(f"{args.checkpoint} was trained on classes {model.classes}, but {desc} has {list(test.classes)}")
    if args.index:
        bad = [i for i in args.index if not 0 <= i < len(test)]
        if bad:
            raise CLIError(f"--index {bad[0]}: the test set has {len(test)} images (0 to {len(test) - 1})")
        pick = np.asarray(args.index, dtype=np.int64)
    else:
        shuffled = np.random.default_rng(args.seed).permutation(len(test))
        pick = across_classes(shuffled, np.asarray(test.labels)[shuffled])[:args.n]
    images, labels = test.get_batch(pick)
    x = images.astype(np.float32) / 255
    if args.device == "gpu":
        from ..backend import to_device
        x = to_device(x, "gpu")
    print(f"{args.checkpoint}: {len(x)} test images from {desc}")
    return model, x, np.asarray(labels), pick


def _attack_fn(args):
    import functools

    from .. import attacks

    norm = "inf" if args.norm == "inf" else 2
    return {
        "fgsm": (attacks.fgsm, True),
        "pgd": (functools.partial(attacks.pgd, steps=args.steps or 10, norm=norm, seed=args.seed), True),
        "deepfool": ("deepfool", False),
        "one-pixel": (lambda m, x, y: attacks.one_pixel(m, x, y, pixels=args.pixels, population=args.population,
                                                        generations=args.generations, seed=args.seed), False),
        "minimal": ("minimal", False),          # towards each image's runner-up class
    }[args.method]


def _check_eps(args):
    """An L-inf budget above 1 cannot be meant for [0, 1] pixels: refuse it before any work, suggesting k/255."""
    linf = args.method in ("fgsm", "universal", "pgd") and (args.method == "fgsm" or args.norm == "inf")
    for e in args.eps:
        if linf and e > 1:
            raise CLIError(f"--eps {e:g}: pixels are in [0, 1], so an L-inf budget of {e:g} allows any image; "
                           f"eps is in pixel units: did you mean --eps {e:g}/255 (= {e / 255:.4f})?")


def _shown(args, y, succeeded, k):
    """Indices (into y) of the k images a figure shows: the successes first, the classes taking turns."""
    import numpy as np

    if args.index:                                    # the user's own images, in the user's order
        return np.arange(min(k, len(y)))
    order = np.concatenate([across_classes(np.flatnonzero(group), y[group]) for group in (succeeded, ~succeeded)])
    return order[:k]


def _used(classes, pick, y, rows=None):
    """report.json's record of the test images: index in the test set and class (and more per row)."""
    return [dict({"index": int(i), "class": classes[int(c)]}, **(rows[j] if rows else {}))
            for j, (i, c) in enumerate(zip(pick, y))]


def run(args):
    import numpy as np

    from .. import attacks
    from ..attacks import plot
    from ..attacks._common import eps_text
    from ..backend import get_array_module

    prepare_run(args)              # process settings (allocator, BLAS threads) and the --device check
    output_folder(args.out)
    _check_eps(args)
    model, x, y, pick = _load(args)
    classes = model.classes
    out = {"checkpoint": args.checkpoint, "method": args.method}
    if x is not None:
        out["images"] = _used(classes, pick, y)
    if args.method == "fooling":
        targets = list(range(len(classes)))
        images, probs = attacks.fooling_image(model, targets, steps=args.steps or 300, seed=args.seed,
                                              device=args.device)
        print("fooling images (gradient ascent from noise, target 99%):")
        for k, p in zip(targets, probs):
            print(f"  {classes[k]:>12}: {100 * p:6.2f}%")
        plot.fooling_images(images, probs, targets, classes, path=os.path.join(args.out, "fooling.png"))
        out["fooling"] = {classes[k]: float(p) for k, p in zip(targets, probs)}
    elif args.method == "universal":
        if len(x) < 4:
            raise CLIError(f"--n {args.n}: universal needs at least 4 images (half to fit, half held out)")
        half = len(x) // 2
        norm = "inf" if args.norm == "inf" else 2
        eps = max(args.eps)
        res = attacks.universal_perturbation(model, x[:half], eps, norm=norm, held_out=x[half:], seed=args.seed,
                                             max_passes=args.max_passes, batch_size=args.batch_size)
        v = res.perturbation

        def add_v(m, xb, yb, eps):
            return get_array_module(xb).clip(xb + v, 0, 1)

        rep = attacks.evaluate(model, add_v, x[half:], y[half:], epsilons=[eps], batch_size=args.batch_size)
        rep.attack = f"universal perturbation (L-{args.norm}, eps {eps_text(eps)})"
        rep.images = "held-out images"
        print(rep)
        print(f"fooling rate: {100 * res.fooling_rate:.1f}% on the {half} images it was computed on, "
              f"{100 * res.held_out_fooling_rate:.1f}% on {len(x) - half} held-out images "
              f"({res.passes} pass(es))")
        shown = _shown(args, y[half:], rep.succeeded[eps], 4)
        plot.universal(res, model, x[half:][shown], path=os.path.join(args.out, "universal.png"))
        out.update(report=rep.to_dict(), universal=res.to_dict())
        out["images"] = _used(classes, pick, y, [{"role": "fit"}] * half + [{"role": "held out"}] * (len(x) - half))
        out["examples"] = _used(classes, pick[half:][shown], y[half:][shown])
    else:
        fn, uses_eps = _attack_fn(args)
        rep = attacks.evaluate(model, fn, x, y, epsilons=args.eps if uses_eps else None,
                               batch_size=args.batch_size, keep_images=True)
        rep.attack = args.method + (f" ({args.steps or 10} steps, L-{args.norm})" if args.method == "pgd" else "")
        print(rep)
        eps_show = max(args.eps) if uses_eps else None
        k = max(0, min(args.examples, len(x)))
        if k:
            adv = rep.adversarial[eps_show]
            x_np = np.asarray(x.get() if hasattr(x, "get") else x)
            shown = _shown(args, y, rep.succeeded[eps_show], k)
            wins = int(rep.succeeded[eps_show].sum())
            title = (f"{rep.attack}" + (f", eps {eps_text(eps_show)}" if eps_show is not None else "")
                     + f": {wins} of {len(x)} images turned from right to wrong"
                     + ("" if args.index or not wins else ", shown first"))
            plot.examples(model, x_np[shown], adv[shown], labels=y[shown], path=os.path.join(args.out, "examples.png"),
                          title=title)
            out["examples"] = _used(classes, pick[shown], y[shown],
                                    [{"fooled": bool(rep.succeeded[eps_show][i])} for i in shown])
        if uses_eps:
            plot.robust_accuracy(rep, path=os.path.join(args.out, "robust_accuracy.png"))
        out["report"] = rep.to_dict()
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(f"figures and report.json in {args.out}")
    return 0
