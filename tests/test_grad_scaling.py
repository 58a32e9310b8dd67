"""GradScaler's ``grad_scale``/``found_inf`` handled inside the step, against torch's fused Adam
given the same tensors (CPU): float32 and bfloat16 parameters, the compiled kernel and the eager
paths, a skipped step in the middle, and a whole ``torch.amp.GradScaler`` loop."""

from __future__ import annotations

import pytest
import torch
from test_export_parity import TORCH_RTOL32
from test_usual_step import Spy

import ctopt

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
SIZES = (300, 37, 1)
compiled = pytest.mark.skipif(not ctopt.export.compiled.CompiledRunner(object).available(),
                              reason="torch.compile has no compiler here")


def run_pair(backend, dtype, steps=6, skip_at=(2,)):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in SIZES]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ours = Adam(ps, lr=0.01, weight_decay=0.1, backend=backend)
    ref = torch.optim.Adam(qs, lr=0.01, weight_decay=0.1, fused=True)
    for i in range(steps):
        gen = torch.Generator().manual_seed(i)
        for p, q in zip(ps, qs, strict=True):
            g = (torch.randn(p.shape, generator=gen) * 1024).to(dtype)
            p.grad, q.grad = g.clone(), g.clone()
        for opt in (ours, ref):
            opt.grad_scale = torch.tensor(1024.0)
            opt.found_inf = torch.tensor(1.0 if i in skip_at else 0.0)
            opt.step()
            del opt.grad_scale, opt.found_inf
        for p, q in zip(ps, qs, strict=True):  # the gradients are unscaled in place, as torch
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    steps_ours = [float(ours.state[p]["step"]) for p in ps]
    steps_ref = [float(ref.state[q]["step"]) for q in qs]
    assert steps_ours == steps_ref == [steps - len(skip_at)] * len(ps)
    return ps, qs


def max_rel(ps, qs) -> float:
    return max(float(((p.double() - q.double()).abs() / q.double().abs().clamp_min(1e-3)).max())
               for p, q in zip(ps, qs, strict=True))


@pytest.mark.parametrize("backend", [pytest.param("compiled", marks=compiled), "foreach",
                                     "forloop"])
def test_scaled_steps_equal_torch_fused_float32(backend):
    ps, qs = run_pair(backend, torch.float32)
    assert max_rel(ps, qs) <= TORCH_RTOL32


@compiled
def test_scaled_steps_equal_torch_fused_bfloat16():
    """bfloat16 parameters and state, computed in float32 as torch does: within one bfloat16
    rounding (2^-8 relative) per step of torch's fused kernel."""
    ps, qs = run_pair("compiled", torch.bfloat16, steps=4, skip_at=(1,))
    assert max_rel(ps, qs) <= 3 * 2.0 ** -8


@compiled
def test_skipped_step_is_bit_identical():
    ps, _ = run_pair("compiled", torch.float32, steps=1, skip_at=(0,))
    torch.manual_seed(0)
    start = [torch.randn(n) for n in SIZES]
    assert all(torch.equal(p.detach(), s) for p, s in zip(ps, start, strict=True))


def test_reduction_designs_unscale_on_the_host():
    """dgclip's gradient norm needs unscaled gradients: equal to a run given them unscaled."""
    Clip = ctopt.to_torch(ctopt.zoo.get("dgclip"))
    a = [torch.nn.Parameter(torch.ones(5))]
    b = [torch.nn.Parameter(torch.ones(5))]
    scaled, plain = Clip(a, lr=0.1), Clip(b, lr=0.1)
    for i in range(3):
        g = torch.linspace(-1, 1, 5) * (i + 1)
        a[0].grad, b[0].grad = g * 256, g.clone()
        scaled.grad_scale, scaled.found_inf = torch.tensor(256.0), torch.tensor(0.0)
        scaled.step()
        plain.step()
    assert torch.equal(a[0], b[0])


@compiled
@pytest.mark.parametrize("set_to_none, capturable", [(True, False), (False, False),
                                                     (False, True)])
def test_grad_scaler_loop_equals_torch_fused(monkeypatch, set_to_none, capturable):
    """After the first step the gradients are the flat buffer's (zeroed in place, or moved
    there by the backward's hooks): every step is steady, the scale and the skip handled in the
    kernel (a capturable step counts a skipped step out on the device)."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [Adam(nets[0].parameters(), lr=0.01, backend="compiled", capturable=capturable),
            torch.optim.Adam(nets[1].parameters(), lr=0.01, fused=True)]
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) for _ in range(2)]
    general, spy = [], Spy(monkeypatch)
    for i in range(6):
        if i == 1:
            runner = opts[0]._compiled_runner()
            run = runner.run
            monkeypatch.setattr(runner, "run",
                                lambda *a, run=run, **k: (general.append(1), run(*a, **k)))
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(8, 4, generator=gen)
        for net, opt, scaler in zip(nets, opts, scalers, strict=True):
            opt.zero_grad(set_to_none=set_to_none)
            loss = net(x).square().mean() * (float("inf") if i == 2 else 1.0)  # one overflow
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert general == []
    # the scaled step is remembered too (not a capturable one): every step after the first
    # two, the skipped one included, ran the remembered step
    assert spy.outcomes == ([] if capturable else [True] * 4)
    assert scalers[0].get_scale() == scalers[1].get_scale() < 2.0 ** 10
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=TORCH_RTOL32, atol=1e-6)
        assert float(opts[0].state[p]["step"]) == float(opts[1].state[q]["step"]) == 5.0


def test_bad_scaling_inputs_are_refused():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    opt = Adam([p], backend="foreach")
    opt.grad_scale = 2.0
    with pytest.raises(ctopt.errors.UnsupportedError, match="grad_scale"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(2)) and not opt.state
