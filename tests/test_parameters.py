"""Parameters and hyperparameter values as torch takes them: duplicates refused by name, tensor
hyperparameters live, bools refused, complex parameters as view_as_real, sparse gradients where
they mean 'no change' (checked against torch.optim)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ctopt
from ctopt.errors import HyperparameterError, UnsupportedError
from ctopt.export import ParameterError

EAGER = ("forloop", "foreach")


def exported(name):
    return ctopt.to_torch(ctopt.zoo.get(name))


def test_duplicate_parameters_are_refused_by_name():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ParameterError, match=r"parameter 1 \(shape \(2,\)\) is the same tensor "
                                             r"as parameter 0"):
        exported("adam")([a, a])
    opt = exported("adam")([a])
    with pytest.raises(ParameterError, match=r"param group 1: parameter 1 .* appear in more "
                                             r"than one parameter group"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ParameterError, match="same tensor"):
        exported("sgd")([("w", a), ("v", a)])


@pytest.mark.parametrize("value", [True, np.bool_(True), torch.tensor(True), 1j,
                                   torch.tensor([0.1, 0.2])])
def test_bools_complex_and_vectors_are_refused_where_a_number_is_needed(value):
    with pytest.raises(HyperparameterError, match=r"'lr'"):
        exported("adam")([torch.nn.Parameter(torch.ones(2))], lr=value)


@pytest.mark.parametrize("backend", [*EAGER, "compiled"])
def test_tensor_lr_is_live_on_every_backend(backend):
    """An in-place change of a tensor lr reaches the step, exactly as a float lr set in the
    group does (compiled: one tiny compile)."""
    name = "adam"
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(64, generator=gen)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    lr = torch.tensor(0.1)
    live = exported(name)([a], lr=lr, backend=backend)
    plain = exported(name)([b], lr=lr.item(), backend=backend)
    assert live.param_groups[0]["lr"] is lr
    for s, value in enumerate((0.1, 0.01, 0.3)):
        lr.fill_(value)
        plain.param_groups[0]["lr"] = lr.item()  # the value the tensor holds (float32)
        g = torch.randn(64, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        live.step()
        plain.step()
        assert torch.equal(a.detach(), b.detach()), s
    sd = live.state_dict()
    assert isinstance(sd["param_groups"][0]["lr"], torch.Tensor)


def test_tensor_betas_and_schedulers():
    p = torch.nn.Parameter(torch.ones(3))
    opt = exported("adam")([p], lr=torch.tensor(0.1), betas=(torch.tensor(0.9),
                                                             torch.tensor(0.99)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.0125)


COMPLEX = {
    "adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}),
    "amsgrad": (torch.optim.Adam, {"amsgrad": True}), "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}), "sgd": (torch.optim.SGD, {}),
    "heavy_ball": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
}


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("name", sorted(COMPLEX))
def test_complex_parameters_are_their_real_views(name, backend):
    """Complex = the design on view_as_real, bit for bit; and equal to torch.optim on the same
    complex parameter (to rounding: the two order their operations differently)."""
    torch_cls, extra = COMPLEX[name]
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 2, dtype=torch.complex64, generator=gen)
    z, t = torch.nn.Parameter(z0.clone()), torch.nn.Parameter(z0.clone())
    r = torch.nn.Parameter(torch.view_as_real(z0).clone())
    extra_ours = {k: v for k, v in extra.items() if k == "momentum"}
    ours = exported(name)([z], lr=0.05, backend=backend, **extra_ours)
    real = exported(name)([r], lr=0.05, backend=backend, **extra_ours)
    ref = torch_cls([t], lr=0.05, foreach=False, **extra)
    for _ in range(4):
        g = torch.randn(5, 2, dtype=torch.complex64, generator=gen)
        z.grad, t.grad, r.grad = g.clone(), g.clone(), torch.view_as_real(g).clone()
        ours.step()
        real.step()
        ref.step()
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    torch.testing.assert_close(z.detach(), t.detach(), rtol=1e-5, atol=1e-6)
    assert ours.state[z]["step"].item() == 4 and all(
        v.is_complex() for k, v in ours.state[z].items() if k != "step")


SPARSE = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01,
                                      "initial_accumulator_value": 0.1}),
}


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("name", sorted(SPARSE))
def test_sparse_gradients_equal_torch(name, backend):
    torch_cls, kwargs = SPARSE[name]
    torch.manual_seed(0)
    ours_emb = torch.nn.Embedding(10, 3, sparse=True)
    ref_emb = torch.nn.Embedding(10, 3, sparse=True)
    ref_emb.load_state_dict(ours_emb.state_dict())
    ours = exported(name)(ours_emb.parameters(), backend=backend, **kwargs)
    ref = torch_cls(ref_emb.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        index = torch.randint(0, 10, (6,), generator=gen)  # repeated rows: uncoalesced grads
        for emb, opt in ((ours_emb, ours), (ref_emb, ref)):
            opt.zero_grad()
            emb(index).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
    torch.testing.assert_close(ours_emb.weight, ref_emb.weight, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("name", "kwargs"), [("adam", {}), ("heavy_ball", {}),
                                              ("sgd", {"weight_decay": 0.1}),
                                              ("adagrad", {"weight_decay": 0.1})])
def test_sparse_gradients_are_refused_where_zero_still_moves(name, kwargs):
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = exported(name)(emb.parameters(), lr=0.1, **kwargs)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(UnsupportedError, match=rf"has a sparse gradient; design '{name}' needs "
                                               "dense gradients at these hyperparameters"):
        opt.step()
    assert torch.equal(emb.weight, before) and not opt.state
