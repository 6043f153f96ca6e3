"""The training assignments: autograd ops, softmax cross-entropy, He initialisation, SGD (momentum, Nesterov), Adam.

Expected gradients come from ``numerical_grad`` (central differences in
float64 with a random upstream gradient); optimizer steps from their
defining formulas (the ones ``minicnn.optim`` implements), several steps in
a row, comparing only the weights: the state (velocity, moments) is the
student's own business, handed back to them at the next step.
"""
import numpy as np

from ..gradcheck import numerical_grad
from .core import Case, about, call, close, matches, non_finite, transposed

SEED = 3031


def shape_diagnosis(name, what):
    return (f"{name} must have the input's shape: {what}", about(name, lambda r, c: r[name].shape !=
                                                                     c.expected[name].shape))


# --------------------------------------------------------------------------
# autograd ops
# --------------------------------------------------------------------------
AUTOGRAD_SKELETON = '''"""Homework: the backward passes of autograd's basic ops.   minicnn homework check autograd_ops

Each function gets the upstream gradient g = dL/dout and what it needs of
the forward pass, and returns the gradient with respect to each input, of
that input's shape. Broadcasting: if a (shape (3, 1)) and b (shape (4,))
were broadcast to out (3, 4), da sums g over the broadcast axes and keeps
a's shape (3, 1), db sums over axis 0 to shape (4,).

    add:     out = a + b           da = unbroadcast(g, a.shape),  db = unbroadcast(g, b.shape)
    mul:     out = a * b           da = unbroadcast(g * b),       db = unbroadcast(g * a)
    matmul:  out = a @ b (2-D)     da = g @ b.T,                  db = a.T @ g
    sum:     out = x.sum(axis, keepdims)    dx = g broadcast back to x's shape
    mean:    out = x.mean(axis, keepdims)   dx = g broadcast back, divided by the count averaged
    exp:     out = exp(x)          dx = g * exp(x)
    log:     out = log(x)          dx = g / x

axis is None (all axes), an int or a tuple of ints. Do not modify the arguments.
"""
import numpy as np


def unbroadcast(g, shape):
    # TODO: sum g over the axes that broadcasting added or stretched, to get back to `shape`
    raise NotImplementedError("unbroadcast")


def add_backward(g, a_shape, b_shape):
    raise NotImplementedError("add_backward")


def mul_backward(g, a, b):
    raise NotImplementedError("mul_backward")


def matmul_backward(g, a, b):
    raise NotImplementedError("matmul_backward")


def sum_backward(g, x_shape, axis, keepdims):
    raise NotImplementedError("sum_backward")


def mean_backward(g, x_shape, axis, keepdims):
    raise NotImplementedError("mean_backward")


def exp_backward(g, x):
    raise NotImplementedError("exp_backward")


def log_backward(g, x):
    raise NotImplementedError("log_backward")


if __name__ == "__main__":
    g = np.ones((3, 4))
    print([d.shape for d in add_backward(g, (3, 1), (4,))])        # [(3, 1), (4,)]
    print(sum_backward(np.ones(3), (3, 4), 1, False).shape)        # (3, 4)
'''


def _num(f, x, g):
    return numerical_grad(lambda _: f(), x, grad_output=g)


def autograd_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for sa, sb in (((3, 1), (4,)), ((2, 3, 4), (3, 1)), ((5,), (5,)), ((1, 1), (2, 3))):
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        out = np.broadcast_shapes(sa, sb)
        g = rng.standard_normal(out)
        for op, f in (("add", np.add), ("mul", np.multiply)):
            expected = {"da": _num(lambda: f(a, b), a, g), "db": _num(lambda: f(a, b), b, g)}
            args = ["$g", list(sa), list(sb)] if op == "add" else ["$g", "$a", "$b"]
            inputs = {"g": g} if op == "add" else {"g": g, "a": a, "b": b}
            cases.append(Case(f"{op} {sa} and {sb}", 1, [call(f"{op}_backward", *args, out=("da", "db"))],
                              inputs, expected, seed=SEED, diagnoses=[
                                  shape_diagnosis("da", "sum g over the broadcast axes (unbroadcast)"),
                                  shape_diagnosis("db", "sum g over the broadcast axes (unbroadcast)"),
                                  ("mul's gradients are swapped: da = g * b, db = g * a",
                                   matches("da", lambda c: c.inputs["g"] * c.inputs["a"]))]))
    for sa, sb in (((3, 4), (4, 5)), ((1, 6), (6, 2)), ((4, 4), (4, 4))):
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        g = rng.standard_normal((sa[0], sb[1]))
        cases.append(Case(f"matmul {sa} @ {sb}", 1, [call("matmul_backward", "$g", "$a", "$b", out=("da", "db"))],
                          {"g": g, "a": a, "b": b}, {"da": _num(lambda: a @ b, a, g), "db": _num(lambda: a @ b, b, g)},
                          seed=SEED, diagnoses=[
                              ("matmul's da is transposed: da = g @ b.T, of a's shape", transposed("da")),
                              ("matmul's db is transposed: db = a.T @ g, of b's shape", transposed("db"))]))
    for shape, axis, keepdims in (((3, 4), 1, False), ((2, 3, 4), (0, 2), True), ((2, 3, 4), None, False),
                                  ((4, 5), 0, True), ((2, 3, 4), -1, False)):
        x = rng.standard_normal(shape)
        g = rng.standard_normal(np.sum(x, axis=axis, keepdims=keepdims).shape)
        d_sum = _num(lambda: np.sum(x, axis=axis, keepdims=keepdims), x, g)
        for op, f in (("sum", np.sum), ("mean", np.mean)):
            diagnoses = [shape_diagnosis("dx", "broadcast g back to x's shape (re-insert the summed axes)")]
            if op == "mean":
                diagnoses.append(("mean's gradient is not divided by the number of values averaged",
                                  matches("dx", lambda c, d=d_sum: d)))
            cases.append(Case(f"{op} over axis {axis}, keepdims {keepdims}, x {shape}", 1,
                              [call(f"{op}_backward", "$g", list(shape), list(axis) if isinstance(axis, tuple)
                                    else axis, keepdims, out=("dx",))],
                              {"g": g}, {"dx": _num(lambda: f(x, axis=axis, keepdims=keepdims), x, g)},
                              seed=SEED, args=dict(axis=axis, keepdims=keepdims), diagnoses=diagnoses))
    for op, f, lo in (("exp", np.exp, -3), ("log", np.log, 0.2)):
        x = rng.uniform(lo, 3, (3, 5))
        g = rng.standard_normal(x.shape)
        cases.append(Case(f"{op} (3, 5)", 1, [call(f"{op}_backward", "$g", "$x", out=("dx",))], {"g": g, "x": x},
                          {"dx": _num(lambda: f(x), x, g)}, seed=SEED, diagnoses=[
                              (f"{op}'s derivative is " + ("1 / x: dx = g / x" if op == "log"
                                                            else "exp(x): dx = g * exp(x)"),
                               matches("dx", lambda c: c.inputs["g"] * c.inputs["x"]))]))
    return cases


# --------------------------------------------------------------------------
# softmax cross-entropy
# --------------------------------------------------------------------------
SOFTMAX_SKELETON = '''"""Homework: a numerically stable softmax cross-entropy.   minicnn homework check softmax_ce

logits (N, K), labels (N,) ints. The mean loss over the batch and its gradient:

    p[n, k]   = exp(logits[n, k]) / sum_j exp(logits[n, j])
    loss      = -(1/N) sum_n log p[n, labels[n]]
    dlogits   = (p - onehot(labels)) / N

Stable for any logits (1000 or -1000 included): subtract each row's maximum
before exp (it does not change p), and compute log p as
z - log(sum(exp(z))) with z the shifted logits, never log(p) of an underflowed p.
Return (loss, dlogits); do not modify the arguments.
"""
import numpy as np


def softmax_cross_entropy(logits, labels):
    # TODO: loss (a number) and dlogits (N, K)
    raise NotImplementedError("softmax_cross_entropy")


if __name__ == "__main__":
    loss, d = softmax_cross_entropy(np.array([[0.0, 0.0], [1000.0, 0.0]]), np.array([0, 1]))
    print(loss, d)          # about 500.35 and [[-0.25 0.25] [0.5 -0.5]]
'''


def _softmax_ce(z, y):
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def softmax_cases():
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for label, shape, scale, dtype in (("(8, 10) logits", (8, 10), 3.0, np.float64),
                                       ("batch of 1, 5 classes", (1, 5), 3.0, np.float64),
                                       ("large logits (about 1000)", (6, 4), 1000.0, np.float64),
                                       ("float32 (16, 10)", (16, 10), 5.0, np.float32)):
        z = (rng.standard_normal(shape) * scale).astype(dtype)
        y = rng.integers(0, shape[1], shape[0])
        z64 = z.astype(np.float64)
        loss = np.asarray(_softmax_ce(z64, y))
        dz = numerical_grad(lambda _: _softmax_ce(z64, y), z64, eps=1e-6 * max(1, scale / 10))
        tol = (1e-4, 1e-5) if dtype == np.float64 else (1e-3, 1e-4)
        cases.append(Case(f"softmax_ce {label}", 1, [call("softmax_cross_entropy", "$logits", "$labels",
                                                          out=("loss", "dlogits"))],
                          {"logits": z, "labels": y}, {"loss": loss, "dlogits": dz}, tol=tol, seed=SEED + 1,
                          diagnoses=[
                              ("softmax overflows for large logits: subtract each row's maximum first, and take "
                               "log p as z - log(sum(exp(z)))", non_finite("loss")),
                              ("softmax overflows for large logits: subtract each row's maximum first",
                               non_finite("dlogits")),
                              ("the loss is summed over the batch: it is the mean",
                               matches("loss", lambda c: c.expected["loss"] * len(c.inputs["labels"]))),
                              ("dlogits is not divided by the batch size N (right only for a batch of 1)",
                               matches("dlogits", lambda c: c.expected["dlogits"] * len(c.inputs["labels"]))),
                              ("dlogits must subtract 1 at each row's label: (p - onehot(labels)) / N",
                               matches("dlogits", lambda c: _onehot_missing(c)))]))
    return cases


def _onehot_missing(c):
    z = c.inputs["logits"].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p / len(z)


# --------------------------------------------------------------------------
# He initialisation
# --------------------------------------------------------------------------
HE_SKELETON = '''"""Homework: He (Kaiming) normal initialisation.   minicnn homework check he_init

he_normal(shape, rng) returns weights drawn from N(0, std**2) with

    std = sqrt(2 / fan_in),   fan_in = shape[1] * KH * KW for a conv weight (C_out, C_in, KH, KW)
                              fan_in = shape[1] for a linear weight (out_features, in_features)

so that a ReLU layer keeps the variance of its input (He et al. 2015).
rng is a numpy.random.Generator: draw from it (the same rng seed gives the
same weights).
"""
import numpy as np


def he_normal(shape, rng):
    raise NotImplementedError("he_normal")


if __name__ == "__main__":
    w = he_normal((64, 32, 3, 3), np.random.default_rng(0))
    print(w.shape, w.std(), np.sqrt(2 / (32 * 9)))     # about equal
'''


def he_cases():
    cases = []
    for shape in ((64, 32, 3, 3), (256, 512), (16, 3, 5, 5), (8, 200, 1, 1)):
        fan_in = shape[1] * int(np.prod(shape[2:]))
        std = np.sqrt(2.0 / fan_in)
        steps = [call("he_normal", list(shape), {"rng": 11}, out=("w",)),
                 call("he_normal", list(shape), {"rng": 11}, out=("w_again",)),
                 call("he_normal", list(shape), {"rng": 12}, out=("w_other",))]
        cases.append(Case(f"he_normal {shape} (fan_in {fan_in})", 1, steps, {}, checks=[_he_check(shape, std)],
                          keep=("w", "w_again", "w_other"), seed=11, args=dict(shape=shape), diagnoses=[
                              ("the std uses fan_out (shape[0] * KH * KW); He uses fan_in = shape[1] * KH * KW",
                               lambda r, c, s=shape: _std_ratio(r, s, shape[0] * int(np.prod(s[2:])))),
                              ("the std is 2 / fan_in; it is the square root, sqrt(2 / fan_in)",
                               lambda r, c, f=fan_in: abs(r["w"].std() / (2 / f) - 1) < 0.05),
                              ("the std is sqrt(1 / fan_in) (LeCun/Xavier); He doubles the variance for ReLU",
                               lambda r, c, f=fan_in: abs(r["w"].std() / np.sqrt(1 / f) - 1) < 0.05),
                              ("fan_in must include the kernel size: C_in * KH * KW",
                               lambda r, c, s=shape: len(s) == 4 and s[2] * s[3] > 1 and _std_ratio(r, s, s[1])),
                              ("the weights are not normal (a uniform draw?): draw with rng.normal or "
                               "rng.standard_normal", lambda r, c: abs(_kurtosis(r["w"]) - 3) > 0.5),
                              ("the weights do not come from rng: the same rng seed must give the same weights",
                               lambda r, c: not np.array_equal(r["w"], r["w_again"]))]))
    return cases


def _std_ratio(r, shape, fan):
    return abs(r["w"].std() / np.sqrt(2.0 / fan) - 1) < 0.05


def _kurtosis(w):
    w = np.asarray(w, dtype=np.float64).ravel()
    w = w - w.mean()
    return float(np.mean(w ** 4) / np.mean(w ** 2) ** 2)


def _he_check(shape, std):
    def check(r, c):
        w = np.asarray(r.get("w", np.zeros(0)), dtype=np.float64)
        if w.shape != tuple(shape):
            return f"w has shape {w.shape}, expected {tuple(shape)}"
        n = w.size
        if not np.all(np.isfinite(w)):
            return "w has inf or NaN"
        if abs(w.mean()) > 5 * std / np.sqrt(n):
            return f"the mean is {w.mean():.4g}; it should be 0 (within {5 * std / np.sqrt(n):.2g})"
        if abs(w.std() / std - 1) > 5 / np.sqrt(2 * n) + 0.01:
            return f"the std is {w.std():.4g}, expected sqrt(2 / fan_in) = {std:.4g}"
        if abs(_kurtosis(w) - 3) > 0.5 + 10 / np.sqrt(n):
            return f"the distribution is not normal (kurtosis {_kurtosis(w):.2f}, a normal's is 3)"
        if not np.array_equal(w, r["w_again"]) or np.array_equal(w, r["w_other"]):
            return "the weights must come from rng: the same seed the same weights, another seed others"
        return None
    return check


# --------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------
OPTIM_SKELETON = '''"""Homework: SGD with momentum (and Nesterov), and Adam.   minicnn homework check optimizers

One step each, on NumPy arrays; return the new weights and the new state
(the grader hands your state back to you at the next step; start: zeros).

SGD with momentum mu (PyTorch's form, as minicnn.optim.SGD):
    v = mu * v + dw
    w = w - lr * (dw + mu * v)     if nesterov
    w = w - lr * v                 otherwise

Adam (Kingma & Ba; t = 1 at the first step):
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw**2
    m_hat = m / (1 - beta1**t),   v_hat = v / (1 - beta2**t)       (bias correction)
    w = w - lr * m_hat / (sqrt(v_hat) + eps)

Do not modify the arguments: return new arrays.
"""
import numpy as np


def sgd_step(w, dw, v, lr, momentum, nesterov):
    # TODO: return w, v
    raise NotImplementedError("sgd_step")


def adam_step(w, dw, m, v, t, lr, beta1, beta2, eps):
    # TODO: return w, m, v
    raise NotImplementedError("adam_step")


if __name__ == "__main__":
    w, v = sgd_step(np.ones(2), np.ones(2), np.zeros(2), 0.1, 0.9, False)
    print(w, v)                                          # [0.9 0.9] [1. 1.]
    w, m, v = adam_step(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), 1, 0.1, 0.9, 0.999, 1e-8)
    print(w)                                             # [0.9 0.9]
'''

STEPS = 5


def _sgd_path(w, grads, lr, mu, nesterov, twice=False, ignore_nesterov=False):
    v = np.zeros_like(w)
    out = []
    for g in grads:
        v = mu * v + g
        if twice:
            w = w - lr * (mu * v + g) if not nesterov else w - lr * (g + mu * v + mu * v)
        else:
            w = w - lr * ((g + mu * v) if nesterov and not ignore_nesterov else v)
        out.append(w)
    return out


def _adam_path(w, grads, lr, b1, b2, eps, bias_correction=True, t0=1):
    m, v = np.zeros_like(w), np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, t0):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if bias_correction else (m, v)
        w = w - lr * mh / (np.sqrt(vh) + eps)
        out.append(w)
    return out


def optim_cases():
    rng = np.random.default_rng(SEED + 2)
    cases = []
    w0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(STEPS)]
    inputs = {"w0": w0, **{f"dw{i}": g for i, g in enumerate(grads)}, "zeros": np.zeros_like(w0)}
    for mu, nesterov in ((0.9, False), (0.9, True), (0.0, False)):
        lr = 0.1
        steps = [call("sgd_step", "$w0", "$dw0", "$zeros", lr, mu, nesterov, out=("w1", "v"))]
        steps += [call("sgd_step", f"$w{i}", f"$dw{i}", "$v", lr, mu, nesterov, out=(f"w{i + 1}", "v"))
                  for i in range(1, STEPS)]
        path = _sgd_path(w0, grads, lr, mu, nesterov)
        cases.append(Case(f"sgd momentum {mu}, nesterov {nesterov}, {STEPS} steps", 1, steps, inputs,
                          {f"w{i + 1}": w for i, w in enumerate(path)}, seed=SEED + 2,
                          args=dict(lr=lr, momentum=mu, nesterov=nesterov), diagnoses=[
                              ("momentum is applied twice: the step is lr * v (v already holds mu * v_old + dw)",
                               about("w1", lambda r, c, a=(w0, grads, lr, mu, nesterov): close(
                                   r["w1"], _sgd_path(*a, twice=True)[0]))),
                              ("Nesterov is ignored: with nesterov the step is lr * (dw + mu * v)",
                               about("w1", lambda r, c, a=(w0, grads, lr, mu, nesterov): a[4] and close(
                                   r["w1"], _sgd_path(*a, ignore_nesterov=True)[0]))),
                              ("the step goes up the gradient: w = w - lr * step", about(
                                  "w1", lambda r, c, w1=path[0]: close(r["w1"] - w0, -(w1 - w0))))]))
    for lr, b1, b2 in ((0.01, 0.9, 0.999), (0.1, 0.5, 0.9)):
        eps = 1e-8
        steps = [call("adam_step", "$w0", "$dw0", "$zeros", "$zeros", 1, lr, b1, b2, eps, out=("w1", "m", "v"))]
        steps += [call("adam_step", f"$w{i}", f"$dw{i}", "$m", "$v", i + 1, lr, b1, b2, eps,
                       out=(f"w{i + 1}", "m", "v")) for i in range(1, STEPS)]
        path = _adam_path(w0, grads, lr, b1, b2, eps)
        cases.append(Case(f"adam lr {lr}, betas ({b1}, {b2}), {STEPS} steps", 1, steps, inputs,
                          {f"w{i + 1}": w for i, w in enumerate(path)}, seed=SEED + 2,
                          args=dict(lr=lr, beta1=b1, beta2=b2, eps=eps), diagnoses=[
                              ("Adam without bias correction: divide m by (1 - beta1**t) and v by (1 - beta2**t)",
                               about("w1", lambda r, c, a=(w0, grads, lr, b1, b2, eps): close(
                                   r["w1"], _adam_path(*a, bias_correction=False)[0]))),
                              ("the bias correction uses t + 1 (t is 1 at the first step)",
                               about("w1", lambda r, c, a=(w0, grads, lr, b1, b2, eps): close(
                                   r["w1"], _adam_path(*a, t0=2)[0])))]))
    return cases
