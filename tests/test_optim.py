"""minicnn.optim against torch.optim: same float64 params and grads, same steps."""
import math

import numpy as np
import pytest

import minicnn
from minicnn import nn, optim
from minicnn.nn import Parameter
from minicnn.optim import lr_scheduler
from minicnn.serialization import load, save

SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def grads_for(step, seed=1):
    rng = np.random.default_rng(seed + 1000 * step)
    return [rng.standard_normal(s) for s in SHAPES]


def run_minicnn(make_opt, steps, groups=None, skip=None):
    params = [Parameter(a.copy()) for a in make_params()]
    opt = make_opt(params if groups is None else groups(params))
    for t in range(steps):
        for i, (p, g) in enumerate(zip(params, grads_for(t))):
            p.grad = None if skip is not None and (t, i) in skip else g
        opt.step()
    return params, opt


def run_torch(torch, make_opt, steps, groups=None, skip=None):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in make_params()]
    opt = make_opt(params if groups is None else groups(params))
    for t in range(steps):
        for i, (p, g) in enumerate(zip(params, grads_for(t))):
            p.grad = None if skip is not None and (t, i) in skip else torch.tensor(g)
        opt.step()
    return params, opt


def assert_params_close(ours, theirs, rtol=1e-12):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = b.detach().numpy()
        assert a.dtype == np.float64
        np.testing.assert_allclose(a.data, b, rtol=rtol, atol=1e-14, err_msg=f"param {i}")


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    dict(lr=0.05, weight_decay=0.1),
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_torch(torch, cfg):
    ours, _ = run_minicnn(lambda p: optim.SGD(p, **cfg), steps=6)
    theirs, _ = run_torch(torch, lambda p: torch.optim.SGD(p, **cfg), steps=6)
    assert_params_close(ours, theirs)


ADAM_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
]


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_adam_adamw_match_torch(torch, name, cfg):
    ours, _ = run_minicnn(lambda p: getattr(optim, name)(p, **cfg), steps=7)
    theirs, _ = run_torch(torch, lambda p: getattr(torch.optim, name)(p, **cfg), steps=7)
    assert_params_close(ours, theirs)


def test_adamw_default_weight_decay(torch):
    ours, _ = run_minicnn(lambda p: optim.AdamW(p), steps=4)
    theirs, _ = run_torch(torch, lambda p: torch.optim.AdamW(p), steps=4)
    assert_params_close(ours, theirs)
    assert optim.AdamW([Parameter(np.ones(2))]).param_groups[0]["weight_decay"] == 1e-2


@pytest.mark.parametrize("name,cfg", [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
                                      ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
                                      ("AdamW", dict(lr=1e-2, weight_decay=1e-1))])
def test_param_groups_with_different_options(torch, name, cfg):
    def groups(p):
        return [{"params": [p[0], p[2]]}, {"params": [p[1]], "weight_decay": 0, "lr": cfg["lr"] / 2}]

    ours, opt = run_minicnn(lambda g: getattr(optim, name)(g, **cfg), steps=5, groups=groups)
    theirs, _ = run_torch(torch, lambda g: getattr(torch.optim, name)(g, **cfg), steps=5, groups=groups)
    assert_params_close(ours, theirs)
    assert opt.param_groups[1]["weight_decay"] == 0
    assert opt.param_groups[0]["weight_decay"] == cfg["weight_decay"]


@pytest.mark.parametrize("name,cfg", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=1e-2))])
def test_params_without_grad_are_skipped(torch, name, cfg):
    skip = {(0, 1), (1, 1), (3, 0), (4, 2)}
    ours, opt = run_minicnn(lambda p: getattr(optim, name)(p, **cfg), steps=6, skip=skip)
    theirs, _ = run_torch(torch, lambda p: getattr(torch.optim, name)(p, **cfg), steps=6, skip=skip)
    assert_params_close(ours, theirs)
    if name == "Adam":
        assert opt.state[ours[1]]["step"] == 4
    p = Parameter(np.ones(3))
    o = getattr(optim, name)([p], **cfg)
    o.step()
    np.testing.assert_array_equal(p.data, np.ones(3))
    assert p not in o.state or not o.state[p]


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda p: optim.Adam(p, lr=0.1, weight_decay=0.1),
                                  lambda p: optim.AdamW(p, lr=0.1)])
def test_grad_not_modified_and_params_updated_in_place(make):
    p = Parameter(np.random.default_rng(0).standard_normal((3, 3)))
    data = p.data
    g = np.random.default_rng(1).standard_normal((3, 3))
    opt = make([p])
    for _ in range(3):
        p.grad = g
        g_before = g.copy()
        opt.step()
        np.testing.assert_array_equal(p.grad, g_before)   # the optimizer never writes into p.grad
        assert p.grad is g
    assert p.data is data                                  # same array, updated in place


def test_float32_stays_float32():
    p = Parameter(np.ones((2, 2), dtype=np.float32))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4), optim.Adam([p], weight_decay=1e-4),
                optim.AdamW([p])):
        for _ in range(2):
            p.grad = np.full((2, 2), 0.5, dtype=np.float32)
            opt.step()
        assert p.data.dtype == np.float32
        for v in opt.state[p].values():
            if hasattr(v, "dtype"):
                assert v.dtype == np.float32


def test_zero_grad_sets_none():
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    model(minicnn.tensor(np.ones((4, 3), np.float32))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_training_a_small_model_lowers_the_loss():
    minicnn.nn.init.manual_seed(0)
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((64, 5)).astype(np.float32))
    y = (x.data[:, 0] + x.data[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.3 * first


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: optim.Adam([{"params": p[:2]}, {"params": p[2:], "lr": 0.05}], lr=0.01, weight_decay=1e-3),
    lambda p: optim.AdamW(p, lr=0.01)])
def test_state_dict_round_trip_through_save_load(tmp_path, make):
    params = [Parameter(a) for a in make_params()]
    opt = make(params)
    for t in range(3):
        for p, g in zip(params, grads_for(t)):
            p.grad = g
        opt.step()
    save({"optimizer": opt.state_dict(), "params": [p.data for p in params]}, tmp_path / "o.npz")
    ckpt = load(tmp_path / "o.npz")

    params2 = [Parameter(a.copy()) for a in ckpt["params"]]
    opt2 = make(params2)
    opt2.load_state_dict(ckpt["optimizer"])
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt2.param_groups] == \
           [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    for t in range(3, 6):
        for p, p2, g in zip(params, params2, grads_for(t)):
            p.grad, p2.grad = g, g.copy()
        opt.step()
        opt2.step()
    for p, p2 in zip(params, params2):
        np.testing.assert_array_equal(p.data, p2.data)


def test_state_dict_is_a_snapshot_and_uses_indices():
    params = [Parameter(a) for a in make_params()]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, grads_for(0)):
        p.grad = g
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"]) == {"0", "1", "2"}
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    buf = sd["state"]["0"]["momentum_buffer"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"]["0"]["momentum_buffer"], buf)


def test_load_state_dict_errors():
    params = [Parameter(a) for a in make_params()]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, grads_for(0)):
        p.grad = g
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="group 0 has 3 parameter"):
        optim.SGD(params[:2], lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="1 parameter group.*2"):
        optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    other = [Parameter(np.zeros((4, 4))), Parameter(np.zeros(5)), Parameter(np.zeros((2, 3, 2, 2)))]
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 4\)"):
        optim.SGD(other, lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"weights": 1})


def test_validation_errors():
    p = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(p, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.SGD(p, lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        optim.Adam(p, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="beta2"):
        optim.Adam(p, betas=(0.9, -0.1))
    with pytest.raises(ValueError, match="eps"):
        optim.AdamW(p, eps=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p[0], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p[0], p[0]], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": p}, {"params": p}], lr=0.1)
    with pytest.raises(ValueError, match="unknown option.*momentun"):
        optim.SGD([{"params": p, "momentun": 0.9}], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([{"params": p, "lr": -1}], lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)
    opt = optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": p})
    q = Parameter(np.ones(3))
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0


def test_closure_is_called():
    p = Parameter(np.array([3.0]))
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0
    np.testing.assert_allclose(p.data, [3.0 - 0.25 * 6.0])


def test_state_follows_module_to_device_and_dtype():
    model = nn.Linear(2, 2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    model.to("cpu")
    opt.step()
    assert opt.param_groups[0]["params"][0] is model.weight


# ------------------------------------------------------------------ schedulers
def _lr_sequences(torch, make_ours, make_theirs, steps, lr=0.1, groups=1, opt="SGD"):
    ps = [Parameter(np.zeros(1)) for _ in range(groups)]
    tp = [torch.zeros(1, requires_grad=True) for _ in range(groups)]
    ours_opt = getattr(optim, opt)([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)], lr=lr,
                                   **({"momentum": 0.9} if opt == "SGD" else {}))
    theirs_opt = getattr(torch.optim, opt)([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(tp)], lr=lr,
                                           **({"momentum": 0.9} if opt == "SGD" else {}))
    ours, theirs = make_ours(ours_opt), make_theirs(theirs_opt)
    seq_o, seq_t = [ours.get_last_lr()], [theirs.get_last_lr()]
    mom_o, mom_t = [], []
    key = "momentum" if opt == "SGD" else "betas"
    for _ in range(steps):
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()
        seq_o.append(ours.get_last_lr())
        seq_t.append(theirs.get_last_lr())
        mom_o.append([g[key] for g in ours_opt.param_groups])
        mom_t.append([g[key] for g in theirs_opt.param_groups])
        assert [g["lr"] for g in ours_opt.param_groups] == seq_o[-1]
    np.testing.assert_allclose(np.array(seq_o), np.array(seq_t), rtol=1e-12, atol=1e-15)
    return ours, mom_o, mom_t


def test_steplr(torch):
    _lr_sequences(torch, lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
                  lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 20, groups=2)


def test_multisteplr(torch):
    _lr_sequences(torch, lambda o: optim.MultiStepLR(o, milestones=[8, 3, 12], gamma=0.1),
                  lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[8, 3, 12], gamma=0.1), 20)


@pytest.mark.parametrize("eta_min", [0.0, 1e-3])
def test_cosine(torch, eta_min):
    _lr_sequences(torch, lambda o: optim.CosineAnnealingLR(o, T_max=10, eta_min=eta_min),
                  lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=eta_min), 15,
                  groups=2)


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
@pytest.mark.parametrize("kw", [dict(), dict(anneal_strategy="linear", pct_start=0.25),
                                dict(div_factor=10.0, final_div_factor=100.0, cycle_momentum=False)])
def test_onecycle(torch, kw, opt):
    _, mom_o, mom_t = _lr_sequences(
        torch, lambda o: optim.OneCycleLR(o, max_lr=[0.5, 1.0], total_steps=23, **kw),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.5, 1.0], total_steps=23, **kw),
        22, groups=2, opt=opt)
    flat = lambda seq: np.array([[m[0] if isinstance(m, tuple) else m for m in row] for row in seq])  # noqa: E731
    np.testing.assert_allclose(flat(mom_o), flat(mom_t), rtol=1e-12)


def test_onecycle_epochs_and_too_many_steps():
    p = Parameter(np.zeros(1))
    s = optim.OneCycleLR(optim.SGD([p], lr=0.1), max_lr=0.1, epochs=2, steps_per_epoch=3)
    assert s.total_steps == 6
    for _ in range(6):
        s.step()
    with pytest.raises(ValueError, match="total_steps"):
        s.step()
    with pytest.raises(ValueError, match="total_steps"):
        optim.OneCycleLR(optim.SGD([p], lr=0.1), max_lr=0.1)


@pytest.mark.parametrize("start_factor", [0.1, 0.5])
def test_linear_warmup_then_cosine(torch, start_factor):
    def ours(o):
        return optim.LinearWarmup(o, 4, after=optim.CosineAnnealingLR(o, T_max=10), start_factor=start_factor)

    def theirs(o):
        s = torch.optim.lr_scheduler
        return s.SequentialLR(o, [s.LinearLR(o, start_factor=start_factor, end_factor=1.0, total_iters=4),
                                  s.CosineAnnealingLR(o, T_max=10)], milestones=[4])

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _lr_sequences(torch, ours, theirs, 13, groups=2)


def test_linear_warmup_alone():
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    s = optim.LinearWarmup(opt, 4, start_factor=0.0)
    lrs = [s.get_last_lr()[0]]
    for _ in range(6):
        s.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, 2, gamma=0.5),
    lambda o: optim.MultiStepLR(o, [2, 5]),
    lambda o: optim.CosineAnnealingLR(o, 7, eta_min=0.01),
    lambda o: optim.OneCycleLR(o, max_lr=1.0, total_steps=12),
    lambda o: optim.LinearWarmup(o, 3, after=optim.CosineAnnealingLR(o, 6))])
def test_scheduler_resume_through_save_load(tmp_path, make):
    def build():
        p = Parameter(np.zeros(1))
        opt = optim.SGD([p], lr=0.1, momentum=0.9)
        return opt, make(opt)

    opt, sched = build()
    for _ in range(4):
        opt.step()
        sched.step()
    save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.npz")
    ckpt = load(tmp_path / "s.npz")
    opt2, sched2 = build()
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(5):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        assert opt2.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"]


def test_scheduler_errors():
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match="milestones"):
        optim.MultiStepLR(opt, [-1])
    with pytest.raises(TypeError, match="Optimizer"):
        optim.StepLR(object(), 3)
    with pytest.raises(ValueError, match="anneal_strategy"):
        optim.OneCycleLR(opt, 0.1, 10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="max_lr"):
        optim.OneCycleLR(opt, [0.1, 0.2], 10)
    assert lr_scheduler.StepLR is optim.StepLR
    assert math.isclose(optim.StepLR(opt, 3).get_last_lr()[0], 0.1)
