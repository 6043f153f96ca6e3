"""Small argument helpers shared by the ops, the layers and the CUDA wrappers."""
import numpy as np

__all__ = ["pair"]


def pair(value, name, fn, minimum=1):
    """An int or a pair of ints as a (height, width) tuple, each >= ``minimum``.

    ``fn`` and ``name`` name the function and argument in the error message.
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints (height, width), got {value!r}")
    for v in values:
        if v < minimum:
            kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
            raise ValueError(f"{fn}: {name} must be {kind}, got {value!r}")
    return int(values[0]), int(values[1])
