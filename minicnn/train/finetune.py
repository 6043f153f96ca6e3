"""Fine-tuning: start from a trained network, freeze some of it, give it a new head.

``minicnn train --init-from ckpt.npz --freeze PATTERN`` does, in this order:

1. ``head_keys(model_name, num_classes)``: the head is every entry of the
   network's ``state_dict`` whose shape depends on the number of classes
   (found by building the model for ``n`` and ``n + 1`` classes and comparing):
   the last linear layer (``fc.weight``, ``fc.bias``; ``13.weight`` in
   simple_cnn), or allconv's last 1x1 convolution.
2. ``init_from_checkpoint``: every other entry (weights, biases, batchnorm
   parameters and running statistics) is copied from the checkpoint. The head
   is copied too when the checkpoint was trained on the same class list;
   otherwise (another number of classes, or other class names) it keeps its
   fresh initialisation (He normal, zero bias). The checkpoint must hold the
   same architecture: otherwise the error names the first mismatched key and
   both shapes.
3. ``freeze(model, patterns, head)``: parameters whose name matches a pattern
   get ``requires_grad = False``; the optimizer is then built over the others
   only (``minicnn.train.param_groups`` leaves frozen ones out).

How patterns match (``match_patterns``): names are those of
``model.named_parameters()`` for the network itself (``conv1.weight``,
``layer1.0.bn1.bias``, ``13.weight``; no ``net.`` prefix, which only
``load_model``'s wrapper adds). A pattern is a shell-style glob
(``fnmatch``: ``*`` matches any characters *including dots*, ``?`` one
character, ``[abc]`` a set), matched against the whole name, case-sensitively.
A pattern also matches every parameter *inside* a module of that name
(``layer1`` is ``layer1.*``). The word ``backbone`` means every parameter
except the head's (the usual "freeze all but the head"). Patterns are
combined with "or"; a pattern that matches no parameter is an error that
lists the names.

Batchnorm in frozen layers (``keep_frozen_statistics``): a batchnorm layer
whose parameters are all frozen runs in eval mode during training, so it
normalises with its running statistics and does not update them: the frozen
part of the network computes exactly the function it computed when it was
trained. (In training mode it would normalise each batch with that batch's
statistics and keep moving its running averages towards the new data, so a
"frozen" layer would still change.) A batchnorm layer without parameters
(``affine=False``) follows the model's mode. ``fit`` applies this rule at the
start of every epoch, right after ``model.train()``.
"""
import fnmatch

from ..checkpoint import describe_mismatch
from ..errors import CheckpointError, TrainingError
from ..models import get_model
from ..nn import BatchNorm1d, BatchNorm2d

__all__ = ["BACKBONE", "head_keys", "check_architecture", "match_patterns", "freeze", "frozen_batchnorm_layers",
           "keep_frozen_statistics", "init_from_checkpoint"]

BACKBONE = "backbone"      # the --freeze word for "every parameter except the head's"


def head_keys(model_name, num_classes):
    """The ``state_dict`` keys of ``model_name``'s head: those whose shape depends on the number of classes.

    ``head_keys("resnet20", 10) == ["fc.weight", "fc.bias"]``.
    """
    a = get_model(model_name, num_classes=num_classes).state_dict()
    b = get_model(model_name, num_classes=num_classes + 1).state_dict()
    return [k for k in a if tuple(a[k].shape) != tuple(b[k].shape)]


def _matches(name, pattern):
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def match_patterns(names, patterns, head=()):
    """The names that match any of ``patterns`` (see the module docstring), in the order of ``names``.

    ``head``: the head's names, for the word ``backbone``. Raises
    TrainingError naming a pattern that matches nothing, with the names it
    could have matched.
    """
    names = list(names)
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = set()
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TrainingError(f"--freeze: a pattern must be a non-empty string, got {pattern!r}")
        if pattern == BACKBONE:
            hit = [n for n in names if n not in set(head)]
        else:
            hit = [n for n in names if _matches(n, pattern)]
        if not hit:
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise TrainingError(
                f"--freeze {pattern!r} matches no parameter. Patterns are globs over parameter names "
                f"('*' also matches dots; a module's name matches all its parameters; '{BACKBONE}' is "
                f"everything but the head). The parameters are: {shown}")
        chosen.update(hit)
    return [n for n in names if n in chosen]


def freeze(model, patterns, head=()):
    """Set ``requires_grad = False`` on the parameters matching ``patterns`` (a glob or a list); returns their names.

    The other parameters are left as they are. Build the optimizer after
    this (frozen parameters are then left out of it).
    """
    params = dict(model.named_parameters())
    names = match_patterns(params, patterns, head)
    for n in names:
        params[n].requires_grad = False
    return names


def frozen_batchnorm_layers(model):
    """The (name, layer) of every batchnorm layer that has parameters and all of them frozen."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (BatchNorm1d, BatchNorm2d)):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                out.append((name, m))
    return out


def keep_frozen_statistics(model):
    """Put every batchnorm layer whose parameters are all frozen in eval mode (see the module docstring).

    Call it after ``model.train()``; it changes nothing in a model with no
    frozen batchnorm layer. Returns the model.
    """
    for _, m in frozen_batchnorm_layers(model):
        m.eval()
    return model


def check_architecture(model_name, ckpt, path):
    """Refuse a checkpoint that is not ``model_name`` (naming the first mismatched key and shapes); returns its class count."""
    n_saved = int(ckpt.get("num_classes", len(ckpt.get("classes", [])) or 10))
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"--init-from {path} is not a minicnn checkpoint (no model weights in it)")
    mismatch = describe_mismatch(get_model(model_name, num_classes=n_saved).state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"--init-from {path} holds a {ckpt.get('model_name')} checkpoint, which does not fit --model "
            f"{model_name}: {mismatch}. Use --model {ckpt.get('model_name')} (or leave --model out).")
    return n_saved


def init_from_checkpoint(model, model_name, ckpt, path, classes):
    """Copy a checkpoint's weights into ``model`` (built for ``classes``), all but a head that no longer fits.

    ``ckpt`` is ``load_checkpoint(path)``. The head (``head_keys``) is
    loaded only when the checkpoint was trained on the same class list;
    otherwise it keeps the model's fresh initialisation. Returns
    ``(loaded, reinitialised)``: two lists of ``state_dict`` keys.
    Raises CheckpointError naming the first mismatched key and shapes when
    the checkpoint holds another architecture.
    """
    saved_classes = [str(c) for c in ckpt.get("classes", [])]
    n_saved = check_architecture(model_name, ckpt, path)
    state = ckpt["model"]
    same_classes = saved_classes == [str(c) for c in classes]
    head = [] if same_classes else head_keys(model_name, n_saved)
    loaded = {k: v for k, v in state.items() if k not in head}
    model.load_state_dict(loaded, strict=False)
    return list(loaded), head
