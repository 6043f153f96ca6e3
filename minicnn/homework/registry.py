"""The assignments, in the order of the lessons: ``ASSIGNMENTS`` and ``get(name)``."""
from . import layers
from .core import Assignment

ASSIGNMENTS = {}


def add(assignment):
    ASSIGNMENTS[assignment.name] = assignment
    return assignment


def get(name):
    """The assignment called ``name``; a ValueError lists the names when there is none."""
    if name not in ASSIGNMENTS:
        raise ValueError(f"no assignment {name!r}; the assignments are: {', '.join(ASSIGNMENTS)}")
    return ASSIGNMENTS[name]


add(Assignment("activations", "ReLU, sigmoid (overflow-free) and tanh, forward and backward", 10,
               "docs/01-autograd.md", "an activation's backward pass is the upstream gradient times f'(x)",
               ["relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "tanh_forward",
                "tanh_backward"], layers.ACTIVATIONS_SKELETON, layers.activation_cases,
               use=[("relu", "relu")]))
add(Assignment("im2col", "im2col and its adjoint col2im (stride, padding)", 10, "docs/02-convolution.md",
               "a convolution is one matrix product once every window is a row",
               ["im2col", "col2im"], layers.IM2COL_SKELETON, layers.im2col_cases))
add(Assignment("conv2d", "conv2d forward and backward (stride, padding, dilation)", 20, "docs/02-convolution.md",
               "convolution as im2col + GEMM; its backward is two more GEMMs and col2im",
               ["conv2d_forward", "conv2d_backward"], layers.CONV2D_SKELETON, layers.conv2d_cases,
               use=[("conv2d", "conv2d")]))
add(Assignment("max_pool", "max pooling with the argmax stored (ties, padding)", 10, "docs/02-convolution.md",
               "max pooling routes the gradient to the one input that won",
               ["max_pool_forward", "max_pool_backward"], layers.MAX_POOL_SKELETON, layers.max_pool_cases,
               use=[("max_pool2d", "max_pool")]))
add(Assignment("avg_pool", "average pooling forward and backward", 5, "docs/02-convolution.md",
               "average pooling shares the gradient equally over the window",
               ["avg_pool_forward", "avg_pool_backward"], layers.AVG_POOL_SKELETON, layers.avg_pool_cases,
               use=[("avg_pool2d", "avg_pool")]))
add(Assignment("batchnorm", "batch normalization forward and backward, training and eval modes", 20,
               "docs/04-training.md", "batchnorm's backward runs through the batch mean and variance too",
               ["batchnorm_forward", "batchnorm_backward"], layers.BATCHNORM_SKELETON, layers.batchnorm_cases,
               use=[("batch_norm", "batchnorm")]))
add(Assignment("dropout", "inverted dropout (scaled in training, identity in eval)", 5, "docs/11-regularisation.md",
               "dropout keeps E[y] = x by scaling the kept units by 1 / (1 - p)",
               ["dropout_forward", "dropout_backward"], layers.DROPOUT_SKELETON, layers.dropout_cases,
               use=[("dropout", "dropout")]))
