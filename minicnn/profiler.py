"""Where does a training step spend its time? Per-op timing of forward and backward.

    from minicnn.profiler import Profiler
    with Profiler() as prof:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    print(prof.table())

While a profiler is active it times every ``Function.forward`` and
``Function.backward``, through the engine's one hook point,
``autograd.set_op_hooks``. Helper functions (``im2col``, ``col2im``, the GEMM) can be
timed inside their op with ``Profiler.wrap(module, name)``, which temporarily
replaces a module-level function by a timed one. On the GPU, ``sync=True``
waits for the device before each reading (otherwise kernel launches return
at once and the time lands elsewhere).
"""
import contextlib
import time
from collections import defaultdict

from . import autograd
from .backend import cupy_or_none

__all__ = ["Profiler"]


class Profiler:
    def __init__(self, sync=False):
        self.totals = defaultdict(float)   # (name, phase) -> seconds
        self.counts = defaultdict(int)
        self.sync = sync and cupy_or_none() is not None
        self._patches = []

    _active = None     # the profiler now hooked into the engine (one at a time)

    def __enter__(self):
        if Profiler._active is not None:
            raise RuntimeError("Profiler: another profiler is already active")
        Profiler._active = self

        def forward(fn, arrays, settings):
            with self.timing(type(fn).__name__, "forward"):
                return fn.forward(*arrays, **settings)

        def backward(fn, grads):
            with self.timing(type(fn).__name__, "backward"):
                return fn.backward(*grads)
        self._previous_hooks = autograd.set_op_hooks(forward, backward)
        return self

    def __exit__(self, *exc):
        autograd.set_op_hooks(*self._previous_hooks)
        Profiler._active = None
        for module, name, original in reversed(self._patches):
            setattr(module, name, original)
        self._patches.clear()
        return False

    def _now(self):
        if self.sync:
            cupy_or_none().cuda.Device().synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def timing(self, name, phase):
        t0 = self._now()
        try:
            yield
        finally:
            self.totals[(name, phase)] += self._now() - t0
            self.counts[(name, phase)] += 1

    def wrap(self, module, name, label=None):
        """Time calls of ``module.name`` (a function looked up at call time) as ``label``."""
        original = getattr(module, name)
        label = label or name

        def timed(*args, **kwargs):
            with self.timing(label, "call"):
                return original(*args, **kwargs)
        setattr(module, name, timed)
        self._patches.append((module, name, original))
        return self

    def seconds(self, name, phase=None):
        return sum(v for (n, p), v in self.totals.items() if n == name and (phase is None or p == phase))

    def table(self, top=None):
        rows = sorted(self.totals.items(), key=lambda kv: -kv[1])[:top]
        total = sum(v for (n, p), v in self.totals.items() if p != "call")
        lines = [f"{'op':<24}{'phase':<10}{'calls':>7}{'ms':>10}{'% of ops':>10}"]
        for (name, phase), sec in rows:
            share = f"{100 * sec / total:9.1f}%" if total and phase != "call" else "    (in op)"
            lines.append(f"{name:<24}{phase:<10}{self.counts[(name, phase)]:>7}{1000 * sec:>10.2f}{share}")
        return "\n".join(lines)
