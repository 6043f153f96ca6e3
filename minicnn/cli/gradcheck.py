"""``minicnn gradcheck``: every built-in layer's backward, or the user's own, against central differences.

The checking itself is ``minicnn.gradcheck`` (the same code the Python API
runs): for a Module it checks the inputs and every parameter, by name.
"""
import argparse
import re

from .common import CLIError

EXAMPLES = """\
examples:
  minicnn gradcheck                                   # every built-in op and layer
  minicnn gradcheck --layer homework.py:MySigmoid --shapes 2x3
  minicnn gradcheck --layer homework:MyConv --args '3, 4, 3' --shapes 2x3x8x8 --sample 50

--layer takes module:Name, where module is a file (homework.py, path/to/hw.py) or
an importable module name (homework, mypkg.layers; the current directory is
searched first). Name is a Function subclass (called as Name.apply), a Module
subclass (built with --args; then its parameters are checked too, by name), a
Module instance, or a plain function of Tensors. Exit status: 0 when every check
passes, 1 when any fails, 2 on a usage error.
"""


def _number(text, positive, what):
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v == v and abs(v) != float("inf") and (v > 0 if positive else v >= 0)):
        raise argparse.ArgumentTypeError(f"must be {'a positive number' if positive else 'a number >= 0'} "
                                         f"({what}), got {text!r}")
    return v


def step(text):
    """argparse type of --eps: a finite number > 0."""
    return _number(text, True, "the finite-difference step, e.g. 1e-6")


def tolerance(text):
    """argparse type of --atol/--rtol: a finite number >= 0."""
    return _number(text, False, "a tolerance, e.g. 1e-6")


def count(text):
    """argparse type of --sample: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of elements, got {text!r}")
    return v


def add_parser(sub):
    g = sub.add_parser("gradcheck", help="check backward passes against central differences (float64)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
                       description="With no --layer, checks every built-in op and layer. With --layer "
                                   "module:Name, checks your Function, Module or function on random "
                                   "float64 inputs of the given shapes (a Module's parameters too).")
    g.add_argument("--layer", default=None, metavar="MODULE:NAME",
                   help="your op, e.g. homework.py:MySigmoid or homework:MySigmoid (default: every built-in layer)")
    g.add_argument("--shapes", default="2x3x6x6",
                   help="comma-separated input shapes, e.g. 2x3x6x6,4x3x3x3 (default: %(default)s)")
    g.add_argument("--args", default="",
                   help="constructor arguments of a Module, as Python literals, e.g. '3, 4, 3' (default: none)")
    g.add_argument("--eps", type=step, default=1e-6, help="finite-difference step, > 0 (default: %(default)g)")
    g.add_argument("--atol", type=tolerance, default=1e-6,
                   help="absolute tolerance: an element passes when |analytic - numeric| <= atol + rtol*|numeric| "
                        "(default: %(default)g)")
    g.add_argument("--rtol", type=tolerance, default=1e-4, help="relative tolerance, see --atol (default: %(default)g)")
    g.add_argument("--sample", type=count, default=None, metavar="K",
                   help="check only K random elements per input and parameter (seeded by --seed; default: all of them)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the inputs, the upstream gradient and the sample (default: %(default)s)")
    # `--eps -1e-3` is a (negative) value, not an option: let it reach the check above.
    if hasattr(g, "_negative_number_matcher"):
        g._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    g.set_defaults(func=cmd_gradcheck)


def _parse_shapes(text):
    try:
        shapes = [tuple(int(v) for v in s.strip().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        shapes = None
    if not shapes or any(d < 1 for s in shapes for d in s):
        raise CLIError(f"--shapes {text!r}: write positive sizes like 2x3x6x6,4x3x3x3")
    return shapes


def _import_object(spec):
    """The object named by ``module:Name``; ``module`` is a .py file or a module name (cwd searched first)."""
    import importlib
    import importlib.util
    import os
    import sys

    if ":" not in spec:
        raise CLIError(f"--layer {spec!r}: write module:Name, e.g. homework.py:MyConv or homework:MyConv")
    mod_name, attr = spec.rsplit(":", 1)
    if not mod_name or not attr:
        raise CLIError(f"--layer {spec!r}: write module:Name, e.g. homework.py:MyConv or homework:MyConv")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
            if not os.path.isfile(mod_name):
                raise CLIError(f"--layer {spec}: no file {mod_name} (looked from {os.getcwd()})")
            folder = os.path.dirname(os.path.abspath(mod_name))
            if folder not in sys.path:
                sys.path.insert(0, folder)        # so the file can import its neighbours
            spec_ = importlib.util.spec_from_file_location("_minicnn_user_layer", mod_name)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[spec_.name] = module
            spec_.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())   # `python -m` would; the installed script does not
            module = importlib.import_module(mod_name)
    except CLIError:
        raise
    except ModuleNotFoundError as e:
        raise CLIError(f"--layer {spec}: cannot import {mod_name}: {e} (looked in {os.getcwd()} and "
                       f"the installed packages; give a file path like path/to/{mod_name}.py)") from None
    except Exception as e:   # a SyntaxError/NameError in the user's file
        raise CLIError(f"--layer {spec}: importing {mod_name} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        raise CLIError(f"--layer {spec}: {mod_name} has no {attr} (it has: {', '.join(names[:12]) or 'nothing'})")
    return getattr(module, attr)


def builtin_checks(rng):
    """(name, fn, inputs) for every built-in op and layer, on small float64 inputs."""
    import numpy as np

    from .. import functional as F
    from .. import nn

    def apart(*shape):  # distinct values, no ties or kinks within eps (max-pool, relu)
        n = int(np.prod(shape))
        return ((rng.permutation(n) - (n - 1) / 2) * 0.05 + 0.013).reshape(shape)

    x = rng.standard_normal((2, 3, 6, 6))
    checks = [
        ("conv2d stride 2 pad 1 dilation 1", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
         [x, rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]),
        ("conv2d groups 3 dilation 2", lambda x, w: F.conv2d(x, w, padding=2, dilation=2, groups=3),
         [x, rng.standard_normal((6, 1, 3, 2))]),
        ("conv_transpose2d stride 2", lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
         [rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((3, 2, 3, 3))]),
        ("max_pool2d 2x2", lambda x: F.max_pool2d(x, 2), [apart(2, 3, 6, 6)]),
        ("max_pool2d 3x3 stride 2 pad 1", lambda x: F.max_pool2d(x, 3, 2, 1), [apart(2, 3, 7, 7)]),
        ("avg_pool2d 3x3 stride 2 pad 1", lambda x: F.avg_pool2d(x, 3, 2, 1), [x]),
        ("adaptive_avg_pool2d 1", lambda x: F.adaptive_avg_pool2d(x, 1), [x]),
        ("batch_norm train", lambda x, g, b: F.batch_norm(x, None, None, g, b, True), [x, rng.random(3) + 0.5, rng.standard_normal(3)]),
        ("batch_norm eval", lambda x, g, b: F.batch_norm(x, np.zeros(3), np.ones(3) * 2, g, b, False),
         [x, rng.random(3) + 0.5, rng.standard_normal(3)]),
        ("linear", F.linear, [rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)]),
        ("relu", F.relu, [apart(3, 4)]),
        ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), [apart(3, 4)]),
        ("sigmoid", F.sigmoid, [rng.standard_normal((3, 4))]),
        ("tanh", F.tanh, [rng.standard_normal((3, 4))]),
        ("log_softmax", lambda x: F.log_softmax(x, 1), [rng.standard_normal((3, 4))]),
        ("cross_entropy", lambda x: F.cross_entropy(x, np.array([0, 2, 3]), label_smoothing=0.1),
         [rng.standard_normal((3, 4))]),
        ("mse_loss", F.mse_loss, [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]),
    ]
    # A whole small network (train mode): its input and every parameter, by name. No conv bias: the
    # batchnorm after it cancels it (its gradient is exactly 0, which no check can tell from a wrong one).
    layer = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(36, 5))
    checks.append(("Conv2d-BatchNorm2d-ReLU-MaxPool2d-Linear", layer, [x]))
    return checks


def _user_checks(args, rng):
    import ast

    from ..autograd import Function
    from ..nn import Module

    obj = _import_object(args.layer)
    inputs = [rng.standard_normal(s) for s in _parse_shapes(args.shapes)]
    if isinstance(obj, type) and issubclass(obj, Function):
        return [(obj.__name__, obj.apply, inputs)]
    if isinstance(obj, type) and issubclass(obj, Module):
        try:
            ctor = ast.literal_eval(f"({args.args},)") if args.args.strip() else ()
        except (ValueError, SyntaxError):
            raise CLIError(f"--args {args.args!r}: give Python literals, e.g. '3, 4, 3'") from None
        try:
            module = obj(*ctor)
        except Exception as e:
            raise CLIError(f"--layer {args.layer} --args {args.args!r}: constructing {obj.__name__}"
                           f"({args.args}) failed: {type(e).__name__}: {e}") from None
        return [(obj.__name__, module, inputs)]
    if isinstance(obj, Module):
        return [(type(obj).__name__, obj, inputs)]
    if callable(obj):
        return [(getattr(obj, "__name__", args.layer), obj, inputs)]
    raise CLIError(f"--layer {args.layer}: a {type(obj).__name__}, not a Function, Module or function")


def cmd_gradcheck(args):
    import numpy as np

    from ..gradcheck import gradcheck

    rng = np.random.default_rng(args.seed)
    checks = builtin_checks(rng) if args.layer is None else _user_checks(args, rng)
    rows = []          # (status, what) per checked tensor, for the summary
    for name, fn, inputs in checks:
        try:
            report = gradcheck(fn, inputs, eps=args.eps, atol=args.atol, rtol=args.rtol, seed=args.seed,
                               sample=args.sample, name=name)
        except Exception as e:  # a crash in the user's layer is a result too
            hint = " (do --shapes fit the layer?)" if args.layer is not None else ""
            print(f"gradcheck {name}: ERROR {type(e).__name__}: {e}{hint}")
            rows.append(("ERROR", name))
            continue
        print(report)
        for c in report.checks:
            what = f"{name}.{c.name}" if c.kind == "parameter" else f"{name} {c.name}"
            rows.append(("ok" if c.passed else "FAIL", what))
        if not report.passed and all(c.passed for c in report.checks):   # e.g. the upstream gradient written
            rows.append(("FAIL", f"{name}: {report.errors[0].split(':')[0]}"))
    failed = sum(status != "ok" for status, _ in rows)
    print("\nsummary (each input and parameter checked):")
    for status, what in rows:
        print(f"  {status:5s} {what}")
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0
