"""Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019)."""
import math

from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, with PyTorch's exact update (so steps match ``torch.optim.Adam``).

    For each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + wd * p                          (L2 weight decay, if wd != 0)
        m = beta1 * m + (1 - beta1) * g         (first moment, starts at 0)
        v = beta2 * v + (1 - beta2) * g * g     (second moment, starts at 0)
        m_hat_scale = 1 - beta1**t,  v_hat_scale = 1 - beta2**t   (bias corrections)
        p = p - (lr / m_hat_scale) * m / (sqrt(v) / sqrt(v_hat_scale) + eps)

    The state per parameter is ``step`` (t), ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """

    _decoupled = False   # AdamW sets True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        super()._validate_group(group)
        name = type(self).__name__
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(betas)
        self._check_number(name, "beta1", betas[0], 0.0, 1.0, high_open=True)
        self._check_number(name, "beta2", betas[1], 0.0, 1.0, high_open=True)
        self._check_number(name, "eps", group["eps"])
        self._check_number(name, "weight_decay", group["weight_decay"])

    def _update(self, p, grad, state, group):
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            xp = p.xp
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if wd != 0:
            if self._decoupled:
                p.data *= 1 - lr * wd                 # AdamW: shrink the weights directly
            else:
                grad = grad + wd * p.data             # Adam: L2 term in the gradient (new array)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        denom = p.xp.sqrt(v) / math.sqrt(bias_correction2) + eps
        p.data -= (lr / bias_correction1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, PyTorch's update (matches ``torch.optim.AdamW``).

    Identical to ``Adam`` except for the weight decay, which shrinks the
    weights instead of entering the gradient (so it is not rescaled by the
    adaptive denominator):

        p = p * (1 - lr * wd)
        then the Adam step above with wd = 0.

    Default ``weight_decay=1e-2``.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
