"""``minicnn synthesize METHOD``: images from a trained CNN's gradients (class models, inversion, DeepDream, style).

One verb, four methods, as ``minicnn explain METHOD`` and ``minicnn attack
METHOD``. Each writes PNGs into ``--out``: the result (enlarged), the
figure, and the objective curve; a progress bar shows the objective.
"""
import os

from .common import CLIError, HelpFormatter, check_device, output_folder, integer, number, positive_int, positive_number

DESCRIPTION = """\
Synthesise images by gradient descent on pixels through a trained network
(a checkpoint written by minicnn train):

  class-model   the image each class scores highest for (Simonyan et al. 2014,
                with Yosinski et al.'s blur / jitter / L2 / clipping)
  invert        reconstruct an image from its features at each layer
                (Mahendran & Vedaldi 2015, total-variation prior)
  dream         DeepDream: boost what a layer sees, over octaves
  style         Gatys et al.'s style transfer: CONTENT in the style of STYLE
  layers        list the layer names (and output shapes) to pass to the others

Layers are named as model.named_modules() names them (net.2, net.9, ...;
'' or 'logits' for the output). Defaults pick the network's ReLU layers."""

EXAMPLES = """\
examples:
  minicnn synthesize class-model --checkpoint runs/vgg_small/best.npz --out runs/synth
  minicnn synthesize invert --checkpoint runs/vgg_small/best.npz --image ../shared/data/images/chelsea.png
  minicnn synthesize dream --checkpoint runs/vgg_small/best.npz --image ../shared/data/images/chelsea.png --size 128
  minicnn synthesize style --checkpoint runs/vgg_small/best.npz \\
      --content ../shared/data/images/chelsea.png --style ../shared/data/images/ihc.png --size 128 --steps 100"""


def _common(p, steps, lr):
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by minicnn train (.npz)")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimisation steps")
    p.add_argument("--lr", type=positive_number, default=lr, help="step size (pixels are in [0, 1])")
    p.add_argument("--seed", type=integer, default=0, help="seed of the starting noise and the jitter")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to run")
    p.add_argument("--out", default="synthesize", help="output folder for the PNGs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_parser(sub):
    s = sub.add_parser("synthesize", help="images from a CNN's gradients: class models, inversion, DeepDream, style",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    methods = s.add_subparsers(dest="method", metavar="METHOD", required=True)

    p = methods.add_parser("class-model", help="the image each class scores highest for",
                           formatter_class=HelpFormatter, epilog="example:\n  minicnn synthesize class-model "
                           "--checkpoint runs/vgg_small/best.npz --classes cat dog --steps 300")
    _common(p, 200, 0.05)
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="class names or indices (default: every class)")
    p.add_argument("--size", type=positive_int, nargs=2, default=(32, 32), metavar=("H", "W"), help="image size")
    p.add_argument("--l2", type=number, default=3e-3, help="weight of the L2 penalty ||x - 0.5||^2")
    p.add_argument("--blur-every", type=integer, default=4, help="blur every N steps (0: never)")
    p.add_argument("--blur-sigma", type=number, default=0.5, help="std of the Gaussian blur, in pixels")
    p.add_argument("--jitter", type=integer, default=2, help="random shift of up to N pixels per step")
    p.add_argument("--clip-small", type=number, default=0.0,
                   help="fraction of the pixels with the smallest |x - 0.5| set to grey after each blur")
    p.set_defaults(func=run_class_model)

    p = methods.add_parser("invert", help="reconstruct an image from its features at each layer",
                           formatter_class=HelpFormatter, epilog="example:\n  minicnn synthesize invert "
                           "--checkpoint runs/vgg_small/best.npz --image cat.png --layers net.2 net.9 logits")
    _common(p, 200, 0.05)
    p.add_argument("--image", required=True, help="the image to reconstruct (any format Pillow reads)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers to invert from (default: every ReLU layer and the logits)")
    p.add_argument("--size", type=positive_int, default=32,
                   help="the image is resized to SIZE x SIZE (the network's input size for the logits)")
    p.add_argument("--tv", type=number, default=2.0,
                   help="weight of the total-variation prior (2 suits every layer of a natural image; "
                        "0 for an exact inversion of an early layer)")
    p.add_argument("--beta", type=positive_number, default=2.0, help="exponent of the total variation")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam", help="adam or lbfgs (L-BFGS-B)")
    p.set_defaults(func=run_invert)

    p = methods.add_parser("dream", help="DeepDream: boost what a layer sees", formatter_class=HelpFormatter,
                           epilog="example:\n  minicnn synthesize dream --checkpoint runs/vgg_small/best.npz "
                           "--image cat.png --layer net.12 --size 128")
    _common(p, 10, 0.005)
    p.add_argument("--image", required=True, help="the image to dream on")
    p.add_argument("--layer", default=None, help="the layer whose activations are boosted (default: a middle ReLU)")
    p.add_argument("--channel", type=integer, default=None, help="boost only this channel of the layer")
    p.add_argument("--size", type=positive_int, default=128, help="the image's longer side, in pixels")
    p.add_argument("--octaves", type=positive_int, default=3, help="number of scales")
    p.add_argument("--octave-scale", type=positive_number, default=1.4, help="size ratio between octaves")
    p.add_argument("--jitter", type=integer, default=2, help="random shift of up to N pixels per step")
    p.set_defaults(func=run_dream)

    p = methods.add_parser("style", help="style transfer (Gatys et al.)", formatter_class=HelpFormatter,
                           epilog="example:\n  minicnn synthesize style --checkpoint runs/vgg_small/best.npz "
                           "--content cat.png --style texture.png --size 128 --steps 100")
    _common(p, 100, 0.02)
    p.add_argument("--content", required=True, help="the content image")
    p.add_argument("--style", required=True, help="the style image (a texture, a painting)")
    p.add_argument("--size", type=positive_int, default=128, help="the result's longer side, in pixels")
    p.add_argument("--content-layer", default=None, help="content layer (default: a middle ReLU)")
    p.add_argument("--style-layers", nargs="+", default=None, metavar="LAYER",
                   help="style layers (default: every ReLU up to the content layer's block, at most 5)")
    p.add_argument("--content-weight", type=number, default=1.0, help="weight of the content loss")
    p.add_argument("--style-weight", type=number, default=1e3, help="weight of the style loss")
    p.add_argument("--tv-weight", type=number, default=10.0, help="weight of the total variation")
    p.add_argument("--init", choices=["content", "noise"], default="content", help="starting image")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam", help="adam or lbfgs (L-BFGS-B)")
    p.set_defaults(func=run_style)

    p = methods.add_parser("layers", help="list the model's layer names and output shapes",
                           formatter_class=HelpFormatter,
                           epilog="example:\n  minicnn synthesize layers --checkpoint runs/vgg_small/best.npz")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by minicnn train (.npz)")
    p.add_argument("--size", type=positive_int, nargs=2, default=(32, 32), metavar=("H", "W"),
                   help="input size the shapes are computed for")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to run")
    p.set_defaults(func=run_layers)
    return s


# ---------------------------------------------------------------- helpers
def _load(args):
    import minicnn

    check_device(args.device)
    if getattr(args, "out", None):
        output_folder(args.out)          # before any work: an unwritable --out is one line, not a late traceback
    try:
        return minicnn.load_model(args.checkpoint, device=args.device)
    except (ValueError, OSError) as e:
        raise CLIError(str(e)) from None


def _image(path, what, size, channels):
    from ..synthesize.images import load_image

    try:
        return load_image(path, size=size, channels=channels)
    except FileNotFoundError:
        raise CLIError(f"--{what}: {path} does not exist") from None
    except OSError as e:
        raise CLIError(f"--{what}: cannot read {path} as an image ({e})") from None


def _layer(name):
    return "" if name in ("logits", "''", '""') else name


def _run(fn, *args, **kwargs):
    """Call a synthesis method; a bad argument (layer, size) becomes a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def _outdir(args):
    return output_folder(args.out)


def _wrote(paths):
    for p in paths:
        print(f"wrote {p}")


# ---------------------------------------------------------------- methods
def run_class_model(args):
    from ..synthesize import class_model, plot
    from ..synthesize.images import save_image

    model = _load(args)
    classes = list(model.classes)
    wanted = args.classes or list(range(len(classes)))
    targets = [int(c) if isinstance(c, str) and c.isdigit() else c for c in wanted]
    out = _outdir(args)
    img, hist = _run(class_model, model, targets, size=tuple(args.size), steps=args.steps, lr=args.lr, l2=args.l2,
                     blur_every=args.blur_every, blur_sigma=args.blur_sigma, jitter=args.jitter,
                     clip_small=args.clip_small, seed=args.seed, progress=args.progress)
    info = hist.info
    paths = []
    for i, (t, name) in enumerate(zip(info["target"], info["class"])):
        print(f"{name:>12s}: logit {info['logit'][i]:9.3f} (grey image {info['grey_logit'][i]:9.3f}), "
              f"probability {info['probability'][i]:.3f}")
        paths.append(save_image(os.path.join(out, f"class_model_{t}_{name}.png"), img[i:i + 1], scale=4))
    plot.plot_class_models(img, hist, path=os.path.join(out, "class_models.png"))
    plot.plot_history(hist, title="class models: -mean logit + l2 ||x - 0.5||^2",
                      path=os.path.join(out, "class_models_objective.png"))
    _wrote(paths + [os.path.join(out, "class_models.png"), os.path.join(out, "class_models_objective.png")])
    return 0


def run_invert(args):
    from ..synthesize import invert, plot, relu_layers
    from ..synthesize.images import save_image

    model = _load(args)
    channels = int(model.normalize.mean.shape[0]) if hasattr(model, "normalize") else 3
    x = _image(args.image, "image", (args.size, args.size), channels)
    layers = [_layer(n) for n in args.layers] if args.layers else relu_layers(model) + [""]
    out = _outdir(args)
    results, paths = [], []
    for layer in layers:
        img, hist = _run(invert, model, x, layer, steps=args.steps, lr=args.lr, tv=args.tv, beta=args.beta,
                         optimizer=args.optimizer, seed=args.seed, progress=args.progress)
        name = hist.info["layer"]
        print(f"{name or 'logits':>10s}: relative feature error {hist.info['relative_error']:.3g}")
        results.append((name, img, hist))
        paths.append(save_image(os.path.join(out, f"invert_{name or 'logits'}.png"), img, scale=4))
    plot.plot_inversions(x, results, path=os.path.join(out, "inversions.png"))
    plot.plot_history(results[-1][2], title=f"inversion from {results[-1][0] or 'logits'}: objective",
                      path=os.path.join(out, "invert_objective.png"))
    _wrote(paths + [os.path.join(out, "inversions.png"), os.path.join(out, "invert_objective.png")])
    return 0


def run_dream(args):
    from ..synthesize import deep_dream, plot, relu_layers
    from ..synthesize.images import save_image

    model = _load(args)
    relus = relu_layers(model)
    layer = _layer(args.layer) if args.layer is not None else relus[len(relus) // 2]
    channels = int(model.normalize.mean.shape[0]) if hasattr(model, "normalize") else 3
    x = _image(args.image, "image", args.size, channels)
    out = _outdir(args)
    img, hist = _run(deep_dream, model, x, layer, steps=args.steps, octaves=args.octaves,
                     octave_scale=args.octave_scale, lr=args.lr, jitter=args.jitter, channel=args.channel,
                     seed=args.seed, progress=args.progress)
    what = f"{layer}" + (f" channel {args.channel}" if args.channel is not None else "")
    paths = [save_image(os.path.join(out, "dream_image.png"), img, scale=2)]
    plot.plot_images([x, img], ["input", f"DeepDream at {what}"], ncols=2, path=os.path.join(out, "dream.png"),
                     panel=3.5)
    plot.plot_history(hist, title="DeepDream: -mean activation^2 (octaves dotted)",
                      path=os.path.join(out, "dream_objective.png"))
    _wrote(paths + [os.path.join(out, "dream.png"), os.path.join(out, "dream_objective.png")])
    return 0


def run_layers(args):
    """Print every layer's name, type and output shape (a forward pass of a grey image), marking the ReLUs."""
    import numpy as np

    from ..autograd import Tensor, no_grad
    from ..backend import to_device
    from ..analysis import analysis_mode
    from ..synthesize import relu_layers

    model = _load(args)
    channels = int(model.normalize.mean.shape[0]) if hasattr(model, "normalize") else 3
    shapes, handles = {}, []
    relus = set(relu_layers(model))

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(output.shape))      # returns None: the output is kept
        return hook

    try:
        for name, m in model.named_modules():
            handles.append(m.register_forward_hook(record(name)))
        with analysis_mode(model), no_grad():
            x = to_device(np.full((1, channels) + tuple(args.size), 0.5, dtype=np.float32), args.device)
            try:
                model(Tensor(x))
            except ValueError as e:        # e.g. a linear head that needs the training size
                failed = str(e)
            else:
                failed = None
    finally:
        for h in handles:
            h.remove()
    print(f"{'layer':<24s} {'type':<14s} output shape for a {args.size[0]}x{args.size[1]} input")
    for name, m in model.named_modules():
        mark = "  <- ReLU (default feature layer)" if name in relus else ""
        print(f"{name or 'logits (the model)':<24s} {type(m).__name__:<14s} {shapes.get(name, '-')}{mark}")
    if failed:
        print(f"(layers without a shape are not reached at this size: {failed})")
    return 0


def default_style_layers(model):
    """(content layer, style layers) from the model's ReLUs: the middle one, and every one up to it (at most 5)."""
    from ..synthesize import relu_layers

    relus = relu_layers(model)
    content = relus[len(relus) // 2]
    style = relus[:relus.index(content) + 1][-5:]
    return content, style


def run_style(args):
    from ..synthesize import plot, style_transfer
    from ..synthesize.images import save_image

    model = _load(args)
    channels = int(model.normalize.mean.shape[0]) if hasattr(model, "normalize") else 3
    content = _image(args.content, "content", args.size, channels)
    style = _image(args.style, "style", None, channels)
    c_default, s_default = default_style_layers(model)
    c_layer = _layer(args.content_layer) if args.content_layer is not None else c_default
    s_layers = [_layer(n) for n in args.style_layers] if args.style_layers else s_default
    out = _outdir(args)
    img, hist = _run(style_transfer, model, content, style, c_layer, s_layers, content_weight=args.content_weight,
                     style_weight=args.style_weight, tv_weight=args.tv_weight, steps=args.steps, init=args.init,
                     optimizer=args.optimizer, lr=args.lr, seed=args.seed, progress=args.progress)
    print(f"content layer {c_layer}, style layers {' '.join(s_layers)}: objective {hist[0]:.4g} -> {hist[-1]:.4g}")
    paths = [save_image(os.path.join(out, "style_image.png"), img)]
    plot.plot_style_transfer(content, style, img, path=os.path.join(out, "style.png"))
    plot.plot_history(hist, title="style transfer: objective", path=os.path.join(out, "style_objective.png"))
    _wrote(paths + [os.path.join(out, "style.png"), os.path.join(out, "style_objective.png")])
    return 0


__all__ = ["add_parser", "run_class_model", "run_invert", "run_dream", "run_style", "run_layers",
           "default_style_layers"]
