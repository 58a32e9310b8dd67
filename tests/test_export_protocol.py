"""torch's optimizer protocol, as a battery over every zoo design x every eager backend (like
torch's OptimizerInfo table), plus checkpoint interoperability with torch.optim, error behaviour
and non-finite gradient handling. The compiled backend runs a subset in test_export_compiled.py."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import ctopt
from ctopt.errors import DesignError, HyperparameterError, UnsupportedError
from ctopt.export import NonFiniteGradientError, StateDictError

NAMES = ctopt.zoo.names()
BACKENDS = ("forloop", "foreach")


def opt_class(name):
    return ctopt.to_torch(ctopt.zoo.get(name))


def params(seed=0, dtype=torch.float32, shapes=((4, 3), (3,), (2, 2, 2))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def set_grads(ps, seed):
    gen = torch.Generator().manual_seed(1000 + seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) + 0.1 * p


def train(opt, ps, steps, start=0):
    for i in range(start, start + steps):
        set_grads(ps, i)
        opt.step()


def snapshot(opt, ps):
    return [p.detach().clone() for p in ps], copy.deepcopy(opt.state_dict())


def same(a, b) -> bool:
    """Bit-identical nested structures of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) or (
            a.isnan().any() and torch.equal(a.isnan(), b.isnan()))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


battery = pytest.mark.parametrize("name", NAMES)
backends = pytest.mark.parametrize("backend", BACKENDS)


@battery
@backends
def test_moves_downhill_and_state_names(name, backend):
    ps = params()
    opt = opt_class(name)(ps, lr=0.01, backend=backend)
    before = [p.detach().clone() for p in ps]
    set_grads(ps, 0)
    opt.step()
    d = ctopt.zoo.get(name)
    for p, b in zip(ps, before, strict=True):
        assert not torch.equal(p, b)
        state = opt.state[p]
        assert set(state) == {"step", *(s.key for s in d.states)}
        assert isinstance(state["step"], torch.Tensor) and state["step"].item() == 1.0


@battery
@backends
def test_param_groups_have_their_own_hyperparameters(name, backend):
    cls = opt_class(name)
    a, b = params(), params()
    opt = cls([{"params": a[:2], "lr": 0.01}, {"params": a[2:], "lr": 0.003}], backend=backend)
    one = cls(b[:2], lr=0.01, backend=backend)
    two = cls(b[2:], lr=0.003, backend=backend)
    for i in range(3):
        set_grads(a, i)
        set_grads(b, i)
        opt.step()
        one.step()
        two.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@battery
@backends
def test_state_dict_round_trip_then_identical(name, backend):
    cls = opt_class(name)
    a = params()
    opt = cls(a, lr=0.01, backend=backend)
    train(opt, a, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt2 = cls(b, lr=0.5, backend=backend)
    opt2.load_state_dict(loaded)
    assert opt2.param_groups[0]["lr"] == 0.01
    train(opt, a, 10, start=3)
    train(opt2, b, 10, start=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@battery
@backends
def test_closure_none_grad_frozen_zero_size(name, backend):
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    no_grad = torch.nn.Parameter(torch.ones(2))
    empty = torch.nn.Parameter(torch.ones(0))
    live = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = opt_class(name)([frozen, no_grad, empty, live], lr=0.01, backend=backend)

    def closure():
        opt.zero_grad()
        loss = (live**2).sum() + empty.sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert torch.equal(frozen, torch.ones(3)) and torch.equal(no_grad, torch.ones(2))
    assert frozen not in opt.state and no_grad not in opt.state
    assert empty in opt.state and live in opt.state
    assert not torch.equal(live, torch.tensor([1.0, -2.0]))
    opt.zero_grad()
    assert live.grad is None


@battery
@backends
def test_zero_gradients_stay_finite(name, backend):
    ps = params()
    opt = opt_class(name)(ps, lr=0.01, backend=backend)
    for _ in range(3):
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in ps)


@battery
@backends
def test_deepcopy_repr_hooks(name, backend):
    ps = params()
    opt = opt_class(name)(ps, lr=0.01, backend=backend, nonfinite="skip")
    train(opt, ps, 2)
    clone = copy.deepcopy(opt)
    assert clone.backend == backend and clone.nonfinite == "skip"
    text = repr(opt)
    assert name in text and "Parameter Group 0" in text and "lr: 0.01" in text
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    train(opt, ps, 1, start=2)
    assert calls == ["pre", "post"]
    cps = [p for g in clone.param_groups for p in g["params"]]
    train(clone, cps, 1, start=2)
    assert all(torch.equal(x, y) for x, y in zip(ps, cps, strict=True))


@battery
@backends
def test_mixed_dtypes_in_one_optimizer(name, backend):
    ps = [torch.nn.Parameter(torch.randn(5, dtype=dt)) for dt in
          (torch.float32, torch.float64, torch.bfloat16)]
    opt = opt_class(name)(ps, lr=0.01, backend=backend)
    train(opt, ps, 3)
    assert [p.dtype for p in ps] == [torch.float32, torch.float64, torch.bfloat16]
    assert all(torch.isfinite(p).all() for p in ps)
    assert all(opt.state[p][k].dtype == p.dtype for p in ps for k in opt.state_keys)


@battery
def test_step_lr_equals_manual_lr(name):
    cls = opt_class(name)
    a, b = params(), params()
    opt, manual = cls(a, lr=0.01), cls(b, lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for i in range(5):
        set_grads(a, i)
        set_grads(b, i)
        opt.step()
        manual.step()
        sched.step()
        manual.param_groups[0]["lr"] = 0.01 * 0.5 ** ((i + 1) // 2)
    assert all(torch.allclose(x, y, rtol=0, atol=1e-7) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["adam", "adan", "heavy_ball", "rmsprop"])
def test_one_cycle_cycles_betas_or_momentum(name):
    ps = params()
    opt = opt_class(name)(ps, lr=0.01)
    key = "betas" if "betas" in opt.defaults else "momentum"
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10,
                                                base_momentum=0.5, max_momentum=0.9)
    seen = set()
    for i in range(6):
        set_grads(ps, i)
        opt.step()
        sched.step()
        value = opt.param_groups[0][key]
        seen.add(value[0] if key == "betas" else value)
    assert len(seen) > 3
    assert all(torch.isfinite(p).all() for p in ps)


def test_betas_and_named_parameters():
    model = torch.nn.Linear(3, 2)
    opt = opt_class("adam")(model.named_parameters(), betas=(0.5, 0.75))
    assert opt.param_groups[0]["betas"] == (0.5, 0.75)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    with pytest.raises(HyperparameterError, match="either betas or beta1"):
        opt_class("adam")(model.parameters(), beta1=0.3, betas=(0.5, 0.75))
    with pytest.raises(HyperparameterError, match="3 entries"):
        opt_class("adan")(model.parameters(), betas=(0.5, 0.75))
    with pytest.raises(HyperparameterError, match="no beta"):
        opt_class("sgd")(model.parameters(), betas=(0.5, 0.75))


@battery
def test_maximize_is_minimizing_the_negation(name):
    cls = opt_class(name)
    a, b = params(), params()
    up, down = cls(a, lr=0.01, maximize=True), cls(b, lr=0.01)
    for i in range(3):
        set_grads(a, i)
        set_grads(b, i)
        for p in a:
            p.grad.neg_()
        up.step()
        down.step()
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))


@battery
def test_grad_scaler(name):
    model = torch.nn.Linear(4, 1)
    opt = opt_class(name)(model.parameters(), lr=0.01, nonfinite="skip")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x = torch.randn(8, 4)
    for i in range(3):
        opt.zero_grad()
        loss = model(x).pow(2).mean() * (float("inf") if i == 1 else 1.0)
        scaler.scale(loss).backward()
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        changed = any(not torch.equal(p, b) for p, b in zip(model.parameters(), before,
                                                              strict=True))
        assert changed == (i != 1)
    assert all(opt.state[p]["step"].item() == 2 for p in model.parameters())


# --------------------------------------------------------------- checkpoints with torch.optim
INTEROP = {
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "rmsprop_momentum": (torch.optim.RMSprop, {"momentum": 0.5}),
    "heavy_ball": (torch.optim.SGD, {"momentum": 0.9}),
    "amsgrad": (torch.optim.Adam, {"amsgrad": True}),
}


@pytest.mark.parametrize("case", sorted(INTEROP))
@pytest.mark.parametrize("direction", ["torch_to_ctopt", "ctopt_to_torch"])
def test_checkpoints_load_both_ways(case, direction):
    torch_cls, extra = INTEROP[case]
    name = case.split("_momentum")[0]
    ours = opt_class(name)
    hyper = {k: v for k, v in extra.items() if k != "amsgrad"}
    make_torch = lambda ps: torch_cls(ps, lr=0.01, foreach=False, **extra)  # noqa: E731
    make_ours = lambda ps: ours(ps, lr=0.01, backend="foreach", **hyper)  # noqa: E731
    first, second = (make_torch, make_ours) if direction == "torch_to_ctopt" else \
        (make_ours, make_torch)
    a = params()
    opt = first(a)
    train(opt, a, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt2 = second(b)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    reference = first(a)
    reference.load_state_dict(opt.state_dict())
    train(reference, a, 5, start=3)
    train(opt2, b, 5, start=3)
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------- errors change nothing
def test_constructor_errors_name_the_parameter_and_domain():
    ps = params()
    with pytest.raises(HyperparameterError, match=r"'lr' = -1.0 is outside its domain \[0, inf\)"):
        opt_class("adam")(ps, lr=-1.0)
    with pytest.raises(HyperparameterError, match=r"'beta2' = 1.0 .*\[0, 1\)"):
        opt_class("adam")(ps, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum'"):
        opt_class("adam")(ps, momentum=0.9)
    with pytest.raises(HyperparameterError, match="'eps' = nan"):
        opt_class("adam")(ps, eps=float("nan"))
    with pytest.raises(UnsupportedError, match="backend"):
        opt_class("adam")(ps, backend="cuda-graphs")
    with pytest.raises(UnsupportedError, match="nonfinite"):
        opt_class("adam")(ps, nonfinite="ignore")


def test_add_param_group_error_leaves_optimizer_unchanged():
    a, b = params(), params(seed=1)
    opt = opt_class("adam")(a, lr=0.01)
    before = repr(opt)
    with pytest.raises(HyperparameterError, match="param group 1: hyperparameter 'eps'"):
        opt.add_param_group({"params": b, "eps": 0.0})
    assert repr(opt) == before and len(opt.param_groups) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_edited_param_group_is_checked_before_anything_changes(backend):
    ps = params()
    opt = opt_class("adam")(ps, lr=0.01, backend=backend)
    train(opt, ps, 2)
    state = snapshot(opt, ps)
    opt.param_groups[0]["betas"] = (0.9, 1.5)
    set_grads(ps, 7)
    with pytest.raises(HyperparameterError, match=r"param group 0: hyperparameter 'beta2'"):
        opt.step()
    after = snapshot(opt, ps)
    assert same(after[0], state[0]) and same(after[1]["state"], state[1]["state"])
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    opt.param_groups[0]["lr"] = torch.tensor(0.02)  # a tensor lr is accepted
    opt.step()


def test_load_state_dict_errors_leave_optimizer_unchanged():
    ps = params()
    opt = opt_class("adam")(ps, lr=0.01)
    train(opt, ps, 2)
    good = copy.deepcopy(opt.state_dict())
    state = snapshot(opt, ps)
    bad_groups = copy.deepcopy(good)
    bad_groups["param_groups"].append(copy.deepcopy(bad_groups["param_groups"][0]))
    missing = copy.deepcopy(good)
    del missing["state"][0]["exp_avg"]
    shaped = copy.deepcopy(good)
    shaped["state"][1]["exp_avg_sq"] = torch.zeros(7)
    domain = copy.deepcopy(good)
    domain["param_groups"][0]["lr"] = -3.0
    count = copy.deepcopy(good)
    count["param_groups"][0]["params"] = [0, 1]
    for bad, error, message in [
        (bad_groups, StateDictError, "2 param groups, the optimizer 1"),
        (missing, StateDictError, "'exp_avg' is missing"),
        (shaped, StateDictError, r"'exp_avg_sq' has shape \(7,\)"),
        (domain, HyperparameterError, "'lr' = -3.0"),
        (count, StateDictError, "3 parameters, the state dict 2"),
    ]:
        with pytest.raises(error, match=message):
            opt.load_state_dict(bad)
        assert same(snapshot(opt, ps), state)


def test_missing_irrelevant_state_is_recreated():
    """torch's RMSprop (momentum=0) saves no momentum_buffer; it cannot matter, so it loads."""
    a = params()
    ref = torch.optim.RMSprop(a, lr=0.01)
    train(ref, a, 2)
    assert "momentum_buffer" not in ref.state[a[0]]
    opt = opt_class("rmsprop")(a, lr=0.01)
    opt.load_state_dict(ref.state_dict())
    assert torch.equal(opt.state[a[0]]["momentum_buffer"], torch.zeros_like(a[0]))
    bad = copy.deepcopy(ref.state_dict())
    bad["param_groups"][0]["momentum"] = 0.5  # now the buffer matters
    with pytest.raises(StateDictError, match="'momentum_buffer' is missing"):
        opt_class("rmsprop")(params(), lr=0.01).load_state_dict(bad)


# ----------------------------------------------------------------------- non-finite gradients
@battery
@backends
def test_nonfinite_skip_is_bit_identical_and_counted(name, backend):
    ps = params()
    opt = opt_class(name)(ps, lr=0.01, backend=backend, nonfinite="skip")
    train(opt, ps, 2)
    state = snapshot(opt, ps)
    set_grads(ps, 5)
    ps[1].grad[0] = float("nan")
    ps[2].grad[0, 0, 1] = float("inf")
    opt.step()
    assert same(snapshot(opt, ps)[0], state[0])
    after = opt.state_dict()
    assert after["skipped_steps"] == 1
    del after["skipped_steps"]
    assert same(after, {k: v for k, v in state[1].items() if k != "skipped_steps"})
    train(opt, ps, 1, start=6)
    assert opt.state_dict()["skipped_steps"] == 1


@battery
@backends
def test_nonfinite_raise_names_the_parameter(name, backend):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    opt = opt_class(name)(model.named_parameters(), lr=0.01, backend=backend, nonfinite="raise")
    model(torch.randn(4, 3)).sum().backward()
    model[1].weight.grad[0, 1] = float("-inf")
    state = snapshot(opt, list(model.parameters()))
    with pytest.raises(NonFiniteGradientError, match="'1.weight'"):
        opt.step()
    assert same(snapshot(opt, list(model.parameters())), state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_propagate_is_torch_behaviour(backend):
    a, b = params(), params()
    ours = opt_class("adam")(a, lr=0.01, backend=backend)
    ref = torch.optim.Adam(b, lr=0.01, foreach=False)
    for opt, ps in ((ours, a), (ref, b)):
        set_grads(ps, 0)
        ps[0].grad[1, 1] = float("nan")
        opt.step()
    assert all(torch.equal(x.isnan(), y.isnan()) for x, y in zip(a, b, strict=True))
    assert ours.state[a[0]]["exp_avg"].isnan().sum() == 1


# ------------------------------------------------------------------------------ the guard
def test_guard_refuses_an_unstable_filter():
    import sympy as sp

    from ctopt.design import REAL, DesignBuilder, g, theta
    from ctopt.filters import z

    b = DesignBuilder("unstable")
    lr = b.hyper("lr", 0.1, REAL)
    beta = b.hyper("beta", 1.5, REAL)
    b.filter("v", (1 - beta) * z / (z - beta), input=g**2)
    b.update(theta - lr * g / (sp.sqrt(sp.Symbol("v", real=True)) + 1))
    design = b.build()
    with pytest.raises(DesignError, match="fails the filter checks"):
        ctopt.to_torch(design)
    assert issubclass(ctopt.to_torch(design, check=False), torch.optim.Optimizer)


def test_guard_refuses_user_values_that_break_the_filter():
    Opt = ctopt.to_torch(ctopt.zoo.get("adamssm"))
    w = torch.nn.Parameter(torch.ones(3))
    message = r"zero <= Max\(beta2, pole\) violated for beta2=0.99, pole=0.5, zero=0.9999"
    with pytest.raises(HyperparameterError, match=message):
        Opt([w], pole=0.5, zero=0.9999, beta2=0.99)
    opt = Opt([w], pole=0.5, zero=0.9, beta2=0.99)
    with pytest.raises(HyperparameterError, match=r"param group 1: .*nonnegative impulse response"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "zero": 0.9999})
    assert len(opt.param_groups) == 1
    # value sets found valid are remembered; a refused one is checked, and refused, every time
    Opt([w], pole=0.5, zero=0.9, beta2=0.99)
    for _ in range(2):
        with pytest.raises(HyperparameterError, match=message):
            Opt([w], pole=0.5, zero=0.9999, beta2=0.99)
    with pytest.raises(HyperparameterError, match="nonnegative impulse response"):
        Opt([w], pole=torch.tensor(0.5), zero=0.9999, beta2=0.99)  # a tensor: checked every time
    unchecked = ctopt.to_torch(ctopt.zoo.get("adamssm"), check=False)
    unchecked([w], pole=0.5, zero=0.9999, beta2=0.99)  # the user's explicit choice


def test_to_torch_needs_a_design_and_auto_picks_the_eager_flat_path_for_small_models():
    with pytest.raises(DesignError, match="needs a ctopt Design"):
        ctopt.to_torch("adam")
    opt = opt_class("adam")(params(), lr=0.01)
    assert opt.backend == "auto" and opt._resolve_backend() == "flat"
    opt.flatten_parameters = False  # no flat layout: the foreach path
    assert opt._resolve_backend() == "foreach"
    with pytest.raises(StateDictError, match="unknown parameter id 7"):
        sd = opt.state_dict()
        sd["state"][7] = {"step": torch.tensor(1.0)}
        opt.load_state_dict(sd)
