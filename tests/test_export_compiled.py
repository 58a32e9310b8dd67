"""The compiled path (torch.compile of the generated fused kernel): parity with the oracle and the
other paths, zero recompiles under LR/beta schedulers, flat layouts, and a protocol subset.

Compiling is expensive on CPU, so every test reuses the per-class compiled kernel (one compile per
design and dtype); designs beyond the core ones are marked slow for float32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch._dynamo.utils
from spies import kernel_calls
from test_export_parity import (
    CASES,
    PATH_RTOL32,
    TORCH,
    TORCH_RTOL32,
    design_of,
    problem,
    rel_err,
    run,
)

import ctopt
from ctopt.export import flat_parameters

pytestmark = pytest.mark.skipif(not ctopt.export.compiled.CompiledRunner(object).available(),
                                reason="torch.compile has no compiler here")

CORE = ("adam", "adan", "dgclip")


def compiled_run(case, dtype=torch.float64, **kwargs):
    design, values = design_of(case), CASES[case][1]
    cls = ctopt.to_torch(design, check=False)
    with _no_fallback():
        return run(cls, values, dtype=dtype, backend="compiled", **kwargs)


class _no_fallback:
    """Fail if the compiled path silently fell back to eager code."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        fallbacks = [w for w in self._log if "falls back" in str(w.message)]
        assert not fallbacks, fallbacks[0].message


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_equals_oracle_float64(case):
    design, values = design_of(case), CASES[case][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design, grad_fn, x0, 20, **values)
    assert rel_err(compiled_run(case), reference) <= 1e-12


def _float32_cases():
    return [c if c in CORE else pytest.param(c, marks=pytest.mark.slow) for c in sorted(CASES)]


@pytest.mark.parametrize("case", _float32_cases())
def test_compiled_equals_foreach_float32(case):
    cls = ctopt.to_torch(design_of(case), check=False)
    eager = run(cls, CASES[case][1], dtype=torch.float32, backend="foreach")
    assert rel_err(compiled_run(case, dtype=torch.float32), eager) <= PATH_RTOL32


def test_compiled_adam_equals_torch_float32():
    make, values = TORCH["adam"]
    expected = run(lambda p, **v: make(p, foreach=False, **v), values, steps=100,
                   dtype=torch.float32)
    ours = run(ctopt.to_torch(ctopt.zoo.get("adam")), values, steps=100, dtype=torch.float32,
               backend="compiled")
    assert rel_err(ours, expected) <= TORCH_RTOL32


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("scheduler", ["step", "one_cycle"])
def test_schedulers_never_recompile(scheduler):
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    ps = [torch.nn.Parameter(torch.randn(n)) for n in (64, 33, 7)]
    opt = Adam(ps, lr=0.01, backend="compiled")
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()  # compiles (or reuses) the float32 kernel
    before = _graphs()
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=12)
    seen = set()
    for _ in range(10):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
        seen.add((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"]))
    assert len(seen) == 10  # lr (and betas for one-cycle) really changed every step
    if scheduler == "one_cycle":
        assert len({b for _, b in seen}) > 5
    assert _graphs() == before, "a scheduler step triggered a recompile"


def test_flat_layout_is_one_call_and_keeps_gradients_in_place():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    twin = copy.deepcopy(model)
    buffers = flat_parameters(model)
    assert len(buffers) == 1 and buffers[0].numel() == sum(p.numel() for p in twin.parameters())
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    opt = Adam(model.parameters(), lr=0.01, backend="compiled")
    ref = Adam(twin.parameters(), lr=0.01, backend="forloop")
    calls = kernel_calls(opt)
    x = torch.randn(8, 5)
    for _ in range(4):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    grad_ptrs = {p.grad.untyped_storage().data_ptr() for p in model.parameters()}
    assert grad_ptrs == {model[0].weight._ctopt_flat_grad.untyped_storage().data_ptr()}
    assert calls == [buffers[0].numel()] * 4  # one kernel call per step for the whole model
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_compiled_protocol_subset():
    """state_dict round trip, None grads, zero-size and tiny tensors, deepcopy, non-finite skip."""
    Adan = ctopt.to_torch(ctopt.zoo.get("adan"))
    ps = [torch.nn.Parameter(torch.randn(n)) for n in (6, 1, 0, 9)]
    idle = torch.nn.Parameter(torch.ones(4))
    opt = Adan(ps + [idle], lr=0.01, max_grad_norm=1.0, backend="compiled", nonfinite="skip")

    def grads(seed):
        gen = torch.Generator().manual_seed(seed)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)

    for i in range(3):
        grads(i)
        opt.step()
    assert idle not in opt.state and torch.equal(idle, torch.ones(4))
    clone = copy.deepcopy(opt)
    loaded = Adan([torch.nn.Parameter(p.detach().clone()) for p in ps + [idle]],
                  backend="compiled")
    loaded.load_state_dict(opt.state_dict())
    grads(9)
    ps[0].grad[2] = float("nan")
    before = [p.detach().clone() for p in ps]
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before, strict=True))
    assert opt.state_dict()["skipped_steps"] == 1
    for other in (clone, loaded):
        theirs = [p for p in other.param_groups[0]["params"]][:4]
        for i in range(3, 6):
            grads(i)
            for p, q in zip(ps, theirs, strict=True):
                q.grad = p.grad.clone()
            other.step()
        assert all(np.isfinite(q.detach().numpy()).all() for q in theirs)
    for i in range(3, 6):
        grads(i)
        opt.step()
    for other in (clone, loaded):
        theirs = [p for p in other.param_groups[0]["params"]][:4]
        assert all(torch.equal(p, q) for p, q in zip(ps, theirs, strict=True))


def test_large_tensors_direct_small_ones_gathered(monkeypatch):
    """Parameters kept as allocated (``flatten_parameters = False``): tensors >= DIRECT_NUMEL get
    their own call, the rest one gathered call; the result equals the foreach path."""
    monkeypatch.setattr(ctopt.export.layout, "DIRECT_NUMEL", 40)
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    sizes = (64, 5, 50, 7, 3)
    a = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt, ref = Adam(a, lr=0.01, backend="compiled"), Adam(b, lr=0.01, backend="foreach")
    opt.flatten_parameters = False
    calls = kernel_calls(opt)
    for _ in range(3):
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    assert sorted(calls[:3]) == [15, 50, 64]
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-7) for p, q in zip(a, b, strict=True))


PROTOCOL = ("test_moves_downhill_and_state_names", "test_param_groups_have_their_own_hyperparameters",
            "test_state_dict_round_trip_then_identical", "test_closure_none_grad_frozen_zero_size",
            "test_zero_gradients_stay_finite", "test_deepcopy_repr_hooks",
            "test_nonfinite_skip_is_bit_identical_and_counted",
            "test_nonfinite_raise_names_the_parameter")


@pytest.mark.parametrize("check", PROTOCOL)
@pytest.mark.parametrize("name", ["adam"] + [pytest.param(n, marks=pytest.mark.slow)
                                             for n in CORE if n != "adam"])
def test_protocol_battery_on_compiled(name, check):
    """The eager battery's checks, run on the compiled backend for the core designs."""
    import test_export_protocol

    getattr(test_export_protocol, check)(name, "compiled")


@pytest.mark.slow
def test_mixed_dtypes_on_compiled():
    import test_export_protocol

    test_export_protocol.test_mixed_dtypes_in_one_optimizer("adam", "compiled")


def test_standalone_module_compiled_equals_oracle(tmp_path):
    """The exported source file, compiled path, float64, with a group reduction (Adan clip)."""
    import importlib.util

    path = tmp_path / "adan_standalone.py"
    ctopt.export_source(design_of("adan"), path)
    spec = importlib.util.spec_from_file_location("adan_standalone", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = CASES["adan"][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design_of("adan"), grad_fn, x0, 20, **values)
    with _no_fallback():
        out = run(module.Adan, values, backend="compiled")
    assert rel_err(out, reference) <= 1e-12


def test_compiled_sign_keeps_nan_and_equals_numpy():
    """The compiled kernel's sign (two comparisons, which Inductor vectorizes) equals numpy's
    sign on every special value, NaN included, as the eager ``torch.where`` form does."""
    from ctopt.export.scalars import _nan_sign

    x = torch.tensor([float("nan"), -0.0, 0.0, -3.0, 2.0, 5e-324, -5e-324, float("inf"),
                      -float("inf")] * 3, dtype=torch.float64)
    compiled = torch.compile(_nan_sign, dynamic=True, fullgraph=True)
    want = np.sign(x.numpy())
    for got in (compiled(x), _nan_sign(x)):
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("grads", ["assigned", "in place"])
def test_auto_compiles_a_small_model_once_it_has_taken_many_steps(grads, monkeypatch, caplog):
    """``backend="auto"`` on a small model: the flat layout from the first step, updated by
    the eager kernel (the design's for-loop code on the flat buffers, nothing compiled), and
    the compiled kernel once its parameters have taken ``AUTO_COMPILE_AFTER_STEPS`` steps (3
    here) — also from the remembered usual step (gradients written in place) — on the same
    buffers. The step counts are the state's, so a checkpoint resumed past them compiles at
    once. torch's Adam's trajectory throughout."""
    from ctopt.export import backends
    from ctopt.export.direct import Kernel
    from ctopt.export.eager import Eager

    monkeypatch.setattr(backends, "AUTO_COMPILE_AFTER_STEPS", 3)
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    gen = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in ((5, 3), (3,), (7,))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt, ref = Adam(ours, lr=0.02), torch.optim.Adam(theirs, lr=0.02, foreach=False)
    seen, kernels, remembered = [], [], []
    caplog.set_level("INFO", logger="ctopt.export.backends")
    for p, q in zip(ours, theirs, strict=True):
        p.grad, q.grad = torch.zeros_like(p), torch.zeros_like(q)
    for _ in range(6):
        seen.append(opt._resolve_backend())
        for p, q in zip(ours, theirs, strict=True):
            g = torch.randn(p.shape, generator=gen)
            if grads == "assigned":
                p.grad = g
            else:
                p.grad.copy_(g)
            q.grad = g.clone()
        remembered.append(opt._usual is not None)
        opt.step()
        ref.step()
        kernels.append(type(opt._runner.fused))
        if len(seen) == 1:  # one buffer from the first step on
            base = ours[0].untyped_storage().data_ptr()
            assert all(p.untyped_storage().data_ptr() == base for p in ours)
    assert seen == ["flat"] * 3 + ["compiled"] * 3
    assert kernels == [Eager] * 3 + [Kernel] * 3
    if grads == "in place":  # the usual step ran, and declined at the switch
        assert remembered == [False, False, True, True, True, True]
    assert [r.getMessage() for r in caplog.records] == [  # said once, at the switch
        "backend='auto': Adam has taken 3 steps; its next step compiles the fused kernel "
        "(seconds, once) and runs it from then on"]
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-7)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][key], ref.state[q][key], rtol=2e-6,
                                       atol=1e-7)
    resumed = Adam([torch.nn.Parameter(p.detach().clone()) for p in ours], lr=0.02)
    assert resumed._resolve_backend() == "flat"  # no state yet
    resumed.load_state_dict(opt.state_dict())
    assert resumed._resolve_backend() == "compiled"


def test_auto_without_a_compiler_keeps_the_eager_kernel_on_any_model(monkeypatch):
    """No compiler: ``auto`` runs the flat layout with its eager kernel at every size and step
    count, torch compiles nothing, and the trajectory is torch's Adam's (GradScaler's inputs
    taken by the eager scaled kernel, an overflow leaving everything as it was)."""
    from ctopt.export import backends, compiled
    from ctopt.export.eager import Eager

    monkeypatch.setattr(compiled, "_compiler_present", lambda: False)
    monkeypatch.setattr(backends, "AUTO_COMPILE_MIN_NUMEL", 8)  # "large" models
    monkeypatch.setattr(backends, "AUTO_COMPILE_AFTER_STEPS", 2)
    monkeypatch.setattr(torch, "compile", None)  # any compile would fail loudly
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    gen = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in ((4, 3), (5,))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt, ref = Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05, foreach=False)
    for step in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        if step == 3:  # GradScaler's inputs, an overflow: nothing moves, not even the count
            opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)
            before = [p.detach().clone() for p in ours]
            opt.step()
            del opt.grad_scale, opt.found_inf
            assert all(torch.equal(p, b) for p, b in zip(ours, before, strict=True))
            continue
        opt.step()
        ref.step()
        assert opt._resolve_backend() == "flat" and type(opt._runner.fused) is Eager
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["step"], ref.state[q]["step"])
