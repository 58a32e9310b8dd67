"""The steady step's lean parts, each against what it stands in for: the step wrapper against
torch's own (hooks, the profiler's range, torch.compile), the optimizer-wide state marks
against a state replaced in every way a user can, the cached group values against live and
edited entries, and the bound kernel call against the ordinary call, bit for bit."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spies import kernel_calls
from torch.optim.optimizer import register_optimizer_step_post_hook

import ctopt
from ctopt.export.direct import HostVector
from ctopt.export.layout import FlatLayout, same_marks, state_marks

needs_compiler = pytest.mark.skipif(
    not ctopt.export.compiled.CompiledRunner(object).available(),
    reason="torch.compile has no compiler here")

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
Sgd = ctopt.to_torch(ctopt.zoo.get("sgd"))


def params(seed=0, dtype=torch.float32, sizes=(5, 7, 3)):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen, dtype=dtype)) for n in sizes]


def give_grads(ps, i):
    gen = torch.Generator().manual_seed(100 + i)
    for p in ps:
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


class RangeNames:
    """The names of the ``record_function`` ranges opened while it is installed."""

    def __init__(self, monkeypatch):
        self.names = []
        original = torch.autograd.profiler.record_function.__init__

        def init(rf, name, *args, **kwargs):
            self.names.append(name)
            original(rf, name, *args, **kwargs)

        monkeypatch.setattr(torch.autograd.profiler.record_function, "__init__", init)


# ----------------------------------------------------------------- the step wrapper
def test_the_step_runs_torchs_wrapper_exactly_when_a_hook_listens(monkeypatch):
    ranges = RangeNames(monkeypatch)
    torch_ps, ps = params(), params()
    reference = torch.optim.SGD(torch_ps, lr=0.1)
    opt = Sgd(ps, lr=0.1, backend="foreach")
    give_grads(torch_ps, 0), give_grads(ps, 0)
    reference.step()
    assert ranges.names == ["Optimizer.step#SGD.step"]  # torch's own, the positive control
    opt.step()
    assert ranges.names == ["Optimizer.step#SGD.step"]  # nobody listens: no range
    calls = {"torch": [], "ctopt": []}
    for label, o in (("torch", reference), ("ctopt", opt)):
        o.register_step_pre_hook(lambda o, a, k, label=label: calls[label].append("pre"))
        o.register_step_post_hook(lambda o, a, k, label=label: calls[label].append("post"))
    reference.step(), opt.step()
    assert calls["torch"] == calls["ctopt"] == ["pre", "post"]
    assert ranges.names[-1] == f"Optimizer.step#{type(opt).__name__}.step"
    for p, q in zip(torch_ps, ps, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_global_hooks_and_a_running_profiler_are_heard(monkeypatch):
    ranges = RangeNames(monkeypatch)
    ps = params()
    opt = Sgd(ps, lr=0.1, backend="foreach")
    give_grads(ps, 0)
    seen = []
    handle = register_optimizer_step_post_hook(
        lambda o, a, k: seen.append(o))
    try:
        opt.step()
    finally:
        handle.remove()
    opt.step()
    assert seen == [opt] and len(ranges.names) == 1
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    name = f"Optimizer.step#{type(opt).__name__}.step"
    assert name in {e.key for e in prof.key_averages()}


def test_a_pre_hook_may_replace_the_arguments_as_in_torch():
    ps = params()
    opt = Sgd(ps, lr=0.1, backend="foreach")
    give_grads(ps, 0)
    closures = []

    def closure():
        closures.append(1)
        return torch.tensor(3.0)

    opt.register_step_pre_hook(lambda o, args, kwargs: ((o, closure), {}))  # args hold self
    assert float(opt.step()) == 3.0 and closures == [1]
    opt.register_step_pre_hook(lambda o, args, kwargs: "not a pair")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()


def test_grad_mode_is_restored_after_a_step_and_after_an_error():
    ps = params()
    opt = Sgd(ps, lr=0.1, backend="foreach")
    give_grads(ps, 0)
    opt.step()
    assert torch.is_grad_enabled()
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ctopt.errors.HyperparameterError):
        opt.step()
    assert torch.is_grad_enabled()
    opt.param_groups[0]["lr"] = 0.1
    seen = []
    opt.step(lambda: seen.append(torch.is_grad_enabled()))  # the closure runs with grad
    assert seen == [True]


# ----------------------------------------------------------------- group values
def test_group_values_follow_every_kind_of_edit():
    ps = params(sizes=(4,))
    opt = Sgd(ps, lr=0.5, backend="foreach")
    p = ps[0]

    def step_by(lr_now):
        before = p.detach().clone()
        give_grads(ps, 0)
        opt.step()
        torch.testing.assert_close(p.detach(), before - lr_now * p.grad, rtol=0, atol=0)

    step_by(0.5)
    opt.param_groups[0]["lr"] = 0.25  # a new float
    step_by(0.25)
    lr = torch.tensor(0.125)
    opt.param_groups[0]["lr"] = lr  # a tensor, read live
    step_by(0.125)
    lr.fill_(0.0625)
    step_by(0.0625)
    opt.param_groups[0]["lr"] = 0.5
    step_by(0.5)
    before = p.detach().clone()
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ctopt.errors.HyperparameterError, match="lr"):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_betas_held_in_a_list_are_read_again_after_an_in_place_edit():
    a, b = params(sizes=(6,)), params(sizes=(6,))
    opt = Adam(a, lr=0.1, backend="foreach")
    ref = torch.optim.Adam(b, lr=0.1, foreach=True)
    for o in (opt, ref):
        o.param_groups[0]["betas"] = [0.9, 0.999]
    for i in range(4):
        if i == 2:
            for o in (opt, ref):
                o.param_groups[0]["betas"][0] = 0.5
        give_grads(a, i), give_grads(b, i)
        opt.step(), ref.step()
    torch.testing.assert_close(a[0], b[0], rtol=2e-6, atol=1e-7)


# ----------------------------------------------------------------- state marks
def test_state_marks_see_every_replacement():
    p, q = torch.zeros(1), torch.zeros(1)
    state = {p: {"step": torch.tensor(0.0), "m": torch.zeros(1)}, q: {"step": torch.tensor(0.0)}}
    marks = state_marks(state)
    assert same_marks(marks, state_marks(state))
    edits = [lambda s: s[p].update(m=torch.zeros(1)), lambda s: s.__setitem__(q, dict(s[q])),
             lambda s: s[q].pop("step"), lambda s: s[q].update(extra=1),
             lambda s: s.__setitem__(p, s.pop(p))]  # moved to the end
    for edit in edits:
        copy_ = {k: dict(v) for k, v in state.items()}
        before = state_marks(copy_)
        edit(copy_)
        assert not same_marks(before, state_marks(copy_))
    assert state_marks({p: ["not", "a", "dict"]}) is None and not same_marks(None, None)


@needs_compiler
@pytest.mark.parametrize("edit", ["tensor", "dict", "reinsert", "step"])
def test_a_state_edited_between_steady_steps_is_used(edit):
    """Each edit, done to ctopt's and torch fused Adam's state alike, gives the same
    trajectory: the steady step sees it (a missed edit would keep the old moments)."""
    a, b = params(), params()
    opt = Adam(a, lr=0.05, backend="compiled")
    ref = torch.optim.Adam(b, lr=0.05, fused=True)
    for i in range(6):
        if i == 3:
            for o, ps in ((opt, a), (ref, b)):
                state = o.state[ps[1]]
                if edit == "tensor":
                    state["exp_avg"] = torch.ones_like(ps[1])
                elif edit == "dict":
                    o.state[ps[1]] = {k: v.clone() * 0.5 if k != "step" else v.clone()
                                      for k, v in state.items()}
                elif edit == "reinsert":
                    o.state[ps[1]] = o.state.pop(ps[1])
                else:
                    state["step"].fill_(0.0)  # bias corrections start again
        give_grads(a, i), give_grads(b, i)
        opt.step(), ref.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][key], ref.state[q][key], rtol=2e-5,
                                       atol=1e-6)


# ----------------------------------------------------------------- the bound call
def test_a_host_vector_rounds_as_torch():
    numbers = (0.1, 1 / 3, 2.0**-140, -7, True, float("inf"))
    v32 = HostVector(torch.zeros(6))
    assert v32.write(numbers)
    assert torch.equal(v32.tensor, torch.tensor([float(x) for x in numbers]))
    v64 = HostVector(torch.zeros(6, dtype=torch.float64))
    assert v64.write(numbers)
    assert torch.equal(v64.tensor, torch.tensor([float(x) for x in numbers], dtype=torch.float64))
    assert not v32.write((1.0,))  # not as many numbers as it holds: nothing written
    assert torch.equal(v32.tensor, torch.tensor([float(x) for x in numbers]))
    big = (1e39, -1e39, 3.4028235e38, 0, 0, 0)  # past float32: infinite, as torch makes them
    assert v32.write(big) and torch.equal(v32.tensor, torch.tensor(big))
    assert v32.read() == v32.tensor.tolist() and v64.read() == v64.tensor.tolist()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**26), st.floats(0, 2.0**30, width=32)),
                min_size=1, max_size=9))
def test_the_step_counters_count_as_add_does(counts):
    """The layout's counters are read and written directly on the host: each position + 1
    exactly as ``steps.add_(1)`` rounds it in float32 (stuck at 2**24, as torch's are), and
    read back as ``tolist()`` reads them."""
    ps = [torch.nn.Parameter(torch.zeros(2)) for _ in counts]
    states = [{"step": torch.tensor(float(k)), "m": torch.zeros(2)} for k in counts]
    layout = FlatLayout(("m",), ps, states, flatten=False)
    expected = layout.steps.clone()
    assert layout.step_counts() == expected.tolist()
    for _ in range(3):
        layout.count_step()
        expected.add_(1)
        assert torch.equal(layout.steps, expected) and layout.step_counts() == expected.tolist()
    assert all(s["step"].item() == e for s, e in zip(states, expected.tolist(), strict=True))
    layout.steps.fill_(expected[0])  # the steady steps' case: one count, just read
    expected.fill_(expected[0])
    for _ in range(3):
        layout.count_step(layout.step_counts()[0])
        expected.add_(1)
        assert torch.equal(layout.steps, expected)


@needs_compiler
@pytest.mark.parametrize("name, values, dtype", [
    ("adam", dict(lr=0.05, weight_decay=0.01), torch.float32),
    ("adam", dict(lr=0.05), torch.float64),
    ("sgd", dict(lr=0.1, weight_decay=0.1), torch.float32),
    ("dgclip", dict(lr=0.05, gamma=0.5, delta=0.1), torch.float32),
    ("amsgrad", dict(lr=0.05), torch.float32)])
def test_the_bound_call_equals_the_ordinary_call_bit_for_bit(name, values, dtype):
    cls = ctopt.to_torch(ctopt.zoo.get(name))
    a, b = params(dtype=dtype), params(dtype=dtype)
    opt = cls(a, backend="compiled", **values)
    ref = cls(b, backend="compiled", **values)
    ref._compiled_runner()._run_bound = lambda layout, coefficients: False
    sizes = kernel_calls(opt)
    for i in range(6):
        if i == 4:
            for o in (opt, ref):
                o.param_groups[0]["lr"] = values["lr"] / 3
        give_grads(a, i), give_grads(b, i)
        opt.step(), ref.step()
    (layout,) = opt._runner.flat.values()
    assert isinstance(layout.bound, tuple) and len(sizes) == 6  # steps 2-6 bound
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
        assert all(torch.equal(opt.state[p][k], ref.state[q][k]) for k in opt.state[p])


@needs_compiler
def test_a_rebuilt_layout_binds_again():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    twin = copy.deepcopy(model)
    opt = Adam(model.parameters(), lr=0.05, backend="compiled")
    ref = Adam(twin.parameters(), lr=0.05, backend="forloop")
    x = torch.randn(8, 4)
    for i in range(6):
        if i == 3:
            for m in (model, twin):
                m[0].weight.data = m[0].weight.data.clone()  # out of the buffer
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            m(x + i).pow(2).sum().backward()
            o.step()
    (layout,) = opt._runner.flat.values()
    assert isinstance(layout.bound, tuple) and layout.bound[1].tensor.data_ptr() != 0
    assert layout.intact()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- compile failures
@pytest.mark.parametrize("master", [False, True])
def test_a_kernel_that_fails_to_compile_leaves_eager_code_with_one_warning(monkeypatch, master):
    """No C++ compiler, an unsupported platform: the first call raises, nothing is written by
    it, one RuntimeWarning says so, and every step from then on follows the for-loop path."""
    dtype = torch.bfloat16 if master else torch.float32
    a, b = params(dtype=dtype), params(dtype=dtype)
    opt = Adam(a, lr=0.05, backend="compiled", master_weights=master)
    ref = Adam(b, lr=0.05, backend="forloop", master_weights=master)
    runner = opt._compiled_runner()

    def broken(*args):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(runner, "master_kernel" if master else "kernel", lambda *kind: broken)
    for i in range(3):
        give_grads(a, i), give_grads(b, i)
        if i == 0:
            with pytest.warns(RuntimeWarning, match="torch.compile failed .*no compiler here"):
                opt.step()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # warned once, not again
                opt.step()
        ref.step()
    assert runner.failed and not runner.available()
    for p, q in zip(a, b, strict=True):  # the eager code rounds as the for-loop code may not
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
        for k in ref.state[q]:
            torch.testing.assert_close(opt.state[p][k], ref.state[q][k], rtol=1e-5, atol=1e-7)
