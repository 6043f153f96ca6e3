"""The autograd engine: Tensor, Function, backward walk, grad mode, memory."""
import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import Function, Tensor, gradcheck, no_grad, tensor


# ------------------------------------------------------------------ tensor()
def test_tensor_dtype_rules():
    assert tensor(1.5).dtype == np.float32
    assert tensor([1.0, 2.0]).dtype == np.float32
    assert tensor(np.zeros(3, dtype=np.float64)).dtype == np.float64   # arrays keep dtype
    assert tensor([1, 2, 3]).dtype.kind == "i"                          # labels stay integer
    assert tensor(np.arange(3)).dtype == np.arange(3).dtype
    assert tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_tensor_properties():
    t = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6
    assert t.xp is np and t.device == "cpu" and t.is_leaf
    assert isinstance(t.numpy(), np.ndarray)
    assert tensor(3.0).item() == 3.0
    d = t.detach()
    assert not d.requires_grad and d.data is t.data
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    assert "requires_grad=True" in repr(t)


def test_requires_grad_needs_float():
    with pytest.raises(TypeError, match="floating"):
        tensor([1, 2, 3], requires_grad=True)


def test_integer_outputs_carry_no_grad():
    x = tensor(np.array([1.0, 3.0, 2.0]), requires_grad=True)
    assert not x.argmax().requires_grad
    assert not (x > 1).requires_grad


# ------------------------------------------------------------- backward walk
def test_shared_input_accumulates():
    # y = x*x + x uses x three times: dy/dx = 2x + 1
    x = tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_diamond_graph():
    # a -> (b, c) -> d: gradients from both branches meet at a
    a = tensor(np.array([0.5, 1.5]), requires_grad=True)
    b = a.exp()
    c = a * 3
    (b * c).sum().backward()
    np.testing.assert_allclose(a.grad, np.exp(a.data) * 3 * a.data + np.exp(a.data) * 3)


def test_grad_accumulates_across_backward_calls_until_zeroed():
    x = tensor(np.array([2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0])
    x.zero_grad()
    assert x.grad is None


def test_leaf_grads_never_share_memory():
    x = tensor(np.ones(3), requires_grad=True)
    y = tensor(np.ones(3), requires_grad=True)
    (x + y).sum().backward()
    x.grad[0] = 100.0
    assert y.grad[0] == 1.0


def test_deep_chain_no_recursion_limit():
    x = tensor(np.array([1.0]), requires_grad=True)
    y = x
    n = max(2000, sys.getrecursionlimit() + 500)
    for _ in range(n):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_backward_on_nonscalar_requires_grad_argument():
    x = tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"one-element.*shape \(2, 2\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 2\)"):
        y.backward(np.ones(3))
    y.backward(np.full((2, 2), 0.5))
    np.testing.assert_allclose(x.grad, np.ones((2, 2)))


def test_backward_without_grad_graph_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor(np.ones(1)).backward()


def test_check_finite():
    x = tensor(np.array([0.0]), requires_grad=True)
    with np.errstate(divide="ignore"):
        loss = (x.log() * 1.0).sum()     # -inf: a diverged loss
    with pytest.raises(FloatingPointError, match="not finite.*lower learning rate"):
        loss.backward(check_finite=True)


def test_graph_freed_after_backward_unless_retained():
    x = tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    z = (x * x).sum()
    w = z * 2
    w.backward()
    with pytest.raises(RuntimeError, match="already freed.*retain_graph=True"):
        (z * 3).backward()


def test_retain_grad_on_intermediate():
    x = tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)


# ----------------------------------------------------------------- grad mode
def test_no_grad_records_nothing():
    x = tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
        assert not minicnn.is_grad_enabled()
    assert minicnn.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None

    @no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad

    with no_grad():
        with minicnn.enable_grad():
            assert (x * 2).requires_grad

    @minicnn.enable_grad()
    def g():
        return minicnn.is_grad_enabled()
    with no_grad():
        assert g()


def test_grad_mode_is_per_thread():
    # no_grad() in one thread (an evaluation loop, a loader) leaves recording on elsewhere.
    import threading
    x = tensor(np.ones(3), requires_grad=True)
    inside, other = threading.Event(), {}

    def worker():
        inside.wait()
        other["enabled"] = minicnn.is_grad_enabled()
        other["records"] = (x * 2).requires_grad
    t = threading.Thread(target=worker)
    t.start()
    with no_grad():
        inside.set()
        t.join()
        assert not minicnn.is_grad_enabled()
    assert other == {"enabled": True, "records": True}


# ------------------------------------------------------ Function extension
class Cube(Function):
    """y = x**3, dL/dx = 3 x**2 g."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        return 3 * self.x ** 2 * g


class TwoOut(Function):
    """(x + y, x * y): two outputs."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x + y, x * y

    def backward(self, g_sum, g_prod):
        return g_sum + g_prod * self.y, g_sum + g_prod * self.x


def test_custom_function_like_the_docs():
    x = tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)
    Cube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2)
    assert gradcheck(Cube.apply, [np.random.default_rng(1).standard_normal((3, 2))]).passed


def test_multi_output_function_and_unused_output():
    rng = np.random.default_rng(0)
    rep = gradcheck(lambda a, b: TwoOut.apply(a, b), [rng.standard_normal(3), rng.standard_normal(3)])
    assert rep.passed, rep
    a = tensor(rng.standard_normal(3), requires_grad=True)
    b = tensor(rng.standard_normal(3), requires_grad=True)
    s, p = TwoOut.apply(a, b)
    p.sum().backward()          # the first output gets no gradient: zeros are fed
    np.testing.assert_allclose(a.grad, b.data)


def test_settings_are_passed_as_keywords():
    x = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = F.basic.Sum.apply(x, axis=1, keepdims=True)
    assert y.shape == (2, 1)


def test_wrong_backward_shape_is_reported_with_the_op_name():
    class BadShape(Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g.sum(axis=0)

    x = tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadShape.backward returned a gradient of shape \(3,\) for input 0, whose shape is \(2, 3\)"):
        BadShape.apply(x).sum().backward()


def test_wrong_number_of_grads_is_reported():
    class BadCount(Function):
        def forward(self, x, y):
            return x + y

        def backward(self, g):
            return g

    x = tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadCount.backward returned 1 gradient\(s\) for 2 input\(s\)"):
        BadCount.apply(x, x).sum().backward()


def test_python_numbers_adopt_tensor_dtype():
    x = tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (x * 2.5 + 1) / 3 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    x64 = tensor(np.ones(3), requires_grad=True)
    assert (2.0 * x64).dtype == np.float64


def test_numpy_scalars_do_not_promote_float32():
    x = tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    y = x / np.prod((2, 3)) + x * np.int64(2) + (x + np.array(2.0)) - np.float64(1.0)
    assert y.dtype == np.float32
    (y.sum() + x.max(axis=1).sum()).backward()
    assert x.grad.dtype == np.float32


def test_engine_casts_gradients_to_the_input_dtype():
    class Upcast(Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g.astype(np.float64) * 2     # a sloppy homework backward

    x = tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    Upcast.apply(x).sum().backward()
    assert x.grad.dtype == np.float32


def test_bool_of_a_tensor():
    assert bool(tensor(1.0)) and not bool(tensor(0.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tensor([1.0, 2.0]))


def test_ndarray_on_the_left_dispatches_to_tensor():
    x = tensor(np.ones(3), requires_grad=True)
    y = np.full(3, 2.0) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0, 2.0])


# -------------------------------------------------------------------- memory
def _mlp_step(params, x, t):
    w1, b1, w2, b2 = params
    h = F.relu(F.linear(x, w1, b1))
    loss = F.cross_entropy(F.linear(h, w2, b2), t)
    for p in params:
        p.grad = None
    loss.backward()
    for p in params:
        p.data -= 0.01 * p.grad
    return loss


def test_memory_flat_over_1000_steps():
    rng = np.random.default_rng(0)
    params = [tensor(rng.standard_normal((64, 32)).astype(np.float32) * 0.1, requires_grad=True),
              tensor(np.zeros(64, np.float32), requires_grad=True),
              tensor(rng.standard_normal((10, 64)).astype(np.float32) * 0.1, requires_grad=True),
              tensor(np.zeros(10, np.float32), requires_grad=True)]
    x = tensor(rng.standard_normal((32, 32)).astype(np.float32))
    t = rng.integers(0, 10, 32)
    for _ in range(50):
        _mlp_step(params, x, t)
    gc.collect()
    tracemalloc.start()
    for _ in range(100):
        _mlp_step(params, x, t)
    gc.collect()
    after_100 = tracemalloc.get_traced_memory()[0]
    for _ in range(900):
        _mlp_step(params, x, t)
    gc.collect()
    after_1000 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # A leak of one 32x64 float32 activation per step would add >8 MB over 900 steps.
    assert after_1000 - after_100 < 64 * 1024, (after_100, after_1000)


def test_graph_is_released_after_backward():
    x = tensor(np.ones((4, 4)), requires_grad=True)
    y = (x * 2).exp()
    fn_ref = weakref.ref(y._ctx)
    loss = y.sum()
    loss.backward()
    del y, loss
    gc.collect()
    assert fn_ref() is None


def test_whole_step_stays_float32_with_int64_labels():
    rng = np.random.default_rng(0)
    w = tensor(rng.standard_normal((10, 8)).astype(np.float32), requires_grad=True)
    x = tensor(rng.standard_normal((5, 8)).astype(np.float32), requires_grad=True)
    labels = tensor(rng.integers(0, 10, 5).astype(np.int64))
    loss = F.cross_entropy(F.linear(x, w), labels, label_smoothing=0.1)
    assert loss.dtype == np.float32
    loss.backward()
    assert w.grad.dtype == np.float32 and x.grad.dtype == np.float32


# ---------------------------------------------------------------- issue: backward twice
def test_second_backward_through_a_freed_graph_says_how_to_keep_it():
    # The case: a loss (CrossEntropy at the root) backwarded twice.
    logits = tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 1, 2, 1]))
    loss.backward()
    with pytest.raises(RuntimeError, match=r"graph was already freed after the first backward.*"
                                           r"retain_graph=True"):
        loss.backward()
    g_once = logits.grad.copy()
    # kept with retain_graph=True, the second call adds the same gradient again
    loss2 = F.cross_entropy(logits, np.array([0, 1, 2, 1]))
    logits.zero_grad()
    loss2.backward(retain_graph=True)
    loss2.backward()
    np.testing.assert_allclose(logits.grad, 2 * g_once, rtol=1e-12)


# ---------------------------------------------------------------- None for an absent input
def test_apply_accepts_none_for_an_absent_input():
    class AffineOp(Function):
        """y = x * w + b (b may be None: no bias).   dx = g * w,  dw = sum(g * x),  db = sum(g)."""

        def forward(self, x, w, b):
            self.x, self.w = x, w
            return x * w if b is None else x * w + b

        def backward(self, g):
            db = g.sum() if self.needs_input_grad[2] else None
            return g * self.w, (g * self.x).sum(), db

    x = tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = tensor(np.array(3.0), requires_grad=True)
    y = AffineOp.apply(x, w, None)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])
    assert w.grad == 3.0
    b = tensor(np.array(0.5), requires_grad=True)
    y = AffineOp.apply(x, w, b)
    assert y.data.tolist() == [3.5, 6.5]
    y.sum().backward()
    assert b.grad == 2.0


@pytest.mark.parametrize("op, args", [
    ("conv2d", lambda r: (r.standard_normal((1, 2, 4, 4)), r.standard_normal((3, 2, 3, 3)))),
    ("batch_norm", lambda r: (r.standard_normal((4, 3)), None, None)),
])
def test_builtin_ops_take_none_for_an_absent_bias(op, args):
    r = np.random.default_rng(1)
    a = args(r)
    x = tensor(a[0], requires_grad=True)
    if op == "conv2d":
        w = tensor(a[1], requires_grad=True)
        F.conv2d(x, w, None, padding=1).sum().backward()
        assert w.grad is not None
    else:
        F.batch_norm(x, None, None, None, None, training=True).backward(r.standard_normal((4, 3)))
    assert x.grad is not None


# ---------------------------------------------------------------- one dtype rule, one message style
def test_float32_and_float64_promote_to_float64_in_every_op_and_grads_keep_their_dtype():
    r = np.random.default_rng(2)
    x32 = tensor(r.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    w64 = tensor(r.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(x32, w64)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.data, F.conv2d(x32.data.astype(np.float64), w64.data).data, rtol=1e-12)
    y.sum().backward()
    assert x32.grad.dtype == np.float32 and w64.grad.dtype == np.float64
    a, b = tensor(np.ones(3, np.float32), requires_grad=True), tensor(np.ones(3))
    assert (a + b).dtype == np.float64 and (a * b).dtype == np.float64
    assert (a @ b).dtype == np.float64
    assert (a * 0.5).dtype == np.float32          # Python numbers adopt the tensor's dtype


@pytest.mark.parametrize("expr, name", [(lambda a, b: a + b, "Add"), (lambda a, b: a * b, "Mul"),
                                        (lambda a, b: a - b, "Sub"), (lambda a, b: a / b, "Div"),
                                        (lambda a, b: F.where(np.ones((2, 3), bool), a, b), "Where")])
def test_broadcasting_errors_name_the_op_and_both_shapes(expr, name):
    a, b = tensor(np.ones((2, 3)), requires_grad=True), tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=rf"{name}: input shapes .*\(2, 3\).* and \(4,\) cannot be broadcast"):
        expr(a, b)
