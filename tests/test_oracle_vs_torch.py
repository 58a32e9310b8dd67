"""The float64 oracle equals torch.optim (and the official AdaBelief) over 100 steps."""

import contextlib
import io

import numpy as np
import pytest
import torch

import ctopt

STEPS = 100
RTOL = 1e-12

# design -> list of (torch constructor, torch kwargs, ctopt hyperparameters, design options)
CASES = {
    "sgd": [
        (torch.optim.SGD, dict(lr=0.05), dict(lr=0.05), {}),
        (torch.optim.SGD, dict(lr=0.05, weight_decay=0.02), dict(lr=0.05, weight_decay=0.02), {}),
    ],
    "heavy_ball": [
        (torch.optim.SGD, dict(lr=0.02, momentum=0.9), dict(lr=0.02, momentum=0.9), {}),
        (
            torch.optim.SGD,
            dict(lr=0.03, momentum=0.7, dampening=0.3, weight_decay=0.01),
            dict(lr=0.03, momentum=0.7, dampening=0.3, weight_decay=0.01),
            {},
        ),
    ],
    "nesterov": [
        (
            torch.optim.SGD,
            dict(lr=0.02, momentum=0.9, nesterov=True),
            dict(lr=0.02, momentum=0.9),
            {},
        ),
        (
            torch.optim.SGD,
            dict(lr=0.01, momentum=0.5, nesterov=True, weight_decay=0.05),
            dict(lr=0.01, momentum=0.5, weight_decay=0.05),
            {},
        ),
    ],
    "adagrad": [
        (torch.optim.Adagrad, dict(lr=0.1), dict(lr=0.1), {}),
        (
            torch.optim.Adagrad,
            dict(lr=0.2, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.02, eps=1e-6),
            dict(lr=0.2, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.02, eps=1e-6),
            {},
        ),
    ],
    "rmsprop": [
        (torch.optim.RMSprop, dict(lr=0.01), dict(lr=0.01), {}),
        (
            torch.optim.RMSprop,
            dict(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5),
            dict(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5),
            {},
        ),
        (
            torch.optim.RMSprop,
            dict(lr=0.003, momentum=0.3, centered=True),
            dict(lr=0.003, momentum=0.3),
            dict(centered=True),
        ),
    ],
    "adam": [
        (torch.optim.Adam, dict(lr=0.01), dict(lr=0.01), {}),
        (
            torch.optim.Adam,
            dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.03),
            dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.03),
            {},
        ),
    ],
    "adamw": [
        (torch.optim.AdamW, dict(lr=0.01), dict(lr=0.01), {}),
        (
            torch.optim.AdamW,
            dict(lr=0.02, betas=(0.85, 0.995), weight_decay=0.1),
            dict(lr=0.02, beta1=0.85, beta2=0.995, weight_decay=0.1),
            {},
        ),
    ],
    "amsgrad": [
        (torch.optim.Adam, dict(lr=0.01, amsgrad=True), dict(lr=0.01), {}),
        (
            torch.optim.Adam,
            dict(lr=0.05, amsgrad=True, betas=(0.5, 0.9), weight_decay=0.01),
            dict(lr=0.05, beta1=0.5, beta2=0.9, weight_decay=0.01),
            {},
        ),
    ],
}


def torch_trajectory(ctor, kwargs, grad_fn, x0, steps=STEPS):
    p = torch.tensor(x0, dtype=torch.float64)
    with contextlib.redirect_stdout(io.StringIO()):  # adabelief-pytorch prints a banner
        opt = ctor([p], **kwargs)
    out = [p.detach().numpy().copy()]
    for _ in range(steps):
        p.grad = torch.tensor(grad_fn(p.detach().numpy().copy()), dtype=torch.float64)
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize(
    "name, case", [(n, i) for n, cases in CASES.items() for i in range(len(cases))]
)
def test_oracle_equals_torch_optim(name, case, problem):
    ctor, torch_kwargs, values, options = CASES[name][case]
    grad_fn, x0 = problem
    ours = ctopt.simulate(ctopt.zoo.get(name, **options), grad_fn, x0, STEPS, **values)
    ref = torch_trajectory(ctor, torch_kwargs, grad_fn, x0)
    assert np.abs(ref[-1] - ref[0]).max() > 1e-3, "the reference must actually move"
    assert relative_error(ours, ref) <= RTOL


@pytest.mark.parametrize("maximize", [False, True])
def test_maximize_matches_torch(maximize, problem):
    grad_fn, x0 = problem
    ours = ctopt.simulate(ctopt.zoo.get("adam"), grad_fn, x0, STEPS, maximize=maximize, lr=0.01)
    ref = torch_trajectory(torch.optim.Adam, dict(lr=0.01, maximize=maximize), grad_fn, x0)
    assert relative_error(ours, ref) <= RTOL


@pytest.mark.parametrize(
    "values, official",
    [
        (dict(lr=0.01), dict(lr=0.01)),
        (
            dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.05),
            dict(lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05),
        ),
    ],
)
@pytest.mark.parametrize("decoupled", [True, False])
def test_adabelief_equals_official(values, official, decoupled, problem):
    from adabelief_pytorch import AdaBelief

    grad_fn, x0 = problem
    kwargs = dict(
        official,
        eps=values.get("eps", 1e-16),
        weight_decouple=decoupled,
        rectify=False,
        fixed_decay=False,
        amsgrad=False,
    )
    ref = torch_trajectory(AdaBelief, kwargs, grad_fn, x0)
    ours = ctopt.simulate(
        ctopt.zoo.get("adabelief", decoupled=decoupled), grad_fn, x0, STEPS, **values
    )
    assert relative_error(ours, ref) <= RTOL
