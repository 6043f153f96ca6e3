"""``Optimizer``: the base class that holds parameter groups and per-parameter state.

An optimizer updates parameters from their gradients::

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        opt.zero_grad()                 # forget last step's gradients
        loss_fn(model(x), y).backward() # fill p.grad
        opt.step()                      # p.data -= update(p.grad, state)

**Parameter groups.** ``params`` is either an iterable of Parameters (one
group) or a list of dicts, each a group with its own options, e.g. no
weight decay on biases and batchnorm::

    decay    = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0}],
                    lr=0.1, momentum=0.9, weight_decay=5e-4)

Options missing from a group take the constructor's values. Schedulers
change ``group['lr']``.

**State** (momentum buffers, Adam's moments) lives in ``self.state[param]``,
on the parameter's device. ``state_dict()`` names each parameter by its
index in the groups (0, 1, ... in order), so it can be saved with
``minicnn.save`` and loaded into a new optimizer built the same way.
"""
from ..autograd import Tensor, enable_grad
from ..backend import device_of, get_array_module, to_device

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: subclasses implement ``_update(p, grad, state, group)`` (or ``step``).

    Args:
        params: an iterable of Parameters, or a list of dicts with a
            ``'params'`` key and per-group options.
        defaults: the options (lr, ...) a group gets when it does not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}           # Parameter -> dict of state arrays / numbers
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or of dicts, "
                            f"got a single Tensor; wrap it in a list: [param]")
        if isinstance(params, dict):
            params = [params]
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list "
                             f"(did the model register its Parameters?)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------ groups
    def add_param_group(self, group):
        """Add a group (a dict with ``'params'`` and optional options) to train further parameters."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}.add_param_group: a group must be a dict with a 'params' key, got {group!r}")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: can only optimize Tensors, but parameter {i} of a group is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can only optimize leaf Tensors (Parameters), but parameter {i} "
                                 f"was computed by an op")
            if p.dtype.kind != "f":
                raise TypeError(f"{name}: parameter {i} must be floating, got dtype {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears more than once in the parameter groups")
        group["params"] = params
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{name}: unknown option(s) in a parameter group: {', '.join(sorted(unknown))}; "
                             f"valid options are {', '.join(self.defaults)}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate_group(group)
        self.param_groups.append(group)

    def _validate_group(self, group):
        """Raise ValueError for a bad option (subclasses check theirs; lr here)."""
        lr = group["lr"]
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate lr={lr!r}; it must be a number >= 0")

    @staticmethod
    def _check_number(opt, name, value, low=0.0, high=None, high_open=False):
        """Shared check: ``value`` is a real number in [low, high] (or [low, high))."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            rng = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
            raise ValueError(f"{opt}: invalid {name}={value!r}; it must be a number {rng}")

    # -------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Set every parameter's ``.grad`` to None (the next backward starts from scratch)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = p.xp.zeros_like(p.data)

    def step(self, closure=None):
        """Update every parameter that has a gradient (those whose ``.grad`` is None are skipped).

        ``closure``, if given, is called first (with grad enabled) and should
        recompute the loss and its gradients; its return value is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                self._follow_device(p, state)
                self._update(p, p.grad, state, group)
        return loss

    def _update(self, p, grad, state, group):
        raise NotImplementedError(f"{type(self).__name__} must implement _update or step")

    @staticmethod
    def _follow_device(p, state):
        """Move state arrays to the parameter's device (after ``model.to(...)``)."""
        dev = p.device
        for key, value in state.items():
            if hasattr(value, "shape") and hasattr(value, "dtype") and device_of(value) != dev:
                state[key] = to_device(value, dev)

    # ------------------------------------------------------- checkpoints
    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """The optimizer as plain data: ``{'state': {...}, 'param_groups': [...]}``.

        ``state`` maps a parameter's index (as a string: ``'0'``, ``'1'``, ...
        counting through the groups in order) to a copy of its state (arrays
        and numbers); each group lists its options and ``'params'``, the
        indices of its parameters. Saveable with ``minicnn.save``.
        """
        index = {id(p): i for i, p in enumerate(self._indexed_params())}
        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                state[str(index[id(p)])] = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in s.items()}
        groups = []
        for group in self.param_groups:
            g = {k: (list(v) if isinstance(v, list) else v) for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by ``state_dict()`` into an optimizer built the same way.

        The groups must have the same number of parameters with the same
        shapes. State arrays are copied onto each parameter's device and
        floating ones cast to its dtype.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' "
                             f"(from Optimizer.state_dict()), got {type(state_dict).__name__}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter "
                             f"group(s) but this optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} has {len(saved['params'])} "
                                 f"parameter(s) in the saved state but {len(group['params'])} here; "
                                 f"build the optimizer over the same model and groups")
        params = self._indexed_params()
        saved_state = {int(k): v for k, v in state_dict["state"].items()}
        for idx, s in saved_state.items():
            if not 0 <= idx < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {idx}, but there are only "
                                 f"{len(params)} parameters")
            p = params[idx]
            for key, value in s.items():
                if hasattr(value, "shape") and tuple(value.shape) not in ((), tuple(p.shape)):
                    raise ValueError(f"{name}.load_state_dict: state '{key}' of parameter {idx} has shape "
                                     f"{tuple(value.shape)} but the parameter has shape {tuple(p.shape)}")
        # All checked: now copy.
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) and key == "betas" else value
        self.state = {}
        for idx, s in saved_state.items():
            p = params[idx]
            new = {}
            for key, value in s.items():
                if hasattr(value, "shape") and hasattr(value, "dtype"):
                    xp = get_array_module(p.data)
                    value = xp.array(to_device(value, p.device),
                                     dtype=p.dtype if value.dtype.kind == "f" else value.dtype)
                new[key] = value
            self.state[p] = new

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
