"""The package's cross-entropy (log-softmax with the max shift), written into the skeleton."""
import numpy as np


def softmax_cross_entropy(logits, labels):
    N = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(N), labels].mean()
    d = np.exp(logp)
    d[np.arange(N), labels] -= 1
    return loss, d / N
