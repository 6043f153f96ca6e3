"""Replaceable ops: put another implementation of a public op in place, for a ``with`` block.

    with F.use_implementation("conv2d", my_conv2d):
        model(x)             # every nn.Conv2d now runs my_conv2d

``my_conv2d`` takes exactly the arguments of the public op it replaces
(``F.conv2d(x, weight, bias, stride, padding, dilation, groups)``) and
returns what it returns (a Tensor, usually from its own ``Function``'s
``.apply``). Each replaceable op asks ``replacement(name)`` on its first line
and, when there is one, hands its arguments over; nothing else in the
package changes. Inside the replacement the public op is the package's own
again (so a replacement may fall back to it, e.g. for ``groups > 1``).
This is how ``minicnn homework use`` trains a network on a student's ops;
it runs the student's code in this process.

The switch is process-wide (every thread sees it) and nests; the previous
implementation comes back when the block ends, also on an error.
"""
import threading

__all__ = ["use_implementation", "replacement", "REPLACEABLE", "implementations"]

# The public ops that consult this registry, by the name of their function in ``minicnn.functional``.
REPLACEABLE = ("conv2d", "im2col", "col2im", "max_pool2d", "avg_pool2d", "batch_norm", "relu", "sigmoid",
               "tanh", "dropout")

_REPLACED = {}                  # name -> the implementation in place now
_INSIDE = threading.local()     # the names whose replacement is running in this thread


def implementations():
    """{name: implementation} of the ops replaced now."""
    return dict(_REPLACED)


def replacement(name):
    """The implementation to call instead of op ``name``, or None (use the package's own)."""
    fn = _REPLACED.get(name)
    if fn is None or name in getattr(_INSIDE, "names", ()):
        return None

    def run(*args, **kwargs):
        inside = _INSIDE.__dict__.setdefault("names", set())
        inside.add(name)
        try:
            return fn(*args, **kwargs)
        finally:
            inside.discard(name)
    return run


class use_implementation:
    """Context manager: inside it, the public op ``name`` (one of ``REPLACEABLE``) runs ``fn`` instead."""

    def __init__(self, name, fn):
        if name not in REPLACEABLE:
            raise ValueError(f"use_implementation: name must be one of {', '.join(REPLACEABLE)}, got {name!r}")
        if not callable(fn):
            raise TypeError(f"use_implementation: fn must be callable, got {type(fn).__name__}")
        self.name, self.fn = name, fn

    def __enter__(self):
        self._previous = _REPLACED.get(self.name)
        _REPLACED[self.name] = self.fn
        return self

    def __exit__(self, *exc):
        if self._previous is None:
            _REPLACED.pop(self.name, None)
        else:
            _REPLACED[self.name] = self._previous
        return False
