"""What every check receives: the model (to copy, never to train), a few batches, the recipe.

``Context`` reads at most ``settings.data_batches`` batches from the
training loader once, keeps them as NumPy arrays (images exactly as the
loader gives them, i.e. as the model will see them), and hands each check
what it needs: a fresh deep copy of the model (``ctx.copy()``: checks train
copies, never the caller's model), Tensors of the first ``n`` samples on the
model's device, the recipe's optimizer, loss and learning rate.

``train_loader`` may be a ``minicnn.data.DataLoader``, or any iterable of
``(images, labels)`` batches (Tensors or arrays; images (N, C, H, W)
floating, labels (N,) integers), for example a list of pairs. When it has
them, ``train_loader.dataset`` (its length and labels), ``.batch_size``
and ``.transform`` (augmentation) are read too.
"""
import copy
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from .. import nn
from ..analysis import model_device_dtype
from ..autograd import Tensor, no_grad
from ..backend import to_device

__all__ = ["Settings", "Context"]


@dataclass
class Settings:
    """Sizes of the checks: small by default, so ``examine`` takes seconds on a small model.

    data_batches: batches read from the training loader (the data check and
        the learning-rate test use them all).
    max_samples: at most this many samples are kept from those batches.
    duplicate_sample: images of each split hashed by the train/test overlap test.
    gradcheck_samples: batch size of the gradient check (float64).
    gradcheck_directions: random directions per tensor in the directional check.
    gradcheck_max_elements: below this many input elements, the input is
        also checked element by element with ``minicnn.gradcheck``.
    depth_samples: batch for the activation statistics and the update ratio.
    independence_samples: batch for the batch-independence check.
    overfit_samples, overfit_steps: the batch to overfit and the step budget.
    lr_steps, lr_min, lr_max, lr_stop_factor, lr_batch: the range test
        (exponential lr from lr_min to lr_max over lr_steps steps of lr_batch
        samples, stopped when the smoothed loss exceeds lr_stop_factor x its minimum);
        lr_batch None (the default) is the recipe's batch size, as training uses.
    seed: seeds every random draw of the checks.
    """

    data_batches: int = 8
    max_samples: int = 512
    duplicate_sample: int = 1000
    gradcheck_samples: int = 2
    gradcheck_directions: int = 2
    gradcheck_max_elements: int = 500
    depth_samples: int = 32
    independence_samples: int = 4
    overfit_samples: int = 16
    overfit_steps: int = 200
    lr_steps: int = 100
    lr_min: float = 1e-5
    lr_max: float = 10.0
    lr_stop_factor: float = 4.0
    lr_batch: int = None
    seed: int = 0


def _to_numpy(v):
    data = v.data if isinstance(v, Tensor) else v
    return np.asarray(to_device(data, "cpu")) if hasattr(data, "shape") else np.asarray(data)


class Context:
    """The model, the data read from the loader, and the recipe, as the checks see them."""

    def __init__(self, model, train_loader, optimizer_factory=None, lr=None, loss_fn=None, test_loader=None,
                 num_classes=None, train_size=None, batch_size=None, augment=None, settings=None, out=None,
                 start_lr=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"examine: model must be a minicnn nn.Module, got {type(model).__name__}")
        self.model = model
        self.settings = settings or Settings()
        self.train_loader, self.test_loader = train_loader, test_loader
        self.out = out
        self.augment = augment
        self.device, self.dtype = model_device_dtype(model)
        self.loss_fn = loss_fn or F.cross_entropy
        if optimizer_factory is None:
            chosen = 0.01 if lr is None else lr
            from ..optim import SGD

            def optimizer_factory(params, _lr=chosen):
                return SGD(params, lr=_lr, momentum=0.9)
        elif not callable(optimizer_factory):
            raise TypeError(f"examine: optimizer_factory must be a callable params -> optimizer, "
                            f"got {optimizer_factory!r}")
        self.optimizer_factory = optimizer_factory
        self._read_batches(train_loader, batch_size)
        self.train_size = train_size if train_size is not None else self._dataset_len(train_loader)
        probe = self.optimizer(self.copy())
        self.lr = float(probe.param_groups[0]["lr"])
        self.start_lr = self.lr if start_lr is None else min(float(start_lr), self.lr)   # a warm-up's first rate
        self.weight_decay = max(float(g.get("weight_decay", 0) or 0) for g in probe.param_groups)
        self.num_classes = num_classes or self._count_classes()
        self.results = []          # the results of the checks run so far (``examine`` appends to it)

    # ---- data ------------------------------------------------------------
    def _read_batches(self, loader, batch_size):
        if loader is None:
            raise ValueError("examine: train_loader is required (an iterable of (images, labels) batches)")
        images, labels, first = [], [], None
        kept = 0
        for k, batch in enumerate(loader):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(f"examine: train_loader must yield (images, labels) pairs, got "
                                 f"{type(batch).__name__}")
            x, y = _to_numpy(batch[0]), _to_numpy(batch[1]).reshape(-1)
            if x.ndim < 2 or x.shape[0] != y.shape[0]:
                raise ValueError(f"examine: a batch has images of shape {x.shape} and labels of shape "
                                 f"{y.shape}; expected (N, C, H, W) and (N,)")
            first = first or x.shape[0]
            images.append(x)
            labels.append(y)
            kept += x.shape[0]
            if k + 1 >= self.settings.data_batches or kept >= self.settings.max_samples:
                break
        if not images:
            raise ValueError("examine: train_loader gave no batch")
        self.images = np.concatenate(images)[:self.settings.max_samples]
        self.labels = np.concatenate(labels)[:self.settings.max_samples]
        self.batch_size = int(batch_size or getattr(loader, "batch_size", None) or first)

    @staticmethod
    def _dataset_len(loader):
        ds = getattr(loader, "dataset", None)
        try:
            return len(ds) if ds is not None else None
        except TypeError:
            return None

    def _count_classes(self):
        with no_grad():
            out = self.copy(train=False)(self.tensors(min(2, len(self.images)))[0])
        if out.ndim != 2:
            raise ValueError(f"examine: the model must return logits of shape (N, classes), got shape "
                             f"{tuple(out.shape)}")
        return int(out.shape[1])

    def tensors(self, n=None, start=0, dtype=None, device=None):
        """(images, labels) Tensors of samples start .. start+n (wrapping around) on the model's device."""
        total = len(self.images)
        n = total if n is None else n
        idx = (start + np.arange(n)) % total
        x = self.images[idx].astype(dtype or self.dtype)
        y = self.labels[idx].astype(np.int64)
        device = device or self.device
        return Tensor(to_device(x, device)), Tensor(to_device(y, device))

    # ---- model and recipe ------------------------------------------------
    def copy(self, train=True, dropout=True, dtype=None, device=None):
        """A deep copy of the caller's model in train (or eval) mode; ``dropout=False`` sets every p to 0."""
        m = copy.deepcopy(self.model)
        if device is not None:
            m.to(device)
        if dtype is not None:
            m.double() if np.dtype(dtype) == np.float64 else m.float()
        m.train(train)
        if not dropout:
            for mod in m.modules():
                if isinstance(mod, nn.Dropout):
                    mod.p = 0.0
        return m

    def optimizer(self, model):
        """The recipe's optimizer over ``model``'s parameters.

        The factory gets the list of the parameters that require a gradient; a
        factory written for the model itself (``lambda m: SGD(m.parameters(), ...)``)
        gets the model when the list has no ``.parameters``.
        """
        try:
            return self.optimizer_factory([p for p in model.parameters() if p.requires_grad])
        except AttributeError as e:
            if "parameters" not in str(e):
                raise
            return self.optimizer_factory(model)

    def loss(self, logits, labels):
        return self.loss_fn(logits, labels)

    def first_layer_normalize(self):
        """The model's first layer when it is an ``nn.Normalize`` (models from ``load_model``), else None."""
        for _, m in self.model.named_modules():
            if not any(True for _ in m.children()):
                return m if isinstance(m, nn.Normalize) else None
        return None
