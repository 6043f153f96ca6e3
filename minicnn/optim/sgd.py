"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD, with PyTorch's exact update (so steps match ``torch.optim.SGD``).

    For each parameter p with gradient g, learning rate lr, momentum mu,
    dampening d and weight decay wd:

        g = g + wd * p                           (L2 weight decay, if wd != 0)
        if mu != 0:
            b = g                    on the first step (b is the momentum buffer)
            b = mu * b + (1 - d) * g  afterwards
            g = g + mu * b           if nesterov, else g = b
        p = p - lr * g

    Nesterov momentum needs mu > 0 and d = 0. With mu = 0 this is plain SGD.
    Note the buffer accumulates gradients, not steps: lr multiplies it at
    each step, so changing lr (a schedule) takes effect at once.
    """

    def __init__(self, params, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        super()._validate_group(group)
        self._check_number("SGD", "momentum", group["momentum"])
        self._check_number("SGD", "dampening", group["dampening"])
        self._check_number("SGD", "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, p, grad, state, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        d_p = grad
        if wd != 0:
            d_p = d_p + wd * p.data              # a new array: p.grad is never modified
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.copy()
            else:
                buf *= mu                         # the buffer is ours: update it in place
                buf += (1 - group["dampening"]) * d_p
            d_p = d_p + mu * buf if group["nesterov"] else buf
        p.data -= lr * d_p
