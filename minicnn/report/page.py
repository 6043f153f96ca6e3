"""``build_report``: one self-contained HTML page for a training run, every image embedded.

The page has one section per lecture idea (``SECTIONS``), each opened by
that idea in one line:

1. ``run``: the command that repeats the run and its settings;
2. ``curves``: training and validation loss and accuracy per epoch;
3. ``accuracy``: test accuracy, per-class accuracy, the confusion matrix;
4. ``layers``: ``minicnn.summary`` (shapes, parameters, MACs, receptive field);
5. ``filters``: the first convolution's filters (``minicnn.explain.filters``);
6. ``predictions``: a handful of test images (the most confident mistakes
   first, then right answers), each with its saliency map and Grad-CAM;
7. ``robustness``: accuracy under FGSM and PGD against eps, on a small sample
   (``minicnn.attacks.evaluate``);
8. ``doctor``: the report of ``minicnn doctor`` when one was saved in the run folder.

The analyses cost a few seconds for simple_cnn; the sample sizes
(``images``, ``sample``, ``attack_images``) bound them for deeper networks.
"""
import datetime
import html
import io
import os
import tempfile
import time
from importlib import resources

import numpy as np

from .images import data_uri, heatmap, overlay, png_bytes
from .run import load_test_set, read_run, train_command

__all__ = ["SECTIONS", "EPSILONS", "build_report", "write_report"]

# id -> (title, the lecture idea in one line)
SECTIONS = {
    "run": ("The run", "A network is its data, its architecture and its recipe: the same settings and seed "
                       "train the same network again."),
    "curves": ("Learning curves", "The training loss should fall; a validation accuracy that stops following "
                                  "the training accuracy is overfitting."),
    "accuracy": ("Test accuracy", "One number hides which classes the network confuses: read the confusion "
                                  "matrix row by row (true class down, prediction across)."),
    "layers": ("Layers", "Each layer's output shape, parameters and multiply-accumulates; the receptive field "
                         "(the input pixels a unit sees) grows with depth."),
    "filters": ("First-layer filters", "The first convolution of a trained CNN learns edge, colour and blob "
                                       "detectors (Krizhevsky et al. 2012); grey is 0."),
    "predictions": ("What the network looks at", "Saliency: the pixels whose change moves the class score most "
                                                 "(Simonyan et al. 2014); Grad-CAM: where the last convolutional "
                                                 "features vote for the class (Selvaraju et al. 2017)."),
    "robustness": ("Adversarial robustness", "A perturbation too small to see can flip the prediction: accuracy "
                                             "under attack falls as the budget eps grows (FGSM: Goodfellow et al. "
                                             "2015; PGD: Madry et al. 2018)."),
    "doctor": ("Doctor's checks", "The debugging checklist of the lectures, run by minicnn doctor: one OK, "
                                  "WARN or FAIL per check."),
}
EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
_BATCH = 250


def _e(text):
    return html.escape(str(text), quote=True)


def _img(png, alt, cls="", width=None):
    size = f' width="{width}"' if width else ""
    return f'<img class="{cls}" src="{data_uri(png)}" alt="{_e(alt)}"{size}>'


def _file_png(path):
    with open(path, "rb") as f:
        return f.read()


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _drawn(draw, *args):
    """PNG bytes of a figure that a ``minicnn.train`` plot function writes to a path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "figure.png")
        draw(*args, path)
        return _file_png(path)


def _table(head, rows, cls=""):
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "".join(out) + "</tbody></table>"


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def _eps_label(eps):
    k = eps * 255
    return f"{int(round(k))}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


# ------------------------------------------------------------------------------------------- sections
def _section_run(run, model):
    cfg = run.config
    rows = [[f"<code>{_e(k)}</code>", _e(v)] for k, v in cfg.items() if k not in ("progress", "check_finite")]
    hist = run.history
    done = f"{len(hist)} epoch(s) trained" if hist else "no epoch finished"
    return (f"<p>Model <b>{_e(cfg.get('model', type(model).__name__))}</b>, {len(model.classes)} classes; {done}. "
            f"Analysed checkpoint: <code>{_e(os.path.basename(run.checkpoint))}</code>.</p>"
            f"<p>The command that repeats this run (every setting spelled out):</p>"
            f"<pre class=\"command\">{_e(train_command(cfg))}</pre>"
            f"<details><summary>All settings</summary>{_table(['setting', 'value'], rows, 'settings')}</details>")


def _section_curves(run):
    from ..train import plot_curves

    if "curves.png" in run.files:
        png = _file_png(run.files["curves.png"])
    elif run.history:
        png = _drawn(plot_curves, run.history)
    else:
        return "<p class=\"missing\">No epoch finished, so there are no curves yet.</p>"
    last = run.history[-1] if run.history else {}
    text = ""
    if last:
        text = (f"<p>Last epoch: training loss {last.get('train_loss', float('nan')):.3f}, training accuracy "
                f"{_pct(last.get('train_acc'))}, validation accuracy {_pct(last.get('val_acc'))}.</p>")
    return text + _img(png, "loss and accuracy per epoch", "figure")


def _confusion_from(labels, preds, k):
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    return confusion


def _section_accuracy(run, classes, sample):
    from ..train import plot_confusion

    if run.test and "confusion" in run.test:
        confusion = np.asarray(run.test["confusion"], dtype=np.int64)
        source = f"the test set ({confusion.sum():,} images), as tested at the end of training"
        png = _file_png(run.files["confusion.png"]) if "confusion.png" in run.files else \
            _drawn(plot_confusion, confusion, classes)
    elif sample is not None:
        confusion = _confusion_from(sample["labels"], sample["preds"], len(classes))
        source = (f"a sample of {confusion.sum():,} test images (the run has no test.json: it stopped "
                  f"before its test)")
        png = _drawn(plot_confusion, confusion, classes)
    else:
        return "<p class=\"missing\">No test.json in the run folder and no test images found (pass --data).</p>"
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    rows = [[_e(name), f"{100 * a:.1f}%", f'<span class="bar" style="width:{100 * a:.0f}px"></span>']
            for name, a in zip(classes, per_class)]
    return (f"<p class=\"headline\">Test accuracy <b>{100 * acc:.2f}%</b> on {source}.</p>"
            f"<div class=\"row\">{_table(['class', 'accuracy', ''], rows, 'per-class')}"
            f"{_img(png, 'confusion matrix', 'figure')}</div>")


def _section_layers(model, shape):
    from ..summary import summary

    net = getattr(model, "net", model)
    s = summary(net, input_shape=(1,) + tuple(shape))

    def hw(t):
        return "-" if t is None else (f"{t[0]}" if t[0] == t[1] else f"{t[0]}x{t[1]}")

    rows = [[f'<span style="padding-left:{1.2 * r.depth:.1f}em"><code>{_e(r.name)}</code></span>', _e(r.type),
             "-" if r.output_shape is None else _e("x".join(str(v) for v in r.output_shape[1:])),
             f"{r.params:,}" if r.params else "-", f"{r.macs:,}" if r.macs else "-", hw(r.rf)]
            for r in s.rows]
    return (f"<p>{s.total_params:,} parameters ({s.trainable_params:,} trainable), {s.total_macs / 1e6:.2f} M "
            f"multiply-accumulates per {shape[1]}x{shape[2]} image.</p>"
            + _table(["layer", "type", "output (C x H x W)", "parameters", "MACs", "receptive field"], rows,
                     "layers"))


def _section_filters(model):
    from ..explain import filters

    try:
        grid = filters(model)
    except ValueError as e:
        return f"<p class=\"missing\">{_e(e)}</p>"
    grid = grid.transpose(2, 0, 1) if grid.ndim == 3 else grid
    scale = max(1, int(360 // max(grid.shape[-2:])))
    return _img(png_bytes(grid, scale), "first-layer filters", "filters pixelated")


def _sample(model, test, sample, seed):
    """Predictions on ``sample`` seeded-random test images: dict indices, labels, preds, probs, images (float)."""
    from ..explain import predict

    rng = np.random.default_rng(seed)
    n = min(sample, len(test))
    idx = rng.choice(len(test), size=n, replace=False)          # random order: any prefix is a fair sample
    images, labels = test.get_batch(idx)
    x = images.astype(np.float32) / 255
    preds, probs, _ = zip(*(predict(model, x[s:s + _BATCH]) for s in range(0, n, _BATCH)))
    return {"indices": idx, "labels": np.asarray(labels), "x": x, "preds": np.concatenate(preds),
            "probs": np.concatenate(probs)}


def _chosen(sample, count):
    """Positions in the sample: the most confident mistakes first (up to 3/4 of ``count``), then right answers."""
    wrong = np.flatnonzero(sample["preds"] != sample["labels"])
    right = np.flatnonzero(sample["preds"] == sample["labels"])
    wrong = wrong[np.argsort(-sample["probs"][wrong], kind="stable")]
    right = right[np.argsort(-sample["probs"][right], kind="stable")]
    n_wrong = min(len(wrong), max(count - min(len(right), max(1, count // 4)), 0))
    picked = list(wrong[:n_wrong]) + list(right[:count - n_wrong])
    return np.asarray(picked[:count], dtype=np.int64)


def _section_predictions(model, classes, sample, count):
    from ..explain import grad_cam, saliency

    if sample is None:
        return "<p class=\"missing\">No test images found (pass --data).</p>"
    pos = _chosen(sample, count)
    x = sample["x"][pos]
    sal = np.asarray(saliency(model, x))
    cams = np.asarray(grad_cam(model, x, upsample=True, normalize=True))
    cells = []
    for k, p in enumerate(pos):
        true, pred, prob = sample["labels"][p], sample["preds"][p], sample["probs"][p]
        ok = true == pred
        verdict = "right" if ok else "wrong"
        scale = max(1, 96 // x.shape[-1])
        cells.append(
            f'<figure class="case {verdict}"><figcaption><b>{_e(classes[pred])}</b> {100 * prob:.0f}% '
            f'<span class="verdict">{verdict}</span><br>true: {_e(classes[true])} '
            f'<small>(test image {int(sample["indices"][p])})</small></figcaption>'
            f'<div class="maps">'
            f'{_img(png_bytes(x[k], scale), "test image", "pixelated")}'
            f'{_img(png_bytes(heatmap(sal[k]), scale), "saliency", "pixelated")}'
            f'{_img(png_bytes(overlay(x[k], cams[k]), scale), "Grad-CAM", "pixelated")}'
            f'</div><div class="labels"><span>image</span><span>saliency</span><span>Grad-CAM</span></div>'
            f'</figure>')
    n_wrong = int((sample["preds"][pos] != sample["labels"][pos]).sum())
    return (f"<p>{n_wrong} mistake(s), most confident first, then right answers, from {len(sample['labels']):,} "
            f"test images; the maps explain the <em>predicted</em> class (bright: important).</p>"
            f"<div class=\"cases\">{''.join(cells)}</div>")


def _robust_figure(reports, clean):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, rep in reports.items():
        eps = [0.0] + [r["eps"] for r in rep.rows]
        acc = [100 * clean] + [100 * r["robust_accuracy"] for r in rep.rows]
        ax.plot([255 * e for e in eps], acc, marker="o", label=name.upper())
    ax.set(xlabel="eps (L-inf, in 1/255 of the pixel range)", ylabel="accuracy (%)", ylim=(0, 100),
           title=f"accuracy under attack ({next(iter(reports.values())).n} test images)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _figure_png(fig)


def _section_robustness(model, sample, attack_images, epsilons, seed):
    from ..attacks import evaluate

    if sample is None:
        return "<p class=\"missing\">No test images found (pass --data).</p>"
    n = min(attack_images, len(sample["labels"]))
    x, y = sample["x"][:n], sample["labels"][:n]
    reports = {name: evaluate(model, name, x, y, epsilons=epsilons, seed=seed) for name in ("fgsm", "pgd")}
    clean = next(iter(reports.values())).clean_accuracy
    head = ["eps"] + [f"{name.upper()} accuracy" for name in reports]
    rows = [["0 (clean)"] + [_pct(clean)] * len(reports)]
    for i, eps in enumerate(epsilons):
        rows.append([_eps_label(eps)] + [_pct(rep.rows[i]["robust_accuracy"]) for rep in reports.values()])
    return (f"<p>FGSM: one step of size eps along the sign of the gradient. PGD: 10 steps of size 2.5 eps/10 "
            f"from a random start, projected back into the eps-ball. On {n} test images.</p>"
            f"<div class=\"row\">{_table(head, rows, 'robust')}"
            f"{_img(_robust_figure(reports, clean), 'accuracy against eps', 'figure')}</div>")


def _section_doctor(run):
    if not run.doctor:
        return ("<p class=\"missing\">minicnn doctor was not run for this folder. "
                f"<code>minicnn doctor --model {_e(run.config.get('model', 'MODEL'))} --out "
                f"{_e(run.path)}</code> saves its report.json here; the next report shows it.</p>")
    checks = run.doctor.get("checks", [])
    rows = [[f"<code>{_e(c.get('name'))}</code>", f'<span class="status {_e(c.get("status"))}">'
             f'{_e(c.get("status"))}</span>', _e(c.get("measured", "")),
             _e(c.get("advice", "") if c.get("status") != "OK" else "")] for c in checks]
    verdict = "nothing failed" if run.doctor.get("ok") else "some checks FAILED"
    return f"<p>{len(checks)} checks, {verdict}.</p>" + _table(["check", "status", "measured", "what to try"],
                                                               rows, "doctor")


# ------------------------------------------------------------------------------------------- the page
def build_report(run_dir, data=None, checkpoint=None, images=8, sample=500, attack_images=64,
                 epsilons=EPSILONS, seed=0, log=None):
    """The HTML text of the report of ``run_dir`` (see the module docstring).

    ``data``: where the test images are (default: the run's own ``--data``,
    else the default places); ``checkpoint``: the .npz analysed (default
    last.npz); ``images``: test images shown with their maps; ``sample``:
    test images scanned for mistakes; ``attack_images``: images attacked
    per eps; ``log``: a function that receives one progress line per section.
    """
    from ..checkpoint import load_model
    from ..errors import TrainingError

    log = log or (lambda line: None)
    start = time.perf_counter()
    run = read_run(run_dir, checkpoint)
    model = load_model(run.checkpoint)
    classes = list(model.classes)
    try:
        test, where = load_test_set(data, run.config)
        if list(test.classes) != classes:
            raise TrainingError(f"the test set at {where} has classes {list(test.classes)}, the model "
                                f"{classes}")
        shape = tuple(test.images.shape[1:])
    except TrainingError as e:
        test, where = None, str(e).splitlines()[0]
        shape = (3, 32, 32)
    parts = {}

    def step(name, fn, *args):
        t0 = time.perf_counter()
        parts[name] = fn(*args)
        log(f"report: {len(parts)}/{len(SECTIONS)} {SECTIONS[name][0].lower()} ({time.perf_counter() - t0:.1f} s)")

    sampled = _sample(model, test, sample, seed) if test is not None else None
    step("run", _section_run, run, model)
    step("curves", _section_curves, run)
    step("accuracy", _section_accuracy, run, classes, sampled)
    step("layers", _section_layers, model, shape)
    step("filters", _section_filters, model)
    step("predictions", _section_predictions, model, classes, sampled, images)
    step("robustness", _section_robustness, model, sampled, attack_images, tuple(epsilons), seed)
    step("doctor", _section_doctor, run)
    took = time.perf_counter() - start
    return _page(run, parts, where if test is not None else f"test images not found: {where}", took)


def _page(run, parts, data_note, took):
    from .._version import __version__

    css = resources.files("minicnn.report").joinpath("assets", "report.css").read_text()
    name = os.path.basename(os.path.normpath(os.path.abspath(run.path)))
    nav = " ".join(f'<a href="#{k}">{_e(t)}</a>' for k, (t, _) in SECTIONS.items())
    body = "".join(
        f'<section id="{k}"><h2>{_e(title)}</h2><p class="idea">{_e(idea)}</p>{parts[k]}</section>'
        for k, (title, idea) in SECTIONS.items())
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>minicnn report: {_e(name)}</title><style>{css}</style></head><body>"
            f"<header><h1>minicnn report: {_e(name)}</h1><p>Run folder <code>{_e(os.path.abspath(run.path))}</code>; "
            f"test images: {_e(data_note)}. Made by minicnn {_e(__version__)} on {when} in {took:.0f} s.</p>"
            f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n")


def write_report(run_dir, out=None, log=None, **options):
    """Write ``build_report(run_dir, **options)`` to ``out`` (default ``RUN_DIR/report.html``); returns the path."""
    out = out or os.path.join(run_dir, "report.html")
    text = build_report(run_dir, log=log, **options)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return out
