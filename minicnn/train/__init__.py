"""Training on CIFAR-10: the loop behind ``minicnn train`` and ``minicnn eval``, one lesson per module.

- ``loop``: ``fit(model, loader, optimizer, loss_fn, epochs, scheduler)``, the
  training loop itself (forward, loss, zero_grad, backward, step). Read it first.
- ``config``: ``TrainConfig``, each model's default recipe, the optimizer and
  the learning-rate schedule it builds.
- ``datasets``: finding CIFAR-10 on disk (``resolve_data``, ``load_datasets``).
- ``evaluation``: loss, accuracy and confusion matrix on held-out images;
  ``evaluate_checkpoint`` (``minicnn eval``).
- ``reports``: metrics.csv, the learning curves, the confusion matrix.
- ``regularisation``: ``--l1``, ``--l2`` (loss terms) and ``--max-norm`` (a
  constraint after each step) over the weights, through ``minicnn.nn.utils``.
- ``finetune``: ``--init-from`` and ``--freeze``: loading a trained network
  (a new head for other classes), freezing parameters, batchnorm of frozen layers.
- ``ensemble``: ``Ensemble`` (the mean of several models' probabilities),
  ``evaluate_ensemble``; ``minicnn eval`` with several checkpoints.
- ``run``: ``Run``, what every training needs around its loop: the run
  folder, the stop on Ctrl-C/SIGTERM, last.npz and exact resuming, the
  metrics rows, the time estimate and ``--max-minutes``.
- ``trainer``: ``Trainer``, one run of ``minicnn train``: ``fit`` once per
  epoch inside a ``Run``.
- ``gan``: the DCGAN and its training (``minicnn gan``), a loop of
  ``gan_step`` per epoch inside a ``Run``.
- ``image2image``: denoising, colourisation, reconstruction
  (``minicnn train-image2image``), the same shape.

Checkpoint files themselves (writing, reading, ``load_model``) are
``minicnn.checkpoint``.
"""
from ..checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, model_from_checkpoint,
                          write_checkpoint)
from ..errors import CheckpointError, TrainingError
from .config import (ADVERSARIAL_METHODS, DEFAULT_MODEL, TrainConfig, build_optimizer, build_scheduler,
                     complete_config, defaults_for, param_groups)
from .datasets import DEFAULT_DATA_PLACES, how_to_get_data, load_datasets, resolve_data
from .evaluation import evaluate, evaluate_checkpoint
from .ensemble import Ensemble, EnsembleResult, evaluate_checkpoints, evaluate_ensemble, format_ensemble_table
from .finetune import (BACKBONE, check_architecture, freeze, frozen_batchnorm_layers, head_keys,
                       init_from_checkpoint, keep_frozen_statistics, match_patterns)
from .loop import fit
from .regularisation import apply_max_norm, regularised_loss, regularised_parameters
from .reports import format_report, plot_confusion, plot_curves, write_metrics, write_rows
from .run import ESTIMATE_AFTER_STEPS, Run, RunConfig, Stop, check_out_folder, estimate_message, format_duration
from .trainer import RUN_DEFINING, Trainer

__all__ = [
    "fit", "TrainConfig", "Trainer", "TrainingError", "CheckpointError", "DEFAULT_MODEL", "ADVERSARIAL_METHODS",
    "defaults_for", "complete_config", "param_groups", "build_optimizer", "build_scheduler",
    "DEFAULT_DATA_PLACES", "resolve_data", "load_datasets", "how_to_get_data",
    "evaluate", "evaluate_checkpoint", "format_report", "plot_curves", "plot_confusion", "write_metrics", "write_rows",
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "write_checkpoint", "load_checkpoint", "model_from_checkpoint",
    "Run", "RunConfig", "Stop", "RUN_DEFINING", "ESTIMATE_AFTER_STEPS", "check_out_folder", "format_duration", "estimate_message",
    "Ensemble", "EnsembleResult", "evaluate_ensemble", "evaluate_checkpoints", "format_ensemble_table",
    "BACKBONE", "head_keys", "check_architecture", "match_patterns", "freeze", "frozen_batchnorm_layers",
    "keep_frozen_statistics", "init_from_checkpoint", "regularised_loss", "regularised_parameters",
    "apply_max_norm",
]
