"""What a training run is: ``TrainConfig``, the recipes, and the optimizer and schedule it builds.

``minicnn train`` fills a ``TrainConfig`` from its options; ``complete_config``
fills what was left out from the recipe (``RECIPES``) and the model's own
defaults (``defaults_for``), and checks every value, naming the option at
fault.

Two recipes:

- ``fast`` (the default when no ``--model`` is given): ``fast_cnn`` with the
  tricks of the fast CIFAR-10 trainings (Page 2018, Jordan 2024): a frozen
  patch-whitening first layer, Nesterov SGD with a short triangular
  schedule and a higher rate for biases, label smoothing, alternating
  flips, 2-pixel translations, an average of the weights (EMA) and
  test-time augmentation; trained on all 50,000 training images.
- ``standard`` (the default when ``--model`` is given): the model's classic
  recipe, random 4-pixel crops and flips, 5,000 images held out for validation.
"""
from dataclasses import dataclass, field

from ..errors import TrainingError
from ..models import MODELS
from ..optim import SGD, Adam, CosineAnnealingLR, MultiStepLR, OneCycleLR
from .evaluation import TTA_MODES

__all__ = ["TrainConfig", "DEFAULT_MODEL", "ADVERSARIAL_METHODS", "RECIPES", "RECIPE_RESULTS", "SCHEDULES", "FLIPS", "PAD_MODES",
           "EMA_EVERY", "defaults_for", "recipe_model", "complete_config", "param_groups", "build_optimizer",
           "build_scheduler"]

# The model of the standard recipe when none is named.
DEFAULT_MODEL = "simple_cnn"
ADVERSARIAL_METHODS = ("none", "fgsm", "pgd")
SCHEDULES = ("step", "cosine", "onecycle", "triangle")
FLIPS = ("random", "alternating", "none")
PAD_MODES = ("zeros", "reflect")
EMA_EVERY = 5                        # steps between two updates of the weight average

# What each recipe sets (a field given explicitly wins); what is not here comes from defaults_for(model).
RECIPES = {
    "standard": dict(batch_size=128, momentum=0.9, nesterov=False, label_smoothing=0.0, val_split=5000,
                     flip="random", translate=4, pad_mode="zeros", ema=0.0, tta="none", whiten=False,
                     bias_lr_scale=1.0),
    "fast": dict(model="fast_cnn", epochs=8, batch_size=256, lr=1.0, momentum=0.85, nesterov=True,
                 weight_decay=5e-4, schedule="triangle", label_smoothing=0.2, val_split=0,
                 flip="alternating", translate=2, pad_mode="reflect", ema=0.99, tta="flip-translate",
                 whiten=True, bias_lr_scale=4.0),
}


# What each recipe gave when measured (README: two seeds, 2 CPU cores): the help text quotes it.
RECIPE_RESULTS = {
    "fast": "86% test accuracy in about 13 minutes on 2 CPU cores",
    "standard": "simple_cnn: 79% test accuracy in about 15 minutes on 2 CPU cores",
}


@dataclass
class TrainConfig:
    model: str = None                # default: fast_cnn (recipe fast), simple_cnn (recipe standard)
    data: str = None
    recipe: str = None               # fast | standard; default: fast unless a model is named
    epochs: int = None               # default depends on the recipe and model (see defaults_for)
    batch_size: int = None
    optimizer: str = "sgd"
    lr: float = None
    momentum: float = None
    nesterov: bool = None
    weight_decay: float = None
    schedule: str = None             # step | cosine | onecycle | triangle
    label_smoothing: float = None
    augment: bool = True             # False: no flips, no translations
    flip: str = None                 # random | alternating | none
    translate: int = None            # random shifts of up to this many pixels (a padded random crop)
    pad_mode: str = None             # zeros | reflect: what fills the border a shift uncovers
    ema: float = None                # decay of the weight average evaluated and saved (0: none)
    tta: str = None                  # test-time augmentation: none | flip | flip-translate
    whiten: bool = None              # set the first conv by patch whitening (fast_cnn) and freeze it
    bias_lr_scale: float = None      # biases and batchnorm shifts train at lr * this
    val_split: int = None
    subset: int = None
    device: str = "cpu"
    seed: int = 0
    out: str = "runs/run"
    resume: bool = False
    progress: bool = True
    check_finite: bool = True
    max_minutes: float = None        # wall-clock cap: stop, checkpoint and test when it is reached
    adversarial: str = "none"        # none | fgsm | pgd: train on adversarial examples of each batch
    adv_eps: float = 8 / 255         # their L-inf budget, in [0, 1] pixels
    adv_steps: int = 7               # PGD steps
    l1: float = 0.0                  # loss += l1 * sum |w| over the weights (no biases, no batchnorm)
    l2: float = 0.0                  # loss += l2 * sum w^2 over the same weights (see regularisation)
    max_norm: float = None           # after each step, every unit's weight vector is scaled back to norm <= c
    init_from: str = None            # fine-tuning: start from this checkpoint's weights (finetune)
    freeze: list = field(default_factory=list)   # fine-tuning: glob patterns of parameters left untrained
    extra: dict = field(default_factory=dict)


def defaults_for(model):
    """Per-model defaults: the ResNet paper's recipe for ResNets, a short one-cycle run for the rest.

    ResNets (He et al. 2016, sec. 4.2): SGD, momentum 0.9, weight decay 1e-4,
    batch 128, lr 0.1 divided by 10 at 50% and 75% of training (the paper:
    32k and 48k of 64k iterations, ~182 epochs on 45k images), flip and
    4-pixel-padded random crops. That is hours on a GPU and days on a CPU.
    """
    if model.startswith("resnet"):
        return dict(epochs=182, lr=0.1, weight_decay=1e-4, schedule="step")
    return dict(epochs=15, lr=0.05, weight_decay=5e-4, schedule="onecycle")


def recipe_model(recipe):
    """The model a recipe trains when no ``--model`` is given (``recipe=None``: the fast recipe's)."""
    return RECIPES[recipe or "fast"].get("model", DEFAULT_MODEL)


def complete_config(cfg):
    """Fill the fields left as None from the recipe and the model's defaults; check every value."""
    if cfg.recipe is None:
        cfg.recipe = "fast" if cfg.model is None else "standard"
    if cfg.recipe not in RECIPES:
        raise TrainingError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    for k, v in RECIPES[cfg.recipe].items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    if cfg.model is None:
        cfg.model = recipe_model(cfg.recipe)
    if cfg.model not in MODELS:
        raise TrainingError(f"--model {cfg.model!r}: unknown model; choose one of: {', '.join(MODELS)}")
    for k, v in defaults_for(cfg.model).items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    for name, allowed in (("schedule", SCHEDULES), ("flip", FLIPS), ("pad_mode", PAD_MODES), ("tta", TTA_MODES),
                          ("adversarial", ADVERSARIAL_METHODS)):
        if getattr(cfg, name) not in allowed:
            raise TrainingError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                f"got {getattr(cfg, name)!r}")
    if isinstance(cfg.translate, bool) or not isinstance(cfg.translate, int) or not 0 <= cfg.translate < 16:
        raise TrainingError(f"--translate must be a whole number of pixels in 0..15, got {cfg.translate!r}")
    if not isinstance(cfg.ema, (int, float)) or isinstance(cfg.ema, bool) or not 0 <= cfg.ema < 1:
        raise TrainingError(f"--ema must be a decay in [0, 1) (0: no average), got {cfg.ema!r}")
    if not isinstance(cfg.bias_lr_scale, (int, float)) or not 0 < cfg.bias_lr_scale < float("inf"):
        raise TrainingError(f"--bias-lr-scale must be a positive number, got {cfg.bias_lr_scale!r}")
    cfg.whiten, cfg.nesterov = bool(cfg.whiten), bool(cfg.nesterov)
    for name in ("epochs", "batch_size", "lr"):
        if not getattr(cfg, name) > 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    for name in ("momentum", "weight_decay", "seed"):
        if not getattr(cfg, name) >= 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.nesterov and cfg.momentum <= 0:
        raise TrainingError("--nesterov needs --momentum > 0")
    if not 0.0 <= cfg.label_smoothing <= 1.0:
        raise TrainingError(f"--label-smoothing must be in [0, 1], got {cfg.label_smoothing}")
    if cfg.val_split < 0:
        raise TrainingError(f"--val-split must be >= 0, got {cfg.val_split}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise TrainingError(f"--max-minutes must be positive, got {cfg.max_minutes}")
    if not 0.0 < cfg.adv_eps <= 1.0:
        raise TrainingError(f"--adv-eps must be in (0, 1] (pixels are in [0, 1]; 8/255 is usual), "
                            f"got {cfg.adv_eps}")
    if not cfg.adv_steps >= 1:
        raise TrainingError(f"--adv-steps must be >= 1, got {cfg.adv_steps}")
    for name in ("l1", "l2"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                or value == float("inf"):
            raise TrainingError(f"--{name} must be a number >= 0 (the penalty's weight), got {value!r}")
    if cfg.max_norm is not None and (isinstance(cfg.max_norm, bool) or not isinstance(cfg.max_norm, (int, float))
                                     or not 0 < cfg.max_norm < float("inf")):
        raise TrainingError(f"--max-norm must be a positive number (the largest norm of a unit's weights), "
                            f"got {cfg.max_norm!r}")
    if isinstance(cfg.freeze, str):
        cfg.freeze = [cfg.freeze]
    cfg.freeze = [str(p) for p in (cfg.freeze or [])]       # a list, as the checkpoint's JSON holds it
    if cfg.init_from is not None:
        cfg.init_from = str(cfg.init_from)
    return cfg


def param_groups(model, weight_decay, lr=None, bias_lr_scale=1.0):
    """Weight decay on conv/linear weights only, none on biases and batchnorm parameters (1-D).

    With ``lr`` given, the weights get ``lr`` and the biases ``lr * bias_lr_scale``.
    Frozen parameters (``requires_grad=False``, fine-tuning) are left out of the optimizer.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        groups[0]["lr"], groups[1]["lr"] = lr, lr * bias_lr_scale
    return groups


def build_optimizer(model, cfg):
    """The optimizer ``cfg`` names (``sgd`` or ``adam``) over ``model``'s parameters."""
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.bias_lr_scale)
    if cfg.optimizer == "sgd":
        return SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return Adam(groups, lr=cfg.lr)
    raise TrainingError(f"--optimizer must be sgd or adam, got {cfg.optimizer!r}")


def build_scheduler(optimizer, cfg, steps_per_epoch):
    """A per-step schedule over ``epochs * steps_per_epoch`` steps."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        return MultiStepLR(optimizer, milestones=[total // 2, (total * 3) // 4], gamma=0.1)
    if cfg.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total)
    peaks = [group["lr"] for group in optimizer.param_groups]
    if cfg.schedule == "triangle":
        # Linear up from peak/5 to the peak at 25% of the steps, then linear down to peak/100
        # (the fast recipes' short triangle); momentum stays at --momentum.
        return OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=0.25, anneal_strategy="linear",
                          cycle_momentum=False, div_factor=5.0, final_div_factor=20.0)
    # As in PyTorch (and Smith's one-cycle recipe), momentum cycles 0.95 -> 0.85 -> 0.95
    # against the learning rate; --momentum applies to the step and cosine schedules.
    return OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=0.25)
