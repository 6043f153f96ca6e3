"""Style-transfer benchmark: Gatys et al. on a 128x128 image, 100 Adam steps, vgg_small features.

    python bench/bench_style.py                                   # 128x128, 100 steps, CPU, untrained weights
    python bench/bench_style.py --checkpoint runs/vgg_small/best.npz
    python bench/bench_style.py --size 16 --steps 2               # a dry run (seconds)
    python bench/bench_style.py --device gpu

One step = a forward pass of vgg_small up to the content layer (net.12,
128 channels at half resolution; the style layers net.2, net.5, net.9 and
net.12 are read on the way), the content, style (Gram) and total-variation
losses, a backward pass that computes only the image's gradient (the
weights are frozen), and an Adam step on the pixels. The weights do not
change the cost, so untrained ones are fine for timing. Printed: the total
time of the run (``minicnn.synthesize.style_transfer``, as a user calls
it), the median step time, and, when PyTorch is installed, the same loop
in PyTorch with the same weights and threads, and the ratio minicnn / PyTorch.
"""
import argparse
import os
import statistics
import sys
import time
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CONTENT_LAYER = "net.12"
STYLE_LAYERS = ["net.2", "net.5", "net.9", "net.12"]


def images(size, seed=0):
    """Content and style images: the shared photographs if present, else smooth random images."""
    from minicnn.synthesize.core import gaussian_blur
    from minicnn.synthesize.images import load_image, shared_images_dir

    root = shared_images_dir()
    if root is not None and (root / "chelsea.png").exists() and (root / "ihc.png").exists():
        return load_image(root / "chelsea.png", size=(size, size)), load_image(root / "ihc.png", size=(size, size))
    rng = np.random.default_rng(seed)
    make = lambda: np.clip(gaussian_blur(rng.random((1, 3, size, size)), 2.0) * 2 - 0.5, 0, 1).astype(np.float32)
    return make(), make()


def minicnn_model(checkpoint, device):
    import minicnn
    from minicnn import nn
    from minicnn.models import get_model

    if checkpoint:
        return minicnn.load_model(checkpoint, device=device)
    nn.init.manual_seed(0)
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])),
                                       ("net", get_model("vgg_small"))]))
    model.to(device)
    model.eval()
    return model


def run_minicnn(model, content, style, steps, device, weights):
    from minicnn.backend import to_device
    from minicnn.synthesize import style_transfer

    content, style = to_device(content, device), to_device(style, device)
    t0 = time.perf_counter()
    img, hist = style_transfer(model, content, style, CONTENT_LAYER, STYLE_LAYERS, steps=steps, **weights)
    float(hist[-1])
    return time.perf_counter() - t0, hist


def run_minicnn_steps(model, content, style, steps, device, weights):
    """The same loop, step by step, to report the median step time (objective built as style_transfer does)."""
    from minicnn.autograd import Tensor, no_grad
    from minicnn.backend import to_device
    from minicnn.optim import Adam
    from minicnn.synthesize import gram_matrix, layer_features, objectives as obj
    from minicnn.analysis import analysis_mode

    content, style = to_device(content, device), to_device(style, device)
    times = []
    with analysis_mode(model):
        with no_grad():
            p = layer_features(model, Tensor(content), [CONTENT_LAYER])[CONTENT_LAYER].detach()
            feats = layer_features(model, Tensor(style), STYLE_LAYERS)
            grams = {n: gram_matrix(feats[n]).detach() for n in STYLE_LAYERS}
        objective = (weights["content_weight"] * obj.feature_match(CONTENT_LAYER, p)
                     + weights["style_weight"] * obj.style(STYLE_LAYERS, grams) + weights["tv_weight"] * obj.tv())
        x = Tensor(content.copy(), requires_grad=True)
        opt = Adam([x], lr=weights["lr"])
        for _ in range(steps):
            t0 = time.perf_counter()
            loss, _ = objective.evaluate(model, x)
            loss.backward()
            opt.step()
            x.data.clip(0, 1, out=x.data)
            x.grad = None
            loss.item()
            times.append(time.perf_counter() - t0)
    return times


def run_torch(model, content, style, steps, device, weights):
    """The same computation in PyTorch: vgg_small's first two blocks with the same weights, same losses, Adam."""
    import torch
    import torch.nn as tnn

    dev = "cuda" if device == "gpu" else "cpu"
    from minicnn.backend import to_device

    state = {k: np.asarray(to_device(getattr(v, "data", v) if not isinstance(v, np.ndarray) else v, "cpu"))
             for k, v in model.state_dict().items()}
    layers = []
    mods = list(model.net)[:13]                            # net.0 ... net.12
    for i, m in enumerate(mods):
        kind = type(m).__name__
        if kind == "Conv2d":
            c = tnn.Conv2d(m.in_channels, m.out_channels, 3, padding=1, bias=False)
            c.weight.data = torch.tensor(state[f"net.{i}.weight"])
            layers.append(c)
        elif kind == "BatchNorm2d":
            b = tnn.BatchNorm2d(m.num_features)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(b, name).data = torch.tensor(state[f"net.{i}.{name}"])
            layers.append(b)
        elif kind == "ReLU":
            layers.append(tnn.ReLU())
        elif kind == "MaxPool2d":
            layers.append(tnn.MaxPool2d(2))
    net = tnn.Sequential(*layers).to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    mean = torch.tensor(state["normalize.mean"]).reshape(1, -1, 1, 1).to(dev)
    std = torch.tensor(state["normalize.std"]).reshape(1, -1, 1, 1).to(dev)
    style_idx = [int(n.split(".")[1]) for n in STYLE_LAYERS]
    content_idx = int(CONTENT_LAYER.split(".")[1])

    def feats(x):
        out, h = {}, (x - mean) / std
        for i, layer in enumerate(net):
            h = layer(h)
            if i in style_idx or i == content_idx:
                out[i] = h
            if i == content_idx:
                break
        return out

    def gram(f):
        n, c, hh, ww = f.shape
        v = f.reshape(n, c, hh * ww)
        return v @ v.transpose(1, 2) / (c * hh * ww)

    c_t = torch.tensor(content).to(dev)
    with torch.no_grad():
        fc = feats(c_t)
        target = fc[content_idx]
        grams = {i: gram(f) for i, f in feats(torch.tensor(style).to(dev)).items() if i in style_idx}
    x = c_t.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=weights["lr"])
    times, first = [], None
    for _ in range(steps):
        t0 = time.perf_counter()
        f = feats(x)
        loss_c = ((f[content_idx] - target) ** 2).mean()
        loss_s = sum(0.25 * ((gram(f[i]) - grams[i]) ** 2).sum() for i in style_idx) / len(style_idx)
        d_h = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        d_w = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        tv = (d_h ** 2 + d_w ** 2).mean()
        loss = weights["content_weight"] * loss_c + weights["style_weight"] * loss_s + weights["tv_weight"] * tv
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        first = loss.item() if first is None else first
        times.append(time.perf_counter() - t0)
    return times, first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps (default: 100)")
    ap.add_argument("--checkpoint", default=None, help="a vgg_small checkpoint (default: untrained weights)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    args = ap.parse_args(argv)

    try:
        from minicnn.speed import apply_process_settings
        apply_process_settings()
    except ImportError:
        pass
    weights = dict(content_weight=1.0, style_weight=1e3, tv_weight=10.0, lr=0.02)
    model = minicnn_model(args.checkpoint, args.device)
    content, style = images(args.size)
    print(f"style transfer, {args.size}x{args.size}, {args.steps} Adam steps, vgg_small "
          f"({'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained weights'}), device {args.device}, "
          f"content {CONTENT_LAYER}, style {' '.join(STYLE_LAYERS)}")
    total, hist = run_minicnn(model, content, style, args.steps, args.device, weights)
    print(f"minicnn style_transfer: {total:.1f} s in all ({total / args.steps * 1000:.0f} ms/step), "
          f"objective {hist[0]:.4g} -> {hist[-1]:.4g}")
    steps = run_minicnn_steps(model, content, style, min(args.steps, 20), args.device, weights)
    med = statistics.median(steps)
    print(f"minicnn median step: {med * 1000:.0f} ms (over {len(steps)} steps)")
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch not installed: no baseline")
            return 0
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
        t_steps, first = run_torch(model, content, style, min(args.steps, 20), args.device, weights)
        t_med = statistics.median(t_steps)
        print(f"PyTorch median step: {t_med * 1000:.0f} ms (its first objective {first:.4g}, minicnn's "
              f"{hist[0]:.4g}); ratio minicnn / PyTorch: {med / t_med:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
