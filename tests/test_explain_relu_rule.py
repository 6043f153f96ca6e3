"""The ReLU backward-rule switch (gradient / deconvnet / guided) that minicnn.explain builds on."""
import threading

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import nn


X = np.array([[-1.0, 2.0, 3.0, -4.0, 0.5]])
G = np.array([[1.0, -1.0, 2.0, 3.0, -0.5]])
EXPECTED = {
    "gradient": G * (X > 0),                 # [0, -1, 2, 0, -0.5]
    "deconvnet": np.maximum(G, 0),           # [1, 0, 2, 3, 0]
    "guided": np.maximum(G, 0) * (X > 0),    # [0, 0, 2, 0, 0]
}


@pytest.mark.parametrize("rule", F.RELU_BACKWARD_RULES)
def test_each_rule_by_hand(rule, xp):
    x = minicnn.tensor(xp.asarray(X), requires_grad=True)
    with F.relu_backward_rule(rule):
        y = F.relu(x)
        y.backward(xp.asarray(G))
    np.testing.assert_array_equal(minicnn.backend.to_device(x.grad, "cpu"), EXPECTED[rule])
    np.testing.assert_array_equal(minicnn.backend.to_device(y.data, "cpu"), np.maximum(X, 0))


def test_rule_is_read_at_backward_time_and_restored():
    x = minicnn.tensor(X, requires_grad=True)
    y = F.relu(x)                               # forward outside the block
    with F.relu_backward_rule("deconvnet"):
        with F.relu_backward_rule("guided"):
            pass
        y.backward(G)                           # the outer rule is back after the inner block
    np.testing.assert_array_equal(x.grad, EXPECTED["deconvnet"])
    x.grad = None
    F.relu(x).backward(G)                       # and the default after the outer one
    np.testing.assert_array_equal(x.grad, EXPECTED["gradient"])


def test_rule_restored_after_an_error_and_bad_rule_named():
    with pytest.raises(RuntimeError):
        with F.relu_backward_rule("guided"):
            raise RuntimeError("boom")
    x = minicnn.tensor(X, requires_grad=True)
    F.relu(x).backward(G)
    np.testing.assert_array_equal(x.grad, EXPECTED["gradient"])
    with pytest.raises(ValueError, match="rule must be one of gradient, deconvnet, guided, got 'backprop'"):
        F.relu_backward_rule("backprop")


def test_rule_is_per_thread():
    x = minicnn.tensor(X, requires_grad=True)
    seen = {}

    def other():
        t = minicnn.tensor(X, requires_grad=True)
        F.relu(t).backward(G)
        seen["grad"] = t.grad

    with F.relu_backward_rule("deconvnet"):
        th = threading.Thread(target=other)
        th.start()
        th.join()
        F.relu(x).backward(G)
    np.testing.assert_array_equal(seen["grad"], EXPECTED["gradient"])
    np.testing.assert_array_equal(x.grad, EXPECTED["deconvnet"])


def test_one_relu_module_used_twice():
    # y = w2 . relu(W1 relu(x)) with the SAME nn.ReLU at both places.
    # x = [1, -1], W1 = [[1, 1], [-1, 0]], w2 = [1, -1]:
    # a1 = relu(x) = [1, 0]; z = W1 a1 = [1, -1]; a2 = relu(z) = [1, 0]; y = 1.
    # dy/da2 = [1, -1] -> gradient: mask z>0 -> [1, 0] -> W1^T -> [1, 1] -> mask x>0 -> [1, 0]
    # deconvnet: relu(g) = [1, 0] -> W1^T [1, 0] = [1, 1] -> relu -> [1, 1]
    # guided: both masks -> [1, 0] -> [1, 1] -> [1, 0]
    relu = nn.ReLU()
    l1, l2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    l1.weight.data[...] = [[1, 1], [-1, 0]]
    l2.weight.data[...] = [[1, -1]]
    net = nn.Sequential(relu, l1, relu, l2)
    expected = {"gradient": [1, 0], "deconvnet": [1, 1], "guided": [1, 0]}
    for rule, want in expected.items():
        x = minicnn.tensor(np.array([[1.0, -1.0]], dtype=np.float32), requires_grad=True)
        with F.relu_backward_rule(rule):
            net(x).sum().backward()
        np.testing.assert_array_equal(x.grad[0], want, err_msg=rule)
