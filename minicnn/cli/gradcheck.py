"""``minicnn gradcheck``: every built-in layer's backward, or the user's own, against central differences."""
from .common import CLIError


def add_parser(sub):
    g = sub.add_parser("gradcheck", help="check backward passes against central differences (float64)",
                       description="With no --layer, checks every built-in op and layer. With --layer "
                                   "module:Name, checks your Function subclass (called as Name.apply) "
                                   "or Module subclass (constructed with --args) on random float64 inputs.")
    g.add_argument("--layer", default=None, help="import path of your op, e.g. homework.py:MyConv or pkg.mod:MyConv")
    g.add_argument("--shapes", default="2x3x6x6", help="comma-separated input shapes, e.g. 2x3x6x6,4x3x3x3")
    g.add_argument("--args", default="", help="constructor arguments for a Module, as Python literals, e.g. '3, 4, 3'")
    g.add_argument("--eps", type=float, default=1e-6)
    g.add_argument("--atol", type=float, default=1e-6)
    g.add_argument("--rtol", type=float, default=1e-4)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_gradcheck)


def _parse_shapes(text):
    try:
        return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--shapes {text!r}: write shapes like 2x3x6x6,4x3x3x3") from None


def _import_object(spec):
    import importlib
    import importlib.util
    import os

    if ":" not in spec:
        raise CLIError(f"--layer {spec!r}: write module:Name, e.g. homework.py:MyConv or mypkg.layers:MyConv")
    mod_name, attr = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py") or os.path.sep in mod_name:
            if not os.path.isfile(mod_name):
                raise CLIError(f"--layer: no file {mod_name}")
            spec_ = importlib.util.spec_from_file_location("_minicnn_user_layer", mod_name)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except CLIError:
        raise
    except Exception as e:   # ImportError, or a SyntaxError/NameError in the user's file
        raise CLIError(f"--layer: cannot import {mod_name}: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise CLIError(f"--layer: {mod_name} has no {attr}")
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
    layer = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(36, 5)).double()
    checks.append(("Conv2d-BatchNorm2d-ReLU-MaxPool2d-Linear (input)", layer, [x]))
    return checks


def cmd_gradcheck(args):
    import numpy as np

    from ..autograd import Function
    from ..gradcheck import gradcheck
    from ..nn import Module

    rng = np.random.default_rng(args.seed)
    if args.layer is None:
        checks = builtin_checks(rng)
    else:
        obj = _import_object(args.layer)
        shapes = _parse_shapes(args.shapes)
        inputs = [rng.standard_normal(s) for s in shapes]
        if isinstance(obj, type) and issubclass(obj, Function):
            checks = [(obj.__name__, obj.apply, inputs)]
        elif isinstance(obj, type) and issubclass(obj, Module):
            import ast
            try:
                ctor = ast.literal_eval(f"({args.args},)") if args.args.strip() else ()
            except (ValueError, SyntaxError):
                raise CLIError(f"--args {args.args!r}: give Python literals, e.g. '3, 4, 3'") from None
            try:
                module = obj(*ctor).double()
            except Exception as e:
                raise CLIError(f"--layer {args.layer} --args {args.args!r}: constructing it failed: "
                               f"{type(e).__name__}: {e}") from None
            checks = [(f"{obj.__name__} (input)", module, inputs)]
            for name, p in module.named_parameters():
                checks.append((f"{obj.__name__}.{name}", _param_probe(module, p, len(inputs)), inputs + [p.numpy()]))
        elif callable(obj):
            checks = [(getattr(obj, "__name__", args.layer), obj, inputs)]
        else:
            raise CLIError(f"--layer {args.layer}: not a Function, Module or callable")
    failed = 0
    for name, fn, inputs in checks:
        try:
            report = gradcheck(fn, inputs, eps=args.eps, atol=args.atol, rtol=args.rtol, name=name)
        except Exception as e:  # a crash in the user's layer is a result too
            print(f"gradcheck {name}: ERROR {type(e).__name__}: {e}")
            failed += 1
            continue
        print(report)
        failed += not report.passed
    print(f"\n{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _param_probe(module, param, n_inputs):
    """fn(*inputs, value) = module(*inputs) with ``param`` replaced by the tensor ``value``.

    gradcheck then perturbs ``value`` and reads ``value.grad``: the gradient
    of the module's output with respect to that parameter.
    """
    def fn(*xs):
        inputs, value = xs[:n_inputs], xs[n_inputs]
        for owner in module.modules():
            for name, p in list(owner._parameters.items()):
                if p is param:
                    owner._parameters[name] = value
                    try:
                        return module(*inputs)
                    finally:
                        owner._parameters[name] = param
        raise CLIError("internal: parameter not found in its module")
    return fn
