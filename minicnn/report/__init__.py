"""minicnn.report: a training run as one self-contained HTML page (``minicnn report RUN_DIR``).

    from minicnn.report import write_report
    write_report("runs/simple_cnn")          # -> runs/simple_cnn/report.html, every image embedded

The page (``page``) has a section per lecture idea: the command and
settings, the learning curves, test and per-class accuracy with the
confusion matrix, the layer summary, the first-layer filters, test images
with saliency and Grad-CAM (most confident mistakes first), robust accuracy
against eps for FGSM and PGD, and the doctor's report when one was saved.
It reads the run folder of ``minicnn train`` (``run``) and uses
``minicnn.explain``, ``minicnn.attacks`` and ``minicnn.summary`` for the
analyses. ``images`` turns arrays into embedded PNGs; ``minicnn.explore``
shares it.
"""
from .images import ImageError, ImageTooLarge, data_uri, heatmap, image_from_bytes, overlay, png_bytes, signed_map
from .page import EPSILONS, SECTIONS, build_report, write_report
from .run import Run, RunError, load_test_set, read_run, train_command

__all__ = ["build_report", "write_report", "SECTIONS", "EPSILONS", "Run", "RunError", "read_run",
           "load_test_set", "train_command", "png_bytes", "data_uri", "heatmap", "overlay", "signed_map",
           "image_from_bytes", "ImageError", "ImageTooLarge"]
