"""Learning-rate schedules: set ``group['lr']`` of an optimizer as training goes on.

Usage (one ``step()`` per epoch for StepLR / MultiStepLR / CosineAnnealingLR,
per batch for OneCycleLR)::

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[100, 150], gamma=0.1)
    for epoch in range(epochs):
        train_one_epoch(model, opt)
        sched.step()

Each schedule is a closed-form function lr(t) of its step count t
(``last_epoch``) and each group's base lr (the lr the group had when the
first schedule was attached, kept as ``group['initial_lr']``). The
sequences equal PyTorch's. Construction applies lr(0); every ``step()``
advances t by one and applies lr(t). ``get_last_lr()`` returns the lrs
last applied; ``state_dict()`` / ``load_state_dict()`` save and restore
the schedule (resume: rebuild the optimizer and scheduler, then load both).
"""
import math
from bisect import bisect_right

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "OneCycleLR", "LinearWarmup"]


class LRScheduler:
    """Base class: subclasses implement ``lr_at(t)``, the list of lrs (one per group) at step t."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a minicnn Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def lr_at(self, t):
        raise NotImplementedError

    def step(self):
        """Advance one step (epoch or batch, as the schedule is meant) and set the new lrs."""
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        lrs = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The learning rates (one per parameter group) set by the last ``step()``."""
        return list(self._last_lr)

    def state_dict(self):
        """The schedule's settings and position as plain data (saveable with ``minicnn.save``)."""
        out = {}
        for key, value in self.__dict__.items():
            if key == "optimizer":
                continue
            out[key] = value.state_dict() if isinstance(value, LRScheduler) else value
        return out

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned (the optimizer's own state is loaded separately)."""
        for key, value in state_dict.items():
            current = self.__dict__.get(key)
            if isinstance(current, LRScheduler):
                current.load_state_dict(value)
            else:
                self.__dict__[key] = list(value) if isinstance(value, tuple) else value

    def __repr__(self):
        settings = {k: v for k, v in self.__dict__.items()
                    if k not in ("optimizer", "base_lrs", "_last_lr") and not isinstance(v, LRScheduler)}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in settings.items())})"


def _check_positive_int(sched, name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{sched}: {name} must be a positive int, got {value!r}")


class StepLR(LRScheduler):
    """lr(t) = base_lr * gamma ** floor(t / step_size): decay by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        _check_positive_int("StepLR", "step_size", step_size)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return [base * self.gamma ** (t // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr(t) = base_lr * gamma ** (number of milestones <= t).

    ResNet on CIFAR (He et al. 2016): lr 0.1, ``milestones=[100, 150]`` epochs,
    ``gamma=0.1``.
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        milestones = sorted(milestones)
        for m in milestones:
            if not isinstance(m, int) or isinstance(m, bool) or m < 0:
                raise ValueError(f"MultiStepLR: milestones must be non-negative ints, got {milestones!r}")
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return [base * self.gamma ** bisect_right(self.milestones, t) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2.

    Half a cosine from base_lr at t = 0 down to eta_min at t = T_max
    (Loshchilov & Hutter 2017, without restarts). Past T_max it rises again,
    as PyTorch's does.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        _check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, t):
        c = (1 + math.cos(math.pi * t / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


def _anneal(strategy, start, end, pct):
    """Go from ``start`` (pct = 0) to ``end`` (pct = 1) along a half cosine or a line."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2018) in PyTorch's two-phase form; step it once per batch.

    With initial_lr = max_lr / div_factor and min_lr = initial_lr / final_div_factor:

    - phase 1, steps 0 .. p = pct_start * total_steps - 1: lr anneals from
      initial_lr up to max_lr;
    - phase 2, steps p .. total_steps - 1: lr anneals from max_lr down to min_lr;

    where "anneal" from a to b at fraction f of the phase is
    b + (a - b) * (1 + cos(pi f)) / 2 (``anneal_strategy='cos'``) or
    a + (b - a) f (``'linear'``). With ``cycle_momentum`` (the default, as
    PyTorch), momentum (SGD) or beta1 (Adam) moves the opposite way, from
    ``max_momentum`` down to ``base_momentum`` and back.

    ``max_lr`` is a number or one per group. Give ``total_steps``, or
    ``epochs`` and ``steps_per_epoch``.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"OneCycleLR: expected a minicnn Optimizer, got {type(optimizer).__name__}")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or both epochs and steps_per_epoch")
            _check_positive_int("OneCycleLR", "epochs", epochs)
            _check_positive_int("OneCycleLR", "steps_per_epoch", steps_per_epoch)
            total_steps = epochs * steps_per_epoch
        _check_positive_int("OneCycleLR", "total_steps", total_steps)
        if not (isinstance(pct_start, (int, float)) and 0 <= pct_start <= 1):
            raise ValueError(f"OneCycleLR: pct_start must be a number in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"OneCycleLR: got {len(max_lrs)} max_lr values for {len(groups)} parameter groups")
        self.total_steps = total_steps
        self.anneal_strategy = anneal_strategy
        self.max_lrs = max_lrs
        self.min_lrs = [m / div_factor / final_div_factor for m in max_lrs]
        # Phase boundaries (as PyTorch: the peak is at step pct_start * total_steps - 1).
        self.phase_ends = [float(pct_start * total_steps) - 1, float(total_steps - 1)]
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        if self.cycle_momentum:
            if "momentum" in optimizer.defaults:
                self._momentum_key = "momentum"
            elif "betas" in optimizer.defaults:
                self._momentum_key = "betas"
            else:
                raise ValueError(f"OneCycleLR: cycle_momentum=True but {type(optimizer).__name__} has "
                                 f"neither 'momentum' nor 'betas'; pass cycle_momentum=False")
        for group, m in zip(groups, max_lrs):
            group["initial_lr"] = m / div_factor   # the schedule's own start, replacing any earlier
        super().__init__(optimizer)

    def lr_at(self, t):
        return [self._at(t, base, peak, low)[0]
                for base, peak, low in zip(self.base_lrs, self.max_lrs, self.min_lrs)]

    def _at(self, t, base, peak, low):
        """(lr, momentum) at step t for one group."""
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times, but total_steps is {self.total_steps}; "
                             f"make total_steps (or epochs * steps_per_epoch) cover the whole run")
        end1, end2 = self.phase_ends
        if t <= end1:
            pct = t / end1 if end1 > 0 else 1.0
            lr_ends, mom_ends = (base, peak), (self.max_momentum, self.base_momentum)
        else:
            pct = (t - end1) / (end2 - end1)
            lr_ends, mom_ends = (peak, low), (self.base_momentum, self.max_momentum)
        return (_anneal(self.anneal_strategy, *lr_ends, pct),
                _anneal(self.anneal_strategy, *mom_ends, pct))

    def _apply(self):
        super()._apply()
        if not self.cycle_momentum:
            return
        for group, base, peak, low in zip(self.optimizer.param_groups, self.base_lrs, self.max_lrs, self.min_lrs):
            momentum = self._at(self.last_epoch, base, peak, low)[1]
            if self._momentum_key == "betas":
                group["betas"] = (momentum,) + tuple(group["betas"][1:])
            else:
                group["momentum"] = momentum


class LinearWarmup(LRScheduler):
    """Linear warmup for ``warmup_steps`` steps, then hand over to ``after`` (another schedule).

    lr(t) = base_lr * (start_factor + (1 - start_factor) * t / warmup_steps) for t < warmup_steps;
    from then on the lrs of ``after`` at its own step t - warmup_steps
    (base_lr if ``after`` is None). Build ``after`` on the same optimizer
    first, then wrap it; call only the wrapper's ``step()``. Equals PyTorch's
    ``SequentialLR([LinearLR(opt, start_factor, 1.0, warmup_steps), after], [warmup_steps])``.
    """

    def __init__(self, optimizer, warmup_steps, after=None, start_factor=0.1):
        _check_positive_int("LinearWarmup", "warmup_steps", warmup_steps)
        if not (isinstance(start_factor, (int, float)) and 0 <= start_factor <= 1):
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor!r}")
        if after is not None and (not isinstance(after, LRScheduler) or after.optimizer is not optimizer):
            raise ValueError("LinearWarmup: after must be a scheduler built on the same optimizer")
        self.warmup_steps, self.after, self.start_factor = warmup_steps, after, start_factor
        super().__init__(optimizer)

    def step(self):
        self.last_epoch += 1
        t = self.last_epoch
        if self.after is not None and t > self.warmup_steps:
            self.after.step()          # the schedule after warmup, one step further
            self._last_lr = self.after.get_last_lr()
        else:
            self._apply()

    def lr_at(self, t):
        if t < self.warmup_steps:
            f = self.start_factor + (1 - self.start_factor) * t / self.warmup_steps
            return [base * f for base in self.base_lrs]
        if self.after is not None:      # t == warmup_steps: the other schedule's step 0
            return self.after.lr_at(self.after.last_epoch)
        return list(self.base_lrs)
