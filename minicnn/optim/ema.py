"""``EMA``: an exponential moving average of a model's weights, usable with any optimizer.

The optimizer moves the weights w_t; the average follows them slowly::

    avg <- d * avg + (1 - d) * w          (every ``every`` steps)

Near the end of training SGD's iterates jitter around a minimum; their
average sits closer to its centre and usually tests a little better
(Polyak & Juditsky 1992; the fast CIFAR-10 recipes of Page 2018 and Jordan
2024 evaluate such an average). Batchnorm's running statistics are
averaged the same way, so the averaged model is complete.

Usage::

    ema = optim.EMA(model, decay=0.99)
    for x, y in loader:
        ...; optimizer.step(); ema.update()
    with ema.applied():              # evaluate the averaged weights...
        evaluate(model, test_loader)
    ema.copy_to()                    # ...or keep them for good

``decay`` is per step; updating only every k steps uses d**k, the same
average at a k-th of the cost. Early on the average would still remember
the random initial weights, so the decay starts lower:
d_n = min(decay**k, (1 + n) / (10 + n)) at the n-th update.
"""
from contextlib import contextmanager

__all__ = ["EMA"]


class EMA:
    """Keeps ``avg`` (name -> array) of ``model``'s trained parameters and floating buffers.

    Args:
        model: the Module being trained (its arrays are read, never replaced,
            except by ``copy_to`` and inside ``applied()``).
        decay: the per-step factor d in [0, 1).
        every: update the average every this many calls of ``update()``.
    """

    def __init__(self, model, decay=0.99, every=1):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"EMA: decay must be a number in [0, 1), got {decay!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"EMA: every must be a positive int (steps between updates), got {every!r}")
        if not hasattr(model, "named_parameters") or not hasattr(model, "named_buffers"):
            raise TypeError(f"EMA: expected a minicnn Module, got {type(model).__name__}")
        self.model = model
        self.decay = float(decay)
        self.every = every
        self.steps = 0           # update() calls
        self.updates = 0         # times the average moved
        self.avg = {name: t.data.copy() for name, t in self._tracked()}

    def _tracked(self):
        """(name, Tensor) of the trained parameters and the floating buffers.

        Frozen parameters (``requires_grad=False``) do not move, so they are
        left as they are; integer buffers are not averaged.
        """
        params = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        items = params + list(self.model.named_buffers())
        return [(name, t) for name, t in items if t is not None and t.data.dtype.kind == "f"]

    def update(self):
        """Call after every optimizer step: moves the average every ``every`` calls."""
        self.steps += 1
        if self.steps % self.every:
            return
        d = min(self.decay ** self.every, (1 + self.updates) / (10 + self.updates))
        for name, t in self._tracked():
            avg = self.avg[name]
            avg *= d
            avg += (1 - d) * t.data
        self.updates += 1

    def copy_to(self, model=None):
        """Write the averaged values into ``model`` (default: the tracked model)."""
        model = self.model if model is None else model
        tracked = dict(model.named_parameters())
        tracked.update(model.named_buffers())
        for name, avg in self.avg.items():
            if name not in tracked or tracked[name].data.shape != avg.shape:
                raise ValueError(f"EMA.copy_to: the model has no entry {name!r} of shape {avg.shape}")
            tracked[name].data[...] = avg

    @contextmanager
    def applied(self):
        """Inside the block the model holds the averaged values; its own are put back after."""
        saved = {name: t.data.copy() for name, t in self._tracked()}
        self.copy_to()
        try:
            yield self.model
        finally:
            for name, t in self._tracked():
                t.data[...] = saved[name]

    def state_dict(self):
        """The average and the counters, as plain data (saveable with ``minicnn.save``)."""
        return {"decay": self.decay, "every": self.every, "steps": self.steps, "updates": self.updates,
                "avg": {name: a.copy() for name, a in self.avg.items()}}

    def load_state_dict(self, state):
        """Restore ``state_dict()``'s values (the same model built the same way)."""
        avg = state["avg"]
        if set(avg) != set(self.avg):
            raise ValueError(f"EMA.load_state_dict: the saved average has entries {sorted(avg)}, "
                             f"the model {sorted(self.avg)}")
        for name, a in avg.items():
            self.avg[name][...] = a
        self.steps, self.updates = int(state["steps"]), int(state["updates"])

    def __repr__(self):
        return f"EMA(decay={self.decay}, every={self.every}, updates={self.updates})"
