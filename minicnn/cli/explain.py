"""``minicnn explain``: what a trained CNN looks at, for your images or test-set images, as PNGs."""
import json
import os

from .common import CLIError, HelpFormatter, integer, output_folder, positive_int, prepare_run

DESCRIPTION = """\
Explain a trained model's predictions (a checkpoint written by minicnn train).
For each image it prints the predicted class and its probability and writes
into --out one PNG per method (IMAGE_METHOD.png) and an overview of all of
them (IMAGE_overview.png):

  saliency              max over channels of |d logit / d pixel| (Simonyan et al. 2014)
  gradient              d logit / d pixel, summed over channels (signed)
  smoothgrad            the gradient averaged over noisy copies (Smilkov et al. 2017)
  deconvnet             Zeiler & Fergus's reconstruction through the pooling switches
  guided_backprop       Springenberg et al.'s guided backpropagation
  integrated_gradients  Sundararajan et al. 2017, from a black image
  occlusion             the drop of the class probability under a sliding grey square
  cam                   class activation map (networks ending in global average pooling)
  grad_cam              Grad-CAM at --layer (Selvaraju et al. 2017)
  activations           the feature maps of --layer (a separate PNG; not in the overview)

Images of any size are resized to the model's input (32x32 for the CIFAR-10
models); grayscale and RGBA images are converted. Layers are named as
model.named_modules() names them: see --list-layers."""

EXAMPLES = """\
examples:
  minicnn explain --checkpoint runs/simple_cnn/best.npz --images cat.png dog.jpg --out explain/
  minicnn explain --checkpoint runs/resnet20/best.npz --index 12 3456 7890 --method grad_cam occlusion
  minicnn explain --checkpoint runs/simple_cnn/best.npz --list-layers"""

INPUT_SIZE = (32, 32)   # every model of minicnn.models takes 32x32 images


def add_parser(sub):
    from ..explain.report import METHODS

    p = sub.add_parser("explain", help="saliency, guided backprop, occlusion, Grad-CAM... of a trained model",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by minicnn train (.npz)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    which.add_argument("--index", nargs="+", type=integer, metavar="I",
                       help="test-set images by index, exactly these (an image-folder test set is sorted by "
                            "class: CIFAR-10's class k holds indices 1000k to 1000k+999)")
    p.add_argument("--data", default=None,
                   help="where the test set is, for --index (default: the data the checkpoint was trained on, "
                        "else minicnn train's default places)")
    p.add_argument("--method", nargs="+", default=["all"], choices=("all",) + METHODS + ("activations",),
                   metavar="METHOD", help="methods to run: all, or some of " + ", ".join(METHODS + ("activations",)))
    p.add_argument("--layer", default=None,
                   help="layer for Grad-CAM, CAM and activations (default: the last map at the last "
                        "convolution's resolution)")
    p.add_argument("--target", default=None,
                   help="explain this class (a name or an index) instead of each image's predicted class")
    p.add_argument("--list-layers", action="store_true", help="print the model's layer names and exit")
    p.add_argument("--samples", type=positive_int, default=25, help="noisy copies for SmoothGrad")
    p.add_argument("--steps", type=positive_int, default=50, help="steps for integrated gradients")
    p.add_argument("--window", type=positive_int, default=8, help="occlusion window, in pixels")
    p.add_argument("--stride", type=positive_int, default=4, help="occlusion stride, in pixels")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to run")
    p.add_argument("--out", default="explain", help="output folder for the PNGs")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ inputs
def load_image(path, channels=3, size=INPUT_SIZE):
    """An image file as a (channels, H, W) float32 array in [0, 1], resized to ``size``.

    Grayscale, palette and RGBA images are converted (transparent parts over
    white); the whole image is resized (bilinear, with antialiasing).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CLIError(f"--images {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im.alpha_composite(rgba)
            im = im.convert("RGB" if channels == 3 else "L")
            original = im.size
            im = im.resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CLIError(f"--images {path}: not an image Pillow can read ({type(e).__name__}: {e})") from None
    if channels not in (1, 3):
        raise CLIError(f"the model takes {channels}-channel images; only 1- and 3-channel models read image files")
    a = np.asarray(im, dtype=np.float32) / 255
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return a, original


def _test_images(args, ckpt, indices):
    """Test-set images (N, C, H, W) in [0, 1] and their labels, by index."""
    import numpy as np

    from ..errors import TrainingError
    from ..train.datasets import load_datasets

    data = args.data
    if data is None and "config" in ckpt:
        try:
            saved = json.loads(str(ckpt["config"])).get("data")
        except (ValueError, AttributeError):
            saved = None
        if saved and os.path.isdir(saved):
            data = saved
    try:
        _, test, _ = load_datasets(data, progress=False, splits=("test",))
    except TrainingError as e:
        raise CLIError(f"--index needs the test set: {e}") from None
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise CLIError(f"--index {bad[0]}: the test set has {len(test)} images (0 to {len(test) - 1})")
    images, labels = test.get_batch(np.asarray(indices))
    return images.astype(np.float32) / 255, labels, list(test.classes)


def _target(text, classes):
    if text is None:
        return None
    if text in classes:
        return classes.index(text)
    try:
        k = int(text)
    except ValueError:
        raise CLIError(f"--target {text}: not a class; the classes are {', '.join(classes)}") from None
    if not 0 <= k < len(classes):
        raise CLIError(f"--target {text}: class indices run from 0 to {len(classes) - 1}")
    return k


def _unique_stems(paths):
    stems, seen = [], {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


# ------------------------------------------------------------------------------ listing
def list_layers(model, channels):
    """Lines: name, type, output shape and receptive field (size / jump) of every layer."""
    import numpy as np

    from ..autograd import Tensor, no_grad
    from ..backend import to_device
    from ..explain import layer_geometry
    from ..analysis import analysis_mode, capture, model_device_dtype

    shape = (1, channels) + INPUT_SIZE
    named = [(n, m) for n, m in model.named_modules() if n]
    geometry = layer_geometry(model, shape)
    device, dtype = model_device_dtype(model)
    with analysis_mode(model), no_grad(), capture(dict(named)) as outs:
        model(Tensor(to_device(np.zeros(shape, dtype=dtype), device)))
    lines = [f"{'layer':<28} {'type':<18} {'output':<18} receptive field (size / jump)"]
    for name, m in named:
        out = outs.get(name)
        shp = "x".join(str(s) for s in out.shape[1:]) if out is not None and hasattr(out, "shape") else "-"
        g = geometry.get(name)
        rf = f"{g.size[0]}x{g.size[1]} / {g.jump[0]}" if g is not None else "-"
        lines.append(f"{name:<28} {type(m).__name__:<18} {shp:<18} {rf}")
    return lines


def _title(classes, predicted, probs, target, label):
    """The image panel's title: what is explained (the prediction, or the --target), with probabilities."""
    lines = [] if label is None else [f"true {classes[label]}"]
    if target is None:
        lines.append(f"predicted {classes[predicted]}: p = {probs[predicted]:.2f}")
    else:
        lines.append(f"target {classes[target]}: p = {probs[target]:.2f}")
        if predicted != target:
            lines.append(f"(predicted {classes[predicted]}: p = {probs[predicted]:.2f})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ run
def run(args):
    import numpy as np

    from ..checkpoint import load_checkpoint, load_model
    from ..errors import CheckpointError
    from ..explain import activations, default_cam_layer, explain_all, predict
    from ..explain import plot
    from ..explain.report import METHODS

    prepare_run(args)              # process settings (allocator, BLAS threads) and the --device check
    output_folder(args.out)
    try:
        model = load_model(args.checkpoint, device=args.device)
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise CLIError(str(e)) from None
    classes = list(model.classes)
    channels = int(model.normalize.mean.shape[0])
    if args.list_layers:
        print("\n".join(list_layers(model, channels)))
        return 0
    if not args.images and not args.index:
        raise CLIError("give --images FILE ... or --index I ... (or --list-layers)")

    labels = None
    if args.images:
        loaded = [load_image(p, channels) for p in args.images]
        x = np.stack([a for a, _ in loaded])
        stems = _unique_stems(args.images)
        names = list(args.images)
    else:
        x, labels, test_classes = _test_images(args, ckpt, args.index)
        if test_classes != classes:
            raise CLIError(f"the test set's classes {test_classes} are not the checkpoint's {classes}")
        stems = [f"test{i:05d}" for i in args.index]
        names = [f"test image {i}" for i in args.index]
    methods = list(METHODS) + ["activations"] if "all" in args.method else list(dict.fromkeys(args.method))
    target = _target(args.target, classes)
    if args.layer is not None:
        layers = dict(model.named_modules())
        if args.layer not in layers:
            raise CLIError(f"--layer {args.layer}: no such layer; see --list-layers")

    from ..backend import to_device
    xd = to_device(x, args.device)
    pred, prob, probs = predict(model, xd)
    targets = np.full(len(x), target) if target is not None else pred
    for i, name in enumerate(names):
        line = f"{name}: predicted {classes[pred[i]]} (p = {prob[i]:.3f})"
        if labels is not None:
            line += f", true {classes[labels[i]]}"
        if target is not None:
            line += f"; explaining {classes[target]} (p = {probs[i, target]:.3f})"
        print(line)

    attribution = [m for m in methods if m != "activations"]
    try:
        results, skipped = explain_all(model, xd, targets, attribution, layer=args.layer, samples=args.samples,
                                       steps=args.steps, window=args.window, stride=args.stride)
    except ValueError as e:
        raise CLIError(str(e)) from None
    for m, why in skipped.items():
        print(f"{m}: skipped, it needs global average pooling then one linear layer at the end "
              f"(use grad_cam); {why.split(': ', 1)[-1]}")
    written = []
    cam_layer = None                    # the layer CAM, Grad-CAM and the activations are taken at
    if {"cam", "grad_cam"} & set(results) or "activations" in methods:
        cam_layer = args.layer or default_cam_layer(model, xd)
    for i, stem in enumerate(stems):
        title = _title(classes, pred[i], probs[i], target, None if labels is None else labels[i])
        for m, r in results.items():
            path = os.path.join(args.out, f"{stem}_{m}.png")
            plot.method_figure(x[i], m, to_device(r[i], "cpu"), title, path, layer=cam_layer)
            written.append(path)
        if results:
            path = os.path.join(args.out, f"{stem}_overview.png")
            plot.overview(x[i], {m: to_device(r[i], "cpu") for m, r in results.items()}, title, path,
                          layer=cam_layer)
            written.append(path)
    if "activations" in methods:
        layer = cam_layer
        acts = to_device(activations(model, xd, layer), "cpu")
        for i, stem in enumerate(stems):
            path = os.path.join(args.out, f"{stem}_activations.png")
            plot.feature_maps(acts[i], f"{layer}: feature maps", x[i], path)
            written.append(path)
    print(f"wrote {len(written)} PNG(s) to {args.out}")
    return 0
