"""A step is transactional: every number it needs (per-step coefficients cast to the parameter
dtype, initial states) is checked before the first write, on every backend and every zoo design;
a failure raises a named CtoptError and leaves parameters, state and groups bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

import ctopt
from ctopt.errors import CtoptError, HyperparameterError

NAMES = ctopt.zoo.names()
BACKENDS = ("forloop", "foreach", "compiled")


def exported(name):
    return ctopt.to_torch(ctopt.zoo.get(name))


def make(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in ((3, 2), (4,))]


def grads(ps, step):
    gen = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) + 0.3 * p.detach()


def snapshot(opt, ps):
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    state = {i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(ps)
             if p in opt.state}
    return [p.detach().clone() for p in ps], copy.deepcopy(groups), state


def identical(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def trained(name, backend):
    """An optimizer with state after two steps; the state comes from the for-loop path (the
    compiled path is not compiled by these tests: the check comes before the kernel)."""
    ps = make()
    warm = exported(name)(ps, lr=0.01, backend="forloop")
    for s in range(2):
        grads(ps, s)
        warm.step()
    opt = exported(name)(ps, lr=0.01, backend=backend)
    opt.load_state_dict(warm.state_dict())
    return opt, ps


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_lr_float32_cannot_hold_is_refused_before_any_write(name, backend):
    opt, ps = trained(name, backend)
    opt.param_groups[0]["lr"] = 1e300
    grads(ps, 5)
    before = snapshot(opt, ps)
    with pytest.raises(HyperparameterError, match=r"param group 0: a per-step coefficient at "
                                                  r"step 3 = .*\(from lr = 1e\+300\) overflows "
                                                  r"torch.float32"):
        opt.step()
    assert identical(snapshot(opt, ps), before)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_lr_in_float64_runs(name):
    ps = make(dtype=torch.float64)
    opt = exported(name)(ps, lr=1e300, backend="forloop")
    grads(ps, 0)
    opt.step()
    assert all(p.dtype == torch.float64 for p in ps) and opt.state[ps[0]]["step"].item() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_state_float32_cannot_hold_is_refused_and_no_state_is_left(backend):
    ps = make()
    opt = exported("adagrad")(ps, initial_accumulator_value=1e39, backend=backend)
    grads(ps, 0)
    before = snapshot(opt, ps)
    with pytest.raises(HyperparameterError, match=r"the initial value of state 'sum' = 1e\+39 "
                                                  r"\(from initial_accumulator_value = 1e\+39\) "
                                                  r"overflows torch.float32"):
        opt.step()
    assert identical(snapshot(opt, ps), before) and len(opt.state) == 0
    opt.param_groups[0]["initial_accumulator_value"] = 0.5  # fixed, the next step works
    opt.step()
    assert torch.equal(opt.state[ps[0]]["sum"] - ps[0].grad ** 2,
                       torch.full_like(ps[0], 0.5) + 0 * ps[0].grad) or \
        torch.allclose(opt.state[ps[0]]["sum"], 0.5 + ps[0].grad ** 2)


def test_a_failing_group_changes_no_other_group():
    a, b = make()
    opt = exported("adam")([{"params": [a]}, {"params": [b], "lr": 1e-3}], backend="foreach")
    grads([a, b], 0)
    opt.step()
    opt.param_groups[1]["lr"] = 1e39
    grads([a, b], 1)
    before = snapshot(opt, [a, b])
    with pytest.raises(HyperparameterError, match="param group 1"):
        opt.step()
    assert identical(snapshot(opt, [a, b]), before)


def test_float16_parameters_are_checked_against_float16():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    opt = exported("sgd")([p], lr=1e5, backend="foreach")
    p.grad = torch.ones_like(p)
    with pytest.raises(CtoptError, match=r"overflows torch.float16 \(largest finite 65504\)"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.float16)) and not opt.state
