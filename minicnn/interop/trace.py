"""Record one forward pass as a list of op calls: what ONNX export turns into a graph.

``trace(model, x)`` runs ``model(x)`` once while the engine's one hook point
(``autograd.set_op_hooks``, also the profiler's entry) records every
``Function.forward`` call: the Function, its input arrays, its settings
(with the defaults of its ``forward`` filled in) and its output arrays.
Nothing in the model is special-cased, so a ResNet's residual addition, an
inception module's concatenation or a custom ``forward`` are recorded like a
plain ``Sequential``: as the ops they really call.

Each call is also labelled with the module it belongs to: after a module's
forward, a forward hook walks back from its output to its inputs and claims
the calls on the way that no sub-module claimed (hooks fire children first),
so ``blocks.0.conv1`` owns its Conv2d and the block itself owns the addition
of the shortcut. The labels name the ONNX nodes and the layer in errors.

A value is *dynamic* when it depends on the input: the input itself and the
outputs of calls with a dynamic input. A call without dynamic inputs (a
weight's transpose in ``linear``, a buffer reshaped by ``nn.Normalize``)
computes a constant, which the export stores as it came out.
"""
import inspect
from dataclasses import dataclass, field

from .. import autograd
from ..analysis import analysis_mode
from ..autograd import Tensor, no_grad

__all__ = ["Call", "Trace", "trace"]


@dataclass
class Call:
    """One ``Function.forward`` call of the traced pass."""
    fn: object                 # the Function instance
    arrays: list               # its positional input arrays (None where an input was None)
    settings: dict             # keyword settings, defaults filled in
    outputs: list              # its output arrays
    dynamic: bool = False      # does any input depend on the model's input?
    module: str = None         # the name of the module that called it (named_modules() naming)

    @property
    def op(self):
        return type(self.fn).__name__


@dataclass
class Trace:
    """The calls of one forward pass, in order, and what they were run on."""
    calls: list
    input: object              # the input array
    output: object             # the output array
    producer: dict = field(default_factory=dict)    # id(array) -> the Call that produced it
    dynamic: set = field(default_factory=set)       # ids of the arrays that depend on the input
    lost: str = None           # the first module whose output stopped depending on its (dynamic) input


def full_settings(fn, arrays, settings):
    """``settings`` with the defaults of ``fn.forward``'s other arguments filled in (the inputs left out)."""
    out, left = {}, len(arrays)
    for name, p in list(inspect.signature(type(fn).forward).parameters.items())[1:]:     # [0] is self
        if p.kind is p.VAR_POSITIONAL:          # forward(self, *xs, axis=0): xs takes every input
            left = 0
        elif p.kind is p.POSITIONAL_OR_KEYWORD and left > 0 and name not in settings:
            left -= 1                           # an input array
        elif p.kind is not p.VAR_KEYWORD:
            out[name] = settings.get(name, p.default)
    out.update(settings)
    return out


def _claim(tr, name, inputs, output):
    """Label the unclaimed calls between ``inputs`` and ``output`` as module ``name``'s."""
    stop = {id(t.data) for t in inputs if isinstance(t, Tensor)}
    todo = [id(o.data) for o in (output if isinstance(output, (tuple, list)) else [output]) if isinstance(o, Tensor)]
    if tr.lost is None and stop & tr.dynamic and not set(todo) & tr.dynamic:
        tr.lost = name
    seen = set()
    while todo:
        key = todo.pop()
        call = tr.producer.get(key)
        if key in stop or key in seen or call is None:
            continue
        seen.add(key)
        if call.module is None:
            call.module = name
        todo.extend(id(a) for a in call.arrays if a is not None)


def trace(model, x):
    """Run ``model(x)`` once (eval mode, no gradients) and return its ``Trace``.

    ``x`` is a raw array in the model's dtype and on its device. The model is
    left as it was (``analysis_mode`` restores its modes; the hooks are removed).
    """
    pixels = Tensor(x)
    tr = Trace(calls=[], input=pixels.data, output=None)
    tr.dynamic.add(id(pixels.data))

    def record(fn, arrays, settings):
        out = fn.forward(*arrays, **settings)
        outputs = list(out) if isinstance(out, tuple) else [out]
        call = Call(fn, list(arrays), full_settings(fn, arrays, settings), outputs,
                    dynamic=any(a is not None and id(a) in tr.dynamic for a in arrays))
        tr.calls.append(call)             # (keeps every array alive: no id is reused during the trace)
        for o in outputs:
            tr.producer[id(o)] = call
            if call.dynamic:
                tr.dynamic.add(id(o))
        return out

    names = {m: (n or type(model).__name__) for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, inp, out: _claim(tr, names[mod], inp, out))
               for m in names]
    previous = autograd.set_op_hooks(record, None)
    try:
        with analysis_mode(model), no_grad():
            y = model(pixels)
    finally:
        autograd.set_op_hooks(*previous)
        for h in handles:
            h.remove()
    if not isinstance(y, Tensor):
        raise TypeError(f"export: {type(model).__name__}'s forward returned {type(y).__name__}; "
                        f"one Tensor (the logits) is exported")
    tr.output = y.data
    return tr
