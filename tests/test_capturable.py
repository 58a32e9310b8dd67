"""Capturable steps (``capturable=True``): step counters and per-step numbers on the device, so
the usual step reads nothing back to the host (CUDA-graph capture itself is tested in
``test_export_gpu.py``). Checked against the ordinary compiled path of every zoo design and, for
the scalar part run on tensors, against the float scalar part of random designs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from strategies import designs, exported_class
from test_generative_export import SETTINGS
from torch.utils._python_dispatch import TorchDispatchMode

import ctopt
from ctopt.errors import HyperparameterError, UnsupportedError
from ctopt.export.capture import DeviceHyper
from ctopt.export.compiled import _coef_tensor

REFUSED = {"adan", "dgclip"}  # their scalar parts take the gradient norm (a group reduction)
SHAPES = [(30, 20), (20,), (7, 3, 3), (1,), (50,)]


def twins(name: str, **options):
    cls = ctopt.to_torch(ctopt.zoo.get(name))
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    return cls, a, b, cls(a, backend="compiled", **options), \
        cls(b, backend="compiled", capturable=True, **options)


def step_both(a, b, oa, ob, gen) -> None:
    for pa, pb in zip(a, b, strict=True):
        grad = torch.randn(pa.shape, generator=gen)
        pa.grad, pb.grad = grad.clone(), grad.clone()
    oa.step()
    ob.step()


@pytest.mark.parametrize("name", ctopt.zoo.names())
def test_capturable_equals_the_compiled_path_bit_for_bit(name):
    if name in REFUSED:
        with pytest.raises(UnsupportedError, match="group reductions"):
            twins(name)
        return
    _, a, b, oa, ob = twins(name, maximize=name == "adam")
    gen = torch.Generator().manual_seed(1)
    for i in range(7):
        step_both(a, b, oa, ob, gen)
        if i == 3:  # a scheduler's change: new device hyperparameters, same kernel
            for o in (oa, ob):
                o.param_groups[0]["lr"] *= 0.5
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
        for key in oa.state[pa]:
            assert torch.equal(torch.as_tensor(oa.state[pa][key]),
                               torch.as_tensor(ob.state[pb][key]).cpu()), key
    assert float(ob.state[b[0]]["step"]) == 7.0


def test_each_param_group_steps_with_its_own_values():
    cls = ctopt.to_torch(ctopt.zoo.get("adam"))
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]

    def groups(ps):
        return [{"params": ps[:2], "lr": 0.1}, {"params": ps[2:], "lr": 0.001, "betas": (0.5, 0.9)}]

    oa = cls(groups(a), backend="compiled")
    ob = cls(groups(b), backend="compiled", capturable=True)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        step_both(a, b, oa, ob, gen)
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)


class ReadBacks(TorchDispatchMode):
    """Records what hands a tensor's value to the host: the dispatcher's ``item`` and
    ``_local_scalar_dense``, and the Python conversions (``tolist``, ``float()``...), which on
    the CPU do not pass the dispatcher."""

    CONVERSIONS = ("tolist", "item", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self.saved = {name: getattr(torch.Tensor, name) for name in self.CONVERSIONS}
        for name, method in self.saved.items():
            def spy(t, *args, _name=name, _method=method):
                self.reads.append(_name)
                return _method(t, *args)
            setattr(torch.Tensor, name, spy)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)


def test_the_steady_capturable_step_reads_nothing_back():
    """The positive control: the same step with host counters, read through the tensor API
    as a device layout's would be (``steps.tolist()``), is seen reading them back."""
    _, a, b, oa, ob = twins("adam")
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):  # warm up: layouts made, gradients moved into them
        step_both(a, b, oa, ob, gen)
    for layout in oa._runner.flat.values():
        layout.counts = None  # no direct read of host memory: the tensor API's read
    for opt, params in ((ob, b), (oa, a)):  # a steady step: the host learns the counters once
        for p in params:
            p.grad.copy_(torch.randn(p.shape, generator=gen))
        opt.step()
    for opt, params, expect_reads in ((ob, b, False), (oa, a, True)):
        # the kernel's own code is device code; the dispatch mode cannot enter torch.compile,
        # so the check runs the generated kernel's source eagerly around the same Python
        opt._runner.fused = type(opt)._fused
        for p in params:
            p.grad.copy_(torch.randn(p.shape, generator=gen))  # in place, as backward does
        with ReadBacks() as mode:
            opt.step()
        assert bool(mode.reads) == expect_reads, mode.reads
    assert ob._runner.steady(ob, 0) is not None


def test_capturable_survives_a_checkpoint_and_a_general_step():
    cls, a, b, oa, ob = twins("adamw")
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        step_both(a, b, oa, ob, gen)
    saved = ob.state_dict()
    b2 = [torch.nn.Parameter(p.detach().clone()) for p in b]
    ob2 = cls(b2, backend="compiled", capturable=True)
    ob2.load_state_dict(saved)
    b[1].grad = None  # a parameter without a gradient: the general path, counters move apart
    b2[1].grad = None
    a[1].grad = None
    for p, q, r in zip(a, b, b2, strict=True):
        if p.grad is not None:
            grad = torch.randn(p.shape, generator=gen)
            p.grad, q.grad, r.grad = grad.clone(), grad.clone(), grad.clone()
    for o in (oa, ob, ob2):
        o.step()
    for q, r in zip(b, b2, strict=True):
        assert torch.equal(q, r)
    step_both(a, b, oa, ob, gen)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
    assert [float(ob.state[p]["step"]) for p in b] == [5.0, 4.0, 5.0, 5.0, 5.0]


def test_capturable_makes_no_recompile_under_a_scheduler():
    from torch._dynamo.utils import counters

    _, a, b, oa, ob = twins("adam")
    sched = torch.optim.lr_scheduler.StepLR(ob, step_size=1, gamma=0.7)
    gen = torch.Generator().manual_seed(4)
    step_both(a, b, oa, ob, gen)
    before = counters["stats"]["unique_graphs"]
    for _ in range(5):
        step_both(a, b, oa, ob, gen)
        sched.step()
    assert counters["stats"]["unique_graphs"] == before


@pytest.mark.parametrize("bad, error, match", [
    (dict(capturable="yes"), HyperparameterError, "capturable='yes' must be True or False"),
    (dict(capturable=True, backend="foreach"), UnsupportedError, "backend='foreach' is eager"),
])
def test_bad_capturable_options_are_named(bad, error, match):
    cls = ctopt.to_torch(ctopt.zoo.get("adam"))
    with pytest.raises(error, match=match):
        cls([torch.nn.Parameter(torch.ones(3))], **bad)


def test_auto_is_the_compiled_path_when_capturable():
    cls = ctopt.to_torch(ctopt.zoo.get("adam"))
    opt = cls([torch.nn.Parameter(torch.ones(3))], capturable=True)
    assert opt._resolve_backend() == "compiled"


def _same(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= 1e-13 * max(abs(x), abs(y), 1e-300)


def test_random_scalar_parts_run_on_tensors_as_on_floats():
    settings(max_examples=150, **SETTINGS)(given(designs())(check_scalars_on_tensors))()


@pytest.mark.slow
def test_many_random_scalar_parts_run_on_tensors_as_on_floats():
    settings(max_examples=3000, **SETTINGS)(given(designs())(check_scalars_on_tensors))()


def check_scalars_on_tensors(drawn):
    """The scalar part of a drawn design on 0-d float64 tensors (the capturable step) equals
    the same code on floats, for every design whose scalar part runs on the device."""
    cls = exported_class(drawn)
    if cls is None or not cls.scalars_on_device:
        return
    values = {h.name: float(h.default) for h in cls.hyperparameters}
    for k in (1, 2, 7, 300):
        for gsign in (1.0, -1.0):
            on_floats = [float(c) for c in cls._scalars(values, k, gsign, None)]
            device = DeviceHyper().coefficients(cls, values, gsign,
                                                torch.tensor([k - 1.0]), torch.float64)
            assert all(map(_same, on_floats, device.tolist())), (drawn.recipe, k)
            host32 = _coef_tensor(on_floats, torch.float32, "cpu")
            device32 = DeviceHyper().coefficients(cls, values, gsign,
                                                  torch.tensor([k - 1.0]), torch.float32)
            assert torch.allclose(host32, device32, rtol=2 ** -23, atol=0, equal_nan=True)
