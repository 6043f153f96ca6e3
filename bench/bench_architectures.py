"""The cost of the lectures' other networks: one training step each, against simple_cnn in the same run.

    python bench/bench_architectures.py                 # batch 32, CPU
    python bench/bench_architectures.py --batch 128 --steps 10
    python bench/bench_architectures.py --device gpu

One step = forward, loss, backward, optimizer step, float32, on one random
batch: cross-entropy + SGD for the classifiers (simple_cnn, the baseline;
inception_small; allconv), MSE + Adam for the image-to-image nets
(conv_autoencoder, unet_small, colourisation-sized: 1 channel in, 3 out),
and one ``minicnn.train.gan.gan_step`` (a D step and a G step, Adam) for DCGAN
at widths 32 (the ``minicnn gan`` default) and 64 (the paper's). Printed:
the median step time, its ratio to simple_cnn's, and the time of one epoch
over 45,000 (classifiers, 5,000 held out) or 50,000 images (the others) at
that speed.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def steps_for(batch, device, seed=0):
    """name -> (a function doing one training step, images per epoch)."""
    import minicnn
    import minicnn.functional as F
    from minicnn import models, optim
    from minicnn.train.gan import gan_step
    from minicnn.train.image2image import build_image2image_model, grayscale

    rng = np.random.default_rng(seed)
    x = minicnn.tensor(rng.random((batch, 3, 32, 32), dtype=np.float32)).to(device)
    y = minicnn.tensor(rng.integers(0, 10, batch)).to(device)
    grey = minicnn.tensor(grayscale(x.data))
    out = {}

    def classifier(name):
        minicnn.nn.init.manual_seed(seed)
        model = models.get_model(name).to(device)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.item()
        return step

    def image2image(name):
        minicnn.nn.init.manual_seed(seed)
        model = build_image2image_model(name, "colorize").to(device)
        opt = optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss = F.mse_loss(model(grey), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.item()
        return step

    def dcgan(width):
        minicnn.nn.init.manual_seed(seed)
        G, D = models.dcgan_generator(100, width).to(device), models.dcgan_discriminator(width).to(device)
        opt_G = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_D = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        z = minicnn.tensor(rng.standard_normal((batch, 100)).astype(np.float32)).to(device)
        real = minicnn.tensor(x.data * 2 - 1)
        return lambda: gan_step(G, D, opt_G, opt_D, real, z)["loss_d"]

    for name in ("simple_cnn", "inception_small", "allconv"):
        out[name] = (classifier(name), 45000)
    for name in ("conv_autoencoder", "unet_small"):
        out[name] = (image2image(name), 50000)
    for width in (32, 64):
        out[f"dcgan (width {width})"] = (dcgan(width), 50000)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="images per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps per network (after one warm-up step)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--only", default=None, help="comma-separated names to run (default: all)")
    args = p.parse_args(argv)
    from minicnn.speed import apply_process_settings

    apply_process_settings()
    steps = steps_for(args.batch, args.device)
    if args.only:
        keep = set(args.only.split(","))
        steps = {k: v for k, v in steps.items() if k.split(" ")[0] in keep or k in keep}
    print(f"one training step at batch {args.batch} on {args.device} (median of {args.steps})")
    print(f"{'network':22s} {'ms/step':>9s} {'x simple_cnn':>13s} {'one epoch':>10s}")
    base = None
    for name, (step, images) in steps.items():
        step()                                          # warm-up (allocations, kernel loads)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        base = med if name == "simple_cnn" else base
        ratio = f"{med / base:.2f}" if base else "-"
        epoch = med * images / args.batch
        print(f"{name:22s} {1000 * med:9.1f} {ratio:>13s} {epoch / 60:8.1f} min", flush=True)


if __name__ == "__main__":
    main()
