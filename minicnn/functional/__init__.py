"""minicnn.functional (``import minicnn.functional as F``): every op as a function.

Each op is a ``Function`` subclass (forward/backward on raw arrays, the math
in its docstring) plus a thin wrapper that checks arguments and calls
``.apply``. Modules:

- ``basic``: arithmetic with broadcasting, reductions, shape ops, indexing
- ``activation``: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax
- ``loss``: cross_entropy, mse_loss, linear
"""
from .basic import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
