"""``Module`` and ``Parameter``: how layers hold their weights.

A ``Module`` is a callable object that owns:

- **parameters** (``Parameter``: a leaf Tensor with ``requires_grad=True``,
  trained by an optimizer), e.g. a conv's ``weight`` and ``bias``;
- **buffers** (grad-less Tensors saved in checkpoints but never optimised),
  e.g. batchnorm's ``running_mean`` and ``running_var``;
- **sub-modules** (children), e.g. the layers of a ``Sequential``.

Assigning an attribute registers it: ``self.weight = Parameter(...)`` adds
a parameter, ``self.conv = Conv2d(...)`` adds a child. The recursive
methods (``parameters()``, ``state_dict()``, ``train()``, ``to()``, ...)
walk this tree; their dotted names match PyTorch's (``'layer1.0.conv1.weight'``,
``'bn.running_mean'``), so a PyTorch model's weights can be loaded into the
same minicnn architecture.

Writing a layer::

    class Scale(nn.Module):
        '''y = x * s, one learnable scale per channel.'''

        def __init__(self, channels):
            super().__init__()                 # always first
            self.s = nn.Parameter(np.ones((1, channels, 1, 1), dtype=np.float32))

        def forward(self, x):
            return x * self.s

``module(x)`` runs ``forward(x)`` and then any forward hooks (see
``register_forward_hook``), which is how saliency maps and CAM read
intermediate activations without special cases in the layers.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import Tensor
from ..backend import as_array, default_dtype, device_of, to_device

__all__ = ["Parameter", "Module", "RemovableHandle", "IncompatibleKeys"]


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module.

    Always a leaf with ``requires_grad=True`` (pass ``requires_grad=False``
    to freeze it) and a floating dtype. Python floats and lists become the
    default dtype (float32); a NumPy/CuPy array keeps its floating dtype.
    Assigning a Parameter to a Module attribute registers it.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        arr = as_array(data)
        if arr.dtype.kind != "f":
            if arr.dtype.kind in "biu":
                arr = arr.astype(default_dtype())
            else:
                raise TypeError(f"Parameter: data must be numeric, got dtype {arr.dtype}")
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by ``register_forward_hook``; ``handle.remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = "What ``load_state_dict(strict=False)`` skipped: two lists of names."


def _some(names, limit=10):
    """'a, b, c' for an error message, cut after ``limit`` names."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def _raw(value):
    """A Tensor's array, or the array itself."""
    return value.data if isinstance(value, Tensor) else value


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters,
    buffers and sub-modules as attributes, and implement ``forward``.
    ``self.training`` is True after construction and after ``train()``,
    False after ``eval()``; dropout and batchnorm read it.
    """

    def __init__(self):
        # object.__setattr__ bypasses our own __setattr__ (which needs these dicts).
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        """Run ``forward`` and then each forward hook (which may replace the output)."""
        output = self.forward(*args, **kwargs)
        for hook in list(self.__dict__.get("_forward_hooks", {}).values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward of this module.

        ``inputs`` is the tuple of positional arguments. If the hook returns
        something other than None, that becomes the module's output (so a
        hook can edit activations). Returns a handle whose ``remove()``
        unregisters the hook; the handle also works as a context manager::

            feats = {}
            with model.layer3.register_forward_hook(lambda m, i, o: feats.update(layer3=o)):
                model(x)
        """
        if not callable(hook):
            raise TypeError(f"register_forward_hook: hook must be callable, got {type(hook).__name__}")
        hooks = self._forward_hooks
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    # -------------------------------------------------------- registration
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(
                    f"cannot assign {type(value).__name__} '{name}' before Module.__init__() ran: "
                    f"call super().__init__() at the start of {type(self).__name__}.__init__")
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            self._forget(name, keep="_parameters")
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name, keep="_modules")
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter '{name}' of "
                    f"{type(self).__name__}: use a Parameter (or None)")
            params[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else self._as_buffer(name, value)
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to sub-module '{name}' of "
                    f"{type(self).__name__}: use a Module (or None)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep=None):
        """Drop ``name`` from the registries (but ``keep``, so a replaced entry keeps its
        position) and from the plain attributes, before (re-)registering it."""
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg != keep:
                d[reg].pop(name, None)
        d["_non_persistent"].discard(name)
        d.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg in d and name in d[reg]:
                return d[reg][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if name in d.get(reg, ()):
                del d[reg][name]
                d["_non_persistent"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None for an absent one such as ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: '{name}' must be a Parameter or None, "
                            f"got {type(param).__name__}")
        self._check_name("register_parameter", name)
        self._forget(name, keep="_parameters")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Register a buffer: a grad-less Tensor that ``to()``, ``double()`` and
        ``state_dict()`` handle like a parameter but optimizers never see.

        ``tensor`` may be a Tensor, a raw array or None. ``persistent=False``
        leaves it out of ``state_dict()``. Assigning ``self.name = value``
        later replaces the buffer's value.
        """
        self._check_name("register_buffer", name)
        self._forget(name, keep="_buffers")
        self._buffers[name] = None if tensor is None else self._as_buffer(name, tensor)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        """Register ``module`` (or None) as a child called ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: '{name}' must be a Module or None, got {type(module).__name__}")
        self._check_name("add_module", name)
        self._forget(name, keep="_modules")
        self._modules[name] = module

    def _check_name(self, fn, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{fn}: call super().__init__() at the start of "
                                 f"{type(self).__name__}.__init__ first")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{fn}: name must be a non-empty string without '.', got {name!r}")

    @staticmethod
    def _as_buffer(name, value):
        if isinstance(value, Tensor):
            if value.requires_grad:
                raise TypeError(f"buffer '{name}' must not require grad (buffers are never optimised); "
                                f"pass tensor.detach()")
            return value
        return Tensor(as_array(value))

    # --------------------------------------------------------------- walking
    def named_children(self):
        """(name, child) for each direct sub-module, in registration order."""
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ('' ) and every descendant, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            kids = [(f"{name}.{n}" if name else n, m) for n, m in mod.named_children()]
            stack.extend(reversed(kids))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def _named_members(self, registry, recurse=True, prefix="", skip_non_persistent=False):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, mod in mods:
            for name, value in getattr(mod, registry).items():
                if value is None or id(value) in seen:
                    continue
                if skip_non_persistent and name in mod._non_persistent:
                    continue
                seen.add(id(value))
                yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) for every parameter, shared ones once."""
        return self._named_members("_parameters", recurse, prefix)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", recurse, prefix)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only=False):
        """Total number of parameter elements (shared parameters counted once)."""
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant and then on self (e.g. a custom init); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------- mode, device, dtype
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode here and in every descendant."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: dropout off, batchnorm uses its running statistics. Same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze (True) every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the accumulated gradients: every parameter's ``.grad`` becomes None."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = p.xp.zeros_like(p.data)

    def _map_tensors(self, fn):
        """Replace, in place, the array of every parameter and buffer (and each grad) by ``fn(array)``.

        The Parameter objects stay the same, so an optimizer built before
        still holds them.
        """
        for t in list(self.parameters()) + list(self.buffers()):
            t.data = fn(t.data)
            if t.grad is not None:
                t.grad = fn(t.grad)
        return self

    def to(self, device):
        """Move every parameter and buffer to ``'cpu'`` or ``'gpu'``, in place; returns self."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"Module.to: device must be 'cpu' or 'gpu', got {device!r}")
        return self._map_tensors(lambda a: a if device_of(a) == device else to_device(a, device))

    def cpu(self):
        return self.to("cpu")

    def gpu(self):
        return self.to("gpu")

    def _cast_floating(self, dtype):
        dtype = np.dtype(dtype)
        return self._map_tensors(lambda a: a.astype(dtype) if a.dtype.kind == "f" and a.dtype != dtype else a)

    def double(self):
        """Cast floating parameters and buffers to float64 (for gradient checks); returns self."""
        return self._cast_floating(np.float64)

    def float(self):
        """Cast floating parameters and buffers to float32; returns self."""
        return self._cast_floating(np.float32)

    # ----------------------------------------------------------- checkpoints
    def state_dict(self):
        """An ordered dict from dotted name to a copy of each parameter's and buffer's array.

        Names follow PyTorch (``'layer1.0.conv1.weight'``, ``'bn.running_mean'``).
        The arrays are snapshots on the module's device: training further does
        not change them. ``minicnn.save`` writes them to a ``.npz``.
        """
        out = OrderedDict()
        for key, tensor in self._state_targets().items():
            out[key] = tensor.data.copy()
        return out

    def _state_targets(self):
        """Dotted name -> the Tensor (parameter or persistent buffer) that a state value goes into."""
        targets = OrderedDict()
        for mod_name, mod in self.named_modules():
            for registry in ("_parameters", "_buffers"):
                for name, value in getattr(mod, registry).items():
                    if value is None or (registry == "_buffers" and name in mod._non_persistent):
                        continue
                    targets.setdefault(f"{mod_name}.{name}" if mod_name else name, value)
        return targets

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` (name -> array or Tensor) into the parameters and buffers.

        Each value is copied into the existing array, keeping its device and
        dtype. With ``strict=True`` the names must match exactly; otherwise
        missing and unexpected names are skipped and returned. Mismatched
        names (strict) and shapes (always) raise ValueError naming them.
        Everything is checked before anything is copied, so a failed load
        leaves the module unchanged.

        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a dict of name -> array, got {type(state_dict).__name__}")
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        model = type(self).__name__
        if strict and (missing or unexpected):
            lines = [f"load_state_dict: the state does not match {model}'s parameters and buffers."]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {_some(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {_some(unexpected)}")
            lines.append("  Build the model with the same architecture as the checkpoint, "
                         "or pass strict=False to load only the matching keys.")
            raise ValueError("\n".join(lines))
        for key, target in targets.items():
            if key not in state_dict:
                continue
            value = _raw(state_dict[key])
            shape = tuple(np.shape(value))
            if shape != tuple(target.shape):
                raise ValueError(
                    f"load_state_dict: size mismatch for '{key}': the checkpoint has shape {shape} "
                    f"but {model} has shape {tuple(target.shape)}. The checkpoint was saved from a "
                    f"different architecture: build the model with the same layer sizes as the "
                    f"checkpoint (or drop '{key}' from the state and use strict=False)")
            if not isinstance(value, np.ndarray) and not hasattr(value, "__cuda_array_interface__"):
                value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: '{key}' has non-numeric dtype {value.dtype}")
        for key, target in targets.items():
            if key in state_dict:
                value = to_device(_raw(state_dict[key]), target.device)
                target.data[...] = value.astype(target.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ repr
    def extra_repr(self):
        """The text between the parentheses of this module's one-line repr (its settings)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        kids = list(self._modules.items())
        if not kids:
            return f"{type(self).__name__}({extra})"
        lines = extra.split("\n") if extra else []
        for name, mod in kids:
            child = repr(mod).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        body = "\n  ".join(lines)
        return f"{type(self).__name__}(\n  {body}\n)"
