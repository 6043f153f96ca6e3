"""The package's ReLU, sigmoid and tanh, written into the skeleton."""
import numpy as np


def relu_forward(x):
    mask = x > 0
    return np.maximum(x, 0), mask


def relu_backward(dy, cache):
    return dy * cache


def sigmoid_forward(x):
    y = 0.5 * (1 + np.tanh(0.5 * x))       # = 1 / (1 + exp(-x)), with no overflow
    return y, y


def sigmoid_backward(dy, cache):
    return dy * cache * (1 - cache)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, cache):
    return dy * (1 - cache ** 2)
