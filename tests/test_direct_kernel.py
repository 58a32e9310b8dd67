"""The compiled kernels called directly (``ctopt.export.direct``): equal to the ordinary
``torch.compile`` call bit for bit, checked once per (devices, dtypes), refused (the ordinary
call kept) when anything does not fit; the generated code still checks sizes and strides."""

from __future__ import annotations

import types

import pytest
import torch

import ctopt
from ctopt.export import direct
from ctopt.export.direct import Kernel

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
COEF = torch.tensor([1.0, 0.0, 0.9, 0.1, 0.999, 0.001, 1.0, 1e-8, -1e-3])


def fresh():
    """Adam's kernel source as a new function (dynamo keeps compiled code per code object, and
    a limited number per object: each test compiles its own)."""
    fn = Adam._fused
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)


def tensors(n, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    theta, g, m = (torch.randn(n, generator=gen, dtype=dtype) for _ in range(3))
    return [theta, g, m, torch.rand(n, generator=gen, dtype=dtype)]


def test_the_direct_call_equals_the_ordinary_call_bit_for_bit():
    kernel = Kernel(fresh())
    ordinary = torch.compile(fresh(), dynamic=True, fullgraph=True)
    for n in (1000, 37, 5000):  # one graph for every size
        ours, theirs = tensors(n), tensors(n)
        for _ in range(3):
            kernel(*ours, COEF)
            ordinary(*theirs, COEF)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert len(kernel.direct) == 1 and not kernel.refused
    assert len(kernel.graphs) == 1


def test_each_dtype_gets_its_own_checked_direct_call():
    kernel = Kernel(fresh())
    kernel(*tensors(100), COEF)
    kernel(*tensors(100, torch.float64), COEF.double())
    assert len(kernel.direct) == 2 and len(kernel.graphs) == 2


def test_a_graph_compiled_for_equal_sizes_serves_only_equal_sizes():
    """Compiled when the coefficient vector was as long as theta (9 elements); a 1000-element
    call is its own key, served (by a graph of its own or the same one) and checked."""
    kernel = Kernel(fresh())
    small, big = tensors(9), tensors(1000)
    small_ref, big_ref = tensors(9), tensors(1000)
    kernel(*small, COEF)
    kernel(*big, COEF)
    fn = fresh()
    fn(*small_ref, COEF)
    fn(*big_ref, COEF)
    torch.testing.assert_close(small + big, small_ref + big_ref)
    assert len(kernel.direct) + len(kernel.refused) == 2 and kernel.direct


def test_the_generated_code_still_checks_sizes():
    """A gradient that is not as long as theta is another key (the ordinary call, which
    refuses it); the coefficient vector's length is part of the key."""
    kernel = Kernel(fresh())
    kernel(*tensors(100), COEF)
    theta, g, m, v = tensors(100)
    with pytest.raises(Exception, match="size"):
        kernel(theta, g[:50], m, v, COEF)
    longer = torch.cat([COEF, torch.zeros(3)])  # the kernel reads the first nine
    ours, theirs = tensors(100), tensors(100)
    kernel(*ours, longer)
    fresh()(*theirs, COEF)
    torch.testing.assert_close(ours, theirs)
    assert {k[-1][2] for k in kernel.direct} == {torch.Size([9]), torch.Size([12])}


def test_an_input_order_it_cannot_read_keeps_the_ordinary_call(monkeypatch):
    monkeypatch.setattr(direct, "_SOURCE", direct.re.compile(r"no such source"))
    kernel = Kernel(fresh())
    ours, theirs = tensors(100), tensors(100)
    kernel(*ours, COEF)
    kernel(*ours, COEF)
    Adam._fused(*theirs, COEF)
    Adam._fused(*theirs, COEF)
    assert not kernel.direct and len(kernel.refused) == 1
    torch.testing.assert_close(ours, theirs)


def test_a_direct_call_that_disagrees_is_refused(monkeypatch):
    """A wrong input order (theta and the gradient swapped) is caught by the one-time check."""
    recipe = Kernel._recipe

    def swapped(self, gm):
        out = recipe(self, gm)
        return [(1 - i if i < 2 else i, dim) for i, dim in out]

    monkeypatch.setattr(Kernel, "_recipe", swapped)
    kernel = Kernel(fresh())
    ours = tensors(100)
    kernel(*ours, COEF)
    assert not kernel.direct and len(kernel.refused) == 1


def test_the_compiled_path_uses_direct_calls_and_equals_the_for_loop_path():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    twin = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    opt = Adam(model.parameters(), lr=0.01, backend="compiled")
    ref = Adam(twin, lr=0.01, backend="forloop")
    for i in range(4):
        opt.zero_grad(set_to_none=False)
        model(torch.randn(8, 6, generator=torch.Generator().manual_seed(i))).square().mean() \
            .backward()
        for p, q in zip(model.parameters(), twin, strict=True):
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    assert opt._runner.kernel().direct
    for p, q in zip(model.parameters(), twin, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)



def test_a_kernel_is_compiled_at_a_representative_size(monkeypatch):
    """Whatever the first call's size, Inductor sees elementwise arguments of
    ``_COMPILE_NUMEL`` elements (its vector width and threading follow the size it compiles
    at); the other arguments keep their shapes; the first call's own update is still made."""
    seen = []
    backend = Kernel._backend

    def spy(self, gm, example_inputs):
        seen.append([tuple(int(s) for s in t.shape) for t in example_inputs
                     if isinstance(t, torch.Tensor)])
        return backend(self, gm, example_inputs)

    monkeypatch.setattr(Kernel, "_backend", spy)
    kernel = Kernel(fresh())
    ours = tensors(5, dtype=torch.bfloat16)
    theirs = [t.clone() for t in ours]
    kernel(*ours, COEF)
    torch.compile(fresh(), dynamic=True, fullgraph=True)(*theirs, COEF)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    big = (direct._COMPILE_NUMEL,)
    assert len(seen) == 1 and sorted(seen[0]) == sorted([big] * 4 + [tuple(COEF.shape)])


def test_stand_ins_copy_everything_and_lengthen_only_the_elementwise_arguments():
    theta, coef, scalar = torch.ones(3), torch.ones(3, 2), torch.tensor(2.0)
    out = direct._stand_ins([theta, torch.zeros(3, dtype=torch.bfloat16), coef, scalar])
    assert [t.shape for t in out] == [(direct._COMPILE_NUMEL,)] * 2 + [(3, 2), ()]
    assert out[1].dtype == torch.bfloat16 and out[0] is not theta and out[2] is not coef
    assert out[2].data_ptr() != coef.data_ptr() and float(out[3]) == 2.0
