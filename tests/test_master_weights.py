"""``master_weights=True``: bfloat16/float16 parameters stepped on float32 master copies.

The outside truth is a float32 run of the same optimizer on float32 copies of the parameters,
given the low-precision gradients cast up: the master copies must equal it (bit for bit where
the same code runs on both), and the parameters must equal the masters rounded to their dtype,
exactly. A small regression measures the drift from a true float32 run against torch's fused
Adam on bfloat16 (no master copy).
"""

from __future__ import annotations

import copy

import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from strategies import designs, exported_class

import ctopt
from ctopt.design import MASTER_KEY as DESIGN_MASTER_KEY
from ctopt.design import POSITIVE, DesignBuilder, g, theta
from ctopt.errors import CtoptError, DesignError, HyperparameterError
from ctopt.export import reductions
from ctopt.export.checkpoint import StateDictError
from ctopt.export.compiled import CompiledRunner
from ctopt.export.master import LOW_PRECISION, MASTER_KEY

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
SIZES = ((40, 3), (17,), (1,))
HYPER = {"adam": {"lr": 0.01, "weight_decay": 0.1}, "sgd": {"lr": 0.05, "weight_decay": 0.01}}
compiled = pytest.mark.skipif(not ctopt.export.compiled.CompiledRunner(object).available(),
                              reason="torch.compile has no compiler here")
BACKENDS = ["forloop", "foreach", pytest.param("compiled", marks=compiled)]


def params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SIZES]


def grads(ps, i, scale=1.0):
    gen = torch.Generator().manual_seed(100 + i)
    return [(torch.randn(p.shape, generator=gen) * scale).to(p.dtype) for p in ps]


def run_against_fp32(cls, hyper, backend, dtype, steps=5, scaling=None, in_place=False,
                     **options):
    """Run ``cls`` with master weights on ``dtype`` parameters and, beside it, in float32 on
    float32 copies with the same gradients cast up; returns both optimizers and parameter
    lists. ``scaling(i)`` gives the step's ``(grad_scale, found_inf)`` or None; ``in_place``:
    after the first step, gradients are copied into ``.grad`` (the compiled path's steady
    step)."""
    ps = params(dtype)
    qs = [torch.nn.Parameter(p.detach().float()) for p in ps]
    ours = cls(ps, **hyper, backend=backend, master_weights=True, **options)
    ref = cls(qs, **hyper, backend=backend, **options)
    for i in range(steps):
        scale, found = scaling(i) if scaling else (None, None)
        for p, q, gr in zip(ps, qs, grads(ps, i, 1.0 if scale is None else float(scale)),
                            strict=True):
            if in_place and i:
                p.grad.copy_(gr)
                q.grad.copy_(gr)
            else:
                p.grad, q.grad = gr.clone(), gr.float()
        for opt in (ours, ref):
            if scale is not None:
                opt.grad_scale, opt.found_inf = scale.clone(), found.clone()
            opt.step()
            if scale is not None:
                del opt.grad_scale, opt.found_inf
    return ours, ref, ps, qs


def assert_masters_equal(ours, ref, ps, qs, ulps=0):
    for p, q in zip(ps, qs, strict=True):
        state, expected = ours.state[p], ref.state[q]
        master = state[MASTER_KEY]
        assert master.dtype == torch.float32 and master.shape == p.shape
        if ulps == 0:
            assert torch.equal(master, q.detach())
        else:
            spacing = torch.finfo(torch.float32).eps * q.detach().abs().clamp_min(1e-30)
            assert bool(((master - q.detach()).abs() <= ulps * spacing).all())
        assert torch.equal(p.detach(), master.to(p.dtype))  # the parameter: the master rounded
        for key in ours.state_keys:
            assert state[key].dtype == torch.float32
            torch.testing.assert_close(state[key], expected[key], rtol=ulps * 1.2e-7, atol=0)
        assert float(state["step"]) == float(expected["step"])


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", ctopt.zoo.names())
def test_every_zoo_design_on_masters_equals_a_float32_run_bit_for_bit(name, dtype):
    """Bit for bit, except where a design has a group reduction (dgclip, adan): its sum of
    squares reads a float32 gradient with one dot product and a low-precision one with
    ``vector_norm`` (a dot product would need a float32 copy of it), which round differently;
    there, within a few float32 ulps."""
    cls = ctopt.to_torch(ctopt.zoo.get(name))
    for backend in ("forloop", "foreach"):
        ours, ref, ps, qs = run_against_fp32(cls, HYPER.get(name, {}), backend, dtype)
        assert_masters_equal(ours, ref, ps, qs, ulps=4 if cls.reduction_names else 0)


def _outcome(run):
    try:
        return run()
    except CtoptError as error:
        return type(error)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(designs(max_states=2))
def test_random_designs_on_masters_equal_a_float32_run_bit_for_bit(drawn):
    """Designs drawn from the IR (states, filters, temporaries, reductions, every function):
    with master weights on bfloat16, the masters, the states and the step equal the float32 run
    on the for-loop and foreach paths (NaN where it has NaN), or both runs raise the same
    error. A group reduction's sum of squares takes one algorithm in both runs here
    (``norm_square_sum``): a float32 gradient otherwise takes a dot product, which rounds
    differently, and a drawn map can amplify that without bound (the zoo's are compared with
    the dot product, within ulps, above)."""
    cls = exported_class(drawn)
    if cls is None:
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reductions, "square_sum", reductions.norm_square_sum)
        _masters_equal_a_float32_run(cls, drawn)


def _masters_equal_a_float32_run(cls, drawn):
    for backend in ("forloop", "foreach"):
        result = _outcome(lambda b=backend: run_against_fp32(cls, {}, b, torch.bfloat16,
                                                             steps=3))
        if not isinstance(result, tuple):
            assert result == _outcome(lambda b=backend: run_against_fp32(
                cls, {}, b, torch.float32, steps=3)), drawn.recipe
            continue
        ours, ref, ps, qs = result
        for p, q in zip(ps, qs, strict=True):
            pairs = [(ours.state[p][MASTER_KEY], q.detach())]
            pairs += [(ours.state[p][key], ref.state[q][key]) for key in cls.state_keys]
            for a, b in pairs:
                assert a.dtype == torch.float32
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m: f"{m}\nrecipe: {drawn.recipe}")
            assert torch.equal(p.detach().isnan(), pairs[0][0].isnan())
            finite = ~p.detach().isnan()
            assert torch.equal(p.detach()[finite], pairs[0][0].to(torch.bfloat16)[finite])


def _clip_of_the_decayed_gradient():
    """A design whose group reduction reads theta: the step is clipped by the norm of the
    decayed gradient g + wd * theta."""
    b = DesignBuilder("decayed_clip")
    lr, wd = b.hyper("lr", 0.01, POSITIVE), b.hyper("wd", 0.3, POSITIVE)
    norm = b.reduction("decayed_norm", "l2_norm", g + wd * theta)
    b.update(theta - lr * (g + wd * theta) / (1 + norm))
    return ctopt.to_torch(b.build())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_holding_the_previous_master_equals_a_float32_run(backend):
    """``prev <- theta``: the master update wrote the new master before ``prev``, which was the
    master's tensor itself, so ``prev`` took the new value; the for-loop path's float32 run
    (its own in-place code) held the old one."""
    b = DesignBuilder("lookback")
    lr = b.hyper("lr", 0.05, POSITIVE)
    prev = b.state("prev", 0)
    d = b.let("d", theta - prev)
    b.assign(prev, theta)
    b.update(theta - lr * g + sp.Rational(1, 2) * d)
    cls = ctopt.to_torch(b.build())
    ours, ref, ps, qs = run_against_fp32(cls, {}, backend, torch.bfloat16,
                                         in_place=backend == "compiled")
    assert_masters_equal(ours, ref, ps, qs)
    for p in ps:  # and prev is the master before the last step
        assert not torch.equal(ours.state[p]["prev"], ours.state[p][MASTER_KEY])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reduction_of_theta_reads_the_masters(backend, monkeypatch):
    """With master weights a group reduction that reads theta reads the float32 masters, as
    the float32 run reads its parameters (it once read the bfloat16 parameters, and computed
    g + wd * theta in bfloat16), on every path, the compiled one's steady step included."""
    cls = _clip_of_the_decayed_gradient()
    steady = []
    original = cls._steady_reducer

    def spy(self, values, gsign, layout):
        steady.append(self.master_weights)
        return original(self, values, gsign, layout)

    monkeypatch.setattr(cls, "_steady_reducer", spy)
    ours, ref, ps, qs = run_against_fp32(cls, {}, backend, torch.bfloat16, steps=5,
                                         in_place=backend == "compiled")
    assert_masters_equal(ours, ref, ps, qs)
    if backend == "compiled":  # the steady step's reducer ran, on the master run's layout
        assert True in steady


@compiled
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_compiled_masters_live_in_flat_float32_buffers_and_equal_a_float32_run(dtype):
    ours, ref, ps, qs = run_against_fp32(Adam, HYPER["adam"], "compiled", dtype)
    assert_masters_equal(ours, ref, ps, qs)
    (layout,) = ours._runner.flat.values()
    assert layout.flat_params and set(layout.buffers) == {MASTER_KEY, *Adam.state_keys}
    assert {b.dtype for b in layout.buffers.values()} == {torch.float32}
    assert layout.theta.dtype == dtype  # the parameters stay in their dtype
    for p, a in zip(layout.order, layout.offsets, strict=False):
        for key, buffer in layout.buffers.items():
            assert ours.state[p][key].data_ptr() == buffer[a:].data_ptr()


@compiled
@pytest.mark.parametrize("scaled", [False, True])
def test_steady_master_steps_equal_a_float32_run(monkeypatch, scaled):
    """Gradients copied into the flat buffer: steady steps (no general path after the first),
    the master kernel with and without GradScaler's tensors, a skipped step included."""
    general = []
    run = CompiledRunner.run
    monkeypatch.setattr(CompiledRunner, "run",
                        lambda self, *a, **k: (general.append(1), run(self, *a, **k)))
    scaling = (lambda i: (torch.tensor(64.0), torch.tensor(1.0 if i == 2 else 0.0))) \
        if scaled else None
    ours, ref, ps, qs = run_against_fp32(Adam, HYPER["adam"], "compiled", torch.bfloat16,
                                         scaling=scaling, in_place=True)
    assert_masters_equal(ours, ref, ps, qs)
    assert len(general) == 2  # the first step of each optimizer
    assert float(ours.state[ps[0]]["step"]) == (4.0 if scaled else 5.0)
    # the steps after the layout's are the remembered one, scaled too (test_usual_step.py)
    assert ours._usual is not None and ours._usual.scaled is scaled


@compiled
def test_compiled_masters_without_a_flat_parameter_layout():
    """``flatten_parameters = False``: flat states, one kernel call per tensor (the 1-element
    one eagerly)."""
    ps = params(torch.bfloat16)
    qs = [torch.nn.Parameter(p.detach().float()) for p in ps]
    ours = Adam(ps, **HYPER["adam"], backend="compiled", master_weights=True)
    ref = Adam(qs, **HYPER["adam"], backend="compiled")
    ours.flatten_parameters = ref.flatten_parameters = False
    for i in range(3):
        for p, q, gr in zip(ps, qs, grads(ps, i), strict=True):
            p.grad, q.grad = gr.clone(), gr.float()
        ours.step()
        ref.step()
    assert_masters_equal(ours, ref, ps, qs)
    (layout,) = ours._runner.flat.values()
    assert not layout.flat_params and layout.buffers[MASTER_KEY].dtype == torch.float32


@compiled
def test_auto_compiles_a_large_model_with_master_weights():
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(1024, 1024, generator=gen).bfloat16()),
          torch.nn.Parameter(torch.randn(300, generator=gen).bfloat16())]
    qs = [torch.nn.Parameter(p.detach().float()) for p in ps]
    ours = Adam(ps, lr=0.01, master_weights=True)
    ref = Adam(qs, lr=0.01)
    assert ours._resolve_backend() == ref._resolve_backend() == "compiled"
    for i in range(2):
        for p, q, gr in zip(ps, qs, grads(ps, i), strict=True):
            p.grad, q.grad = gr.clone(), gr.float()
        ours.step()
        ref.step()
    assert_masters_equal(ours, ref, ps, qs)


@compiled
def test_auto_moves_a_small_model_with_masters_to_the_compiled_path_after_many_steps(
        monkeypatch):
    """The switch of ``auto`` after ``AUTO_COMPILE_AFTER_STEPS`` steps (2 here) takes the
    masters foreach kept into the flat float32 buffers; they stay equal to a float32 run that
    switched alike, with a GradScaler overflow on the step after the switch."""
    from ctopt.export import backends

    monkeypatch.setattr(backends, "AUTO_COMPILE_AFTER_STEPS", 2)

    def scaling(i):
        return torch.tensor(1024.0), torch.tensor(1.0 if i == 3 else 0.0)
    ours, ref, ps, qs = run_against_fp32(Adam, HYPER["adam"], "auto", torch.bfloat16, steps=6,
                                         scaling=scaling)
    assert ours._resolve_backend() == ref._resolve_backend() == "compiled"
    (layout,) = ours._runner.flat.values()
    assert layout.buffers[MASTER_KEY].dtype == torch.float32
    assert_masters_equal(ours, ref, ps, qs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_overflow_leaves_masters_untouched(backend):
    """Scale 1024 (unscaling is exact); an overflow at steps 1 and 3 skips those steps."""
    def scaling(i):
        return torch.tensor(1024.0), torch.tensor(1.0 if i in (1, 3) else 0.0)

    ours, ref, ps, qs = run_against_fp32(Adam, HYPER["adam"], backend, torch.bfloat16, steps=5,
                                         scaling=scaling)
    assert_masters_equal(ours, ref, ps, qs)
    assert [float(ours.state[p]["step"]) for p in ps] == [3.0] * len(ps)
    if backend == "compiled":  # unscaled and skipped on the device (the gradient apart)
        assert ours._runner.masters_ok == {"scaled apart"}
    before = {p: ours.state[p][MASTER_KEY].clone() for p in ps}
    values = [p.detach().clone() for p in ps]
    scaled = grads(ps, 9)
    for p, gr in zip(ps, scaled, strict=True):
        p.grad = gr.clone()
    ours.grad_scale, ours.found_inf = torch.tensor(2.0), torch.tensor(1.0)
    ours.step()
    for p, v, gr in zip(ps, values, scaled, strict=True):
        assert torch.equal(ours.state[p][MASTER_KEY], before[p]) and torch.equal(p.detach(), v)
        assert torch.equal(p.grad, gr)  # a skipped step leaves the gradient scaled
    ours.grad_scale, ours.found_inf = torch.tensor(3.0), torch.tensor(0.0)
    ours.step()
    for p, gr in zip(ps, scaled, strict=True):  # written back unscaled, as torch's fused Adam
        assert torch.equal(p.grad, (gr.float() / 3.0).to(p.dtype))


@pytest.mark.parametrize("backend", ["forloop", "foreach"])
def test_nonfinite_skip_leaves_masters_untouched(backend):
    ps = params(torch.bfloat16)
    opt = Adam(ps, lr=0.01, backend=backend, master_weights=True, nonfinite="skip")
    for p, gr in zip(ps, grads(ps, 0), strict=True):
        p.grad = gr
    opt.step()
    before = [copy.deepcopy(opt.state[p]) for p in ps]
    ps[0].grad[0] = float("nan")
    opt.step()
    for p, old in zip(ps, before, strict=True):
        for key, value in old.items():
            assert torch.equal(opt.state[p][key], value)
    assert opt.skipped_steps == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_float64_parameters_are_unaffected(backend):
    for dtype in (torch.float32, torch.float64):
        ps, qs = params(dtype), params(dtype)
        ours = Adam(ps, lr=0.01, backend=backend, master_weights=True)
        ref = Adam(qs, lr=0.01, backend=backend)
        for i in range(3):
            for p, q, gr in zip(ps, qs, grads(ps, i), strict=True):
                p.grad, q.grad = gr.clone(), gr.clone()
            ours.step()
            ref.step()
        for p, q in zip(ps, qs, strict=True):
            assert MASTER_KEY not in ours.state[p]
            assert torch.equal(p, q)
            assert all(ours.state[p][key].dtype == dtype for key in Adam.state_keys)


def test_master_weights_off_keeps_low_precision_state():
    ps = params(torch.bfloat16)
    opt = Adam(ps, lr=0.01, backend="foreach")
    for p, gr in zip(ps, grads(ps, 0), strict=True):
        p.grad = gr
    opt.step()
    assert all(MASTER_KEY not in opt.state[p] and opt.state[p]["exp_avg"].dtype == torch.bfloat16
               for p in ps)


def regression(kind: str, steps: int = 200) -> list[torch.Tensor]:
    """Adam (lr 1e-3) on least squares; the gradient is computed in float32 from the weights
    and rounded to the weights' dtype, as a bf16 model's backward delivers it."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=gen)
    y = x @ torch.randn(32, 1, generator=gen)
    dtype = torch.float32 if kind == "float32" else torch.bfloat16
    w = torch.nn.Parameter((0.1 * torch.randn(32, 1, generator=gen)).to(dtype))
    if kind == "torch fused bf16":
        opt = torch.optim.Adam([w], lr=1e-3, fused=True)
    else:
        opt = Adam([w], lr=1e-3, backend="forloop", master_weights=kind == "master")
    out = []
    for _ in range(steps):
        w.grad = (2 * x.T @ (x @ w.detach().float() - y) / len(x)).to(dtype)
        opt.step()
        out.append(w.detach().float().clone())
    return out


def test_master_weights_track_a_float32_run_where_bf16_drifts():
    """Measured over 200 steps (largest distance from the float32 run's weights): about 1e-3
    with master weights (the bf16 rounding of the weights), about 6e-2 for torch's fused Adam on
    bf16 (updates below bf16's resolution are lost)."""
    truth = regression("float32")

    def drift(kind):
        return max(float((a - b).abs().max()) for a, b in zip(regression(kind), truth,
                                                              strict=True))

    master, fused = drift("master"), drift("torch fused bf16")
    assert master < fused / 10
    assert master <= 2.0 ** -8 * max(float(w.abs().max()) for w in truth)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_round_trip_continues_bit_identically(backend):
    ps = params(torch.bfloat16)
    opt = Adam(ps, lr=0.01, backend=backend, master_weights=True)
    for i in range(2):
        for p, gr in zip(ps, grads(ps, i), strict=True):
            p.grad = gr
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    assert all(MASTER_KEY in entry for entry in saved["state"].values())
    ps2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = Adam(ps2, lr=0.01, backend=backend, master_weights=True)
    opt2.load_state_dict(saved)
    for p, q in zip(ps, ps2, strict=True):
        assert opt2.state[q][MASTER_KEY].dtype == torch.float32
        assert torch.equal(opt2.state[q][MASTER_KEY], opt.state[p][MASTER_KEY])
    for i in range(2, 4):
        for p, q, gr in zip(ps, ps2, grads(ps, i), strict=True):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        opt2.step()
    for p, q in zip(ps, ps2, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p][MASTER_KEY], opt2.state[q][MASTER_KEY])


def test_a_checkpoint_without_masters_creates_them_from_the_parameters():
    ps = params(torch.bfloat16)
    plain = Adam(ps, lr=0.01, backend="foreach")
    for p, gr in zip(ps, grads(ps, 0), strict=True):
        p.grad = gr
    plain.step()
    opt = Adam(ps, lr=0.01, backend="foreach", master_weights=True)
    opt.load_state_dict(plain.state_dict())
    for p in ps:
        state = opt.state[p]
        assert torch.equal(state[MASTER_KEY], p.detach().float())
        for key in Adam.state_keys:
            assert state[key].dtype == torch.float32
            assert torch.equal(state[key], plain.state[p][key].float())


def test_a_checkpoint_with_masters_is_refused_by_an_optimizer_without_them():
    ps = params(torch.bfloat16)
    opt = Adam(ps, lr=0.01, master_weights=True)
    for p, gr in zip(ps, grads(ps, 0), strict=True):
        p.grad = gr
    opt.step()
    plain = Adam(ps, lr=0.02)
    before = plain.state_dict()
    with pytest.raises(StateDictError, match="'master_param' is a float32 master copy"):
        plain.load_state_dict(opt.state_dict())
    assert plain.state_dict() == before and plain.param_groups[0]["lr"] == 0.02


def test_a_group_added_later_gets_master_copies():
    first, later = params(torch.bfloat16), params(torch.float16, seed=1)
    opt = Adam(first, lr=0.01, backend="foreach", master_weights=True)
    opt.add_param_group({"params": later, "lr": 0.02})
    ref_first = [torch.nn.Parameter(p.detach().float()) for p in first]
    ref_later = [torch.nn.Parameter(p.detach().float()) for p in later]
    ref = Adam(ref_first, lr=0.01, backend="foreach")
    ref.add_param_group({"params": ref_later, "lr": 0.02})
    for i in range(3):
        for p, q, gr in zip(first + later, ref_first + ref_later, grads(first + later, i),
                            strict=True):
            p.grad, q.grad = gr.clone(), gr.float()
        opt.step()
        ref.step()
    assert_masters_equal(opt, ref, first + later, ref_first + ref_later)


def test_the_option_survives_pickling_and_shows_in_repr():
    ps = params(torch.bfloat16)
    opt = Adam(ps, master_weights=True)
    assert "master_weights=True" in repr(opt) and "master_weights" not in repr(Adam(ps[:1]))
    assert copy.deepcopy(opt).master_weights is True


def test_standalone_export_keeps_master_copies(tmp_path):
    path = tmp_path / "adam_standalone.py"
    ctopt.export_source(ctopt.zoo.get("adam"), path)
    module = ctopt.export.verify.load_module(path)
    ps = params(torch.bfloat16)
    opt = module.Adam(ps, lr=0.01, master_weights=True, backend="forloop")
    ref_ps = params(torch.bfloat16)
    ref = Adam(ref_ps, lr=0.01, master_weights=True, backend="forloop")
    for p, q, gr in zip(ps, ref_ps, grads(ps, 0), strict=True):
        p.grad, q.grad = gr.clone(), gr.clone()
    opt.step()
    ref.step()
    for p, q in zip(ps, ref_ps, strict=True):
        assert torch.equal(opt.state[p][MASTER_KEY], ref.state[q][MASTER_KEY])


@pytest.mark.parametrize("bad", ["yes", 1, None, torch.tensor(True)])
def test_a_bad_option_value_is_refused_by_name(bad):
    with pytest.raises(HyperparameterError, match="master_weights=.* must be True or False"):
        Adam(params(torch.bfloat16), master_weights=bad)


def test_the_runtime_and_the_ir_reserve_the_same_key():
    assert MASTER_KEY == DESIGN_MASTER_KEY


def _one_state_design(torch_name=None, hyper="lr"):
    b = DesignBuilder("t")
    lr = b.hyper(hyper, 0.05, POSITIVE)
    m = b.state("m", torch_name=torch_name)
    b.assign(m, 0.9 * m + g)
    b.update(theta - lr * m / (sp.Integer(1) + m**2))
    return b.build()


def test_a_state_stored_as_the_master_copy_or_an_option_named_like_it_is_refused():
    _one_state_design()  # the same design with ordinary names builds
    with pytest.raises(DesignError, match="state-dict name 'master_param'"):
        _one_state_design(torch_name="master_param")
    with pytest.raises(DesignError, match="hyperparameter name 'master_weights' is reserved"):
        _one_state_design(hyper="master_weights")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parameter_cast_after_its_first_step_gets_or_drops_its_master_copy(backend):
    """``model.to(bfloat16)`` after float32 steps: the next step makes the master copy from the
    parameter and casts the states to float32; back to float32, the copy is dropped."""
    ps = params(torch.float32)
    opt = Adam(ps, lr=0.01, backend=backend, master_weights=True)
    for p, gr in zip(ps, grads(ps, 0), strict=True):
        p.grad = gr
    opt.step()
    assert all(MASTER_KEY not in opt.state[p] for p in ps)
    for p in ps:
        p.data, p.grad = p.data.bfloat16(), None
    qs = [torch.nn.Parameter(p.detach().float()) for p in ps]
    ref = Adam(qs, lr=0.01, backend=backend)
    ref.load_state_dict(opt.state_dict())  # the float32 states, cast to float32: unchanged
    for i in (1, 2):
        for p, q, gr in zip(ps, qs, grads(ps, i), strict=True):
            p.grad, q.grad = gr.clone(), gr.float()
        opt.step()
        ref.step()
    assert_masters_equal(opt, ref, ps, qs)
    for p in ps:
        p.data, p.grad = p.data.float(), grads([p], 3)[0].float()
    opt.step()
    assert all(MASTER_KEY not in opt.state[p] for p in ps)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in ps)
