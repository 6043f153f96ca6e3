"""The package's He normal initialisation (minicnn.nn.init), written into the skeleton."""
import numpy as np


def he_normal(shape, rng):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
