"""minicnn.optim's SGD (momentum, Nesterov) and Adam steps, written into the skeleton."""
import numpy as np


def sgd_step(w, dw, v, lr, momentum, nesterov):
    v = momentum * v + dw
    step = dw + momentum * v if nesterov else v
    return w - lr * step, v


def adam_step(w, dw, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw * dw
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
