"""The assignments, in the order of the lessons: ``ASSIGNMENTS`` and ``get(name)``."""
from . import analysis, extra, layers, training
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


add(Assignment("autograd_ops", "backward passes of broadcasting add and mul, matmul, sum/mean over axes, exp/log",
               10, "docs/01-autograd.md", "reverse mode: each op maps the upstream gradient to its inputs' gradients, "
               "summed over broadcast axes", ["unbroadcast", "add_backward", "mul_backward", "matmul_backward",
                                              "sum_backward", "mean_backward", "exp_backward", "log_backward"],
               training.AUTOGRAD_SKELETON, training.autograd_cases))
add(Assignment("activations", "ReLU, sigmoid (overflow-free) and tanh, forward and backward", 10,
               "docs/01-autograd.md", "an activation's backward pass is the upstream gradient times f'(x)",
               ["relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "tanh_forward",
                "tanh_backward"], layers.ACTIVATIONS_SKELETON, layers.activation_cases,
               use=[("relu", "relu")]))
add(Assignment("softmax_ce", "a numerically stable softmax cross-entropy and its gradient", 10,
               "docs/04-training.md", "log-sum-exp: subtract the maximum; the gradient is (p - onehot) / N",
               ["softmax_cross_entropy"], training.SOFTMAX_SKELETON, training.softmax_cases))
add(Assignment("im2col", "im2col and its adjoint col2im (stride, padding)", 10, "docs/02-convolution.md",
               "a convolution is one matrix product once every window is a row",
               ["im2col", "col2im"], layers.IM2COL_SKELETON, layers.im2col_cases, use=[("im2col", "im2col")]))
add(Assignment("conv2d", "conv2d forward and backward (stride, padding, dilation)", 20, "docs/02-convolution.md",
               "convolution as im2col + GEMM; its backward is two more GEMMs and col2im",
               ["conv2d_forward", "conv2d_backward"], layers.CONV2D_SKELETON, layers.conv2d_cases,
               use=[("conv2d", "conv2d")]))
add(Assignment("conv2d_groups", "extra credit: grouped and depthwise convolution", 5, "docs/02-convolution.md",
               "groups split the channels into independent convolutions; groups = C_in is depthwise",
               ["conv2d_groups_forward", "conv2d_groups_backward"], extra.CONV2D_GROUPS_SKELETON,
               extra.conv2d_groups_cases, use=[("conv2d", "conv2d_groups")]))
add(Assignment("max_pool", "max pooling with the argmax stored (ties, padding)", 10, "docs/02-convolution.md",
               "max pooling routes the gradient to the one input that won",
               ["max_pool_forward", "max_pool_backward"], layers.MAX_POOL_SKELETON, layers.max_pool_cases,
               use=[("max_pool2d", "max_pool")]))
add(Assignment("avg_pool", "average pooling forward and backward", 5, "docs/02-convolution.md",
               "average pooling shares the gradient equally over the window",
               ["avg_pool_forward", "avg_pool_backward"], layers.AVG_POOL_SKELETON, layers.avg_pool_cases,
               use=[("avg_pool2d", "avg_pool")]))
add(Assignment("batchnorm", "batch normalization forward and backward, training and eval modes", 20,
               "docs/02-convolution.md", "batchnorm's backward runs through the batch mean and variance too",
               ["batchnorm_forward", "batchnorm_backward"], layers.BATCHNORM_SKELETON, layers.batchnorm_cases,
               use=[("batch_norm", "batchnorm")]))
add(Assignment("dropout", "inverted dropout (scaled in training, identity in eval)", 5, "docs/11-regularisation.md",
               "dropout keeps E[y] = x by scaling the kept units by 1 / (1 - p)",
               ["dropout_forward", "dropout_backward"], layers.DROPOUT_SKELETON, layers.dropout_cases,
               use=[("dropout", "dropout")]))
add(Assignment("he_init", "He (Kaiming) normal initialisation, std = sqrt(2 / fan_in)", 5, "docs/04-training.md",
               "keep the activations' variance through ReLU layers", ["he_normal"], training.HE_SKELETON,
               training.he_cases))
add(Assignment("optimizers", "SGD with momentum and Nesterov, and Adam with bias correction", 10,
               "docs/04-training.md", "momentum averages gradients; Adam scales each weight's step by its history",
               ["sgd_step", "adam_step"], training.OPTIM_SKELETON, training.optim_cases))
add(Assignment("saliency", "a saliency map: max over channels of |d logit_target / d x|", 5, "docs/06-explain.md",
               "the input gradient says which pixels the class score is most sensitive to", ["saliency"],
               analysis.SALIENCY_SKELETON, analysis.saliency_cases, needs_minicnn=True))
add(Assignment("fgsm", "the fast gradient sign method: one eps-step up the loss, clipped to [0, 1]", 5,
               "docs/07-attacks.md", "a small step along the sign of the loss gradient changes the prediction",
               ["fgsm"], analysis.FGSM_SKELETON, analysis.fgsm_cases, needs_minicnn=True))
add(Assignment("gradcam", "Grad-CAM: feature maps weighted by their mean gradient, through a forward hook", 5,
               "docs/06-explain.md", "where in the image a layer's features argue for the class", ["grad_cam"],
               analysis.GRADCAM_SKELETON, analysis.gradcam_cases, needs_minicnn=True))
