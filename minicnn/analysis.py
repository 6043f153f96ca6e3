"""What every analysis of a trained model shares: the guard that leaves the model as it was.

``minicnn.explain``, ``minicnn.attacks`` and ``minicnn.synthesize`` look at a
model through gradients with respect to its *input*. DESIGN.md's rule is that
an analysis never changes the model. ``analysis_mode(model)`` is that rule as
code; each analysis runs inside it::

    with analysis_mode(model):
        x = Tensor(images, requires_grad=True)
        model(x)[:, target].sum().backward()      # x.grad: the input gradient
"""
from contextlib import contextmanager

from .autograd import enable_grad
from .functional import relu_backward_rule

__all__ = ["analysis_mode"]


@contextmanager
def analysis_mode(model):
    """Eval mode, frozen parameters, grad mode on and ReLU's true derivative; everything restored on exit.

    While the block runs:
    - every module is in eval mode (batchnorm reads its running statistics
      without updating them, dropout is off);
    - no parameter requires a gradient, so backward computes only the input's
      gradient (less work, and the parameters' ``.grad`` stay as they were);
    - grad mode is on, so input gradients work inside a caller's ``no_grad()``;
    - ReLU's backward is its true derivative, whatever ``relu_backward_rule``
      the caller is in (deconvnet and guided backprop nest their own rule).

    On exit, also after an exception: each module's own ``training`` flag (a
    caller's mixed modes survive), each parameter's ``requires_grad`` and its
    ``.grad`` (the very array it held), grad mode and the ReLU rule.
    Buffers are not touched: eval-mode layers never write them.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _, _ in params:
            p.requires_grad = False
        with enable_grad(), relu_backward_rule("gradient"):
            yield model
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
        for p, flag, grad in params:
            p.requires_grad = flag
            p.grad = grad
