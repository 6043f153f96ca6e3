"""minicnn.functional (``import minicnn.functional as F``): every op as a function.

Each op is a ``Function`` subclass (forward/backward on raw arrays, the math
in its docstring) plus a thin wrapper that checks arguments and calls
``.apply``. Modules:

- ``basic``: arithmetic with broadcasting, reductions, shape ops, indexing
- ``activation``: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax
- ``loss``: cross_entropy, mse_loss, linear
- ``windows``: the window geometry and strided views that conv and pooling share
- ``conv``: im2col, col2im, conv2d (im2col + GEMM)
- ``conv_transpose``: conv_transpose2d (the adjoint of conv2d)
- ``pooling``: max_pool2d (argmax stored), avg_pool2d, adaptive_avg_pool2d
- ``norm``: batch_norm (batch statistics in training, running ones in eval)
- ``dropout``: dropout (inverted)
- ``implementations``: ``use_implementation(name, fn)`` puts another implementation of a public op in place
"""
from .basic import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .windows import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .conv_transpose import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .implementations import *  # noqa: F401,F403
