"""Parity of exported optimizers: every design x every eager path equals the float64 oracle, the
paths equal each other in float32, torch.optim's algorithms equal torch.optim, and the standalone
module passes the same checks. (The compiled path: tests/test_export_compiled.py.)"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import ctopt

EAGER = ("forloop", "foreach")
#: float32 paths agree to this relative error after 20 steps (different operation order)
PATH_RTOL32 = 1e-5
SHAPES = ((3,), (2, 2), (4,))  # one group of three tensors: reductions span all of them

#: designs under test: zoo names plus structural variants, with hyperparameters that exercise
#: every branch (weight decay, clipping active, momentum on)
CASES = {
    "sgd": ({}, dict(lr=0.05, weight_decay=0.1)),
    "heavy_ball": ({}, dict(lr=0.05, weight_decay=0.1, dampening=0.2)),
    "nesterov": ({}, dict(lr=0.05, weight_decay=0.1)),
    "adagrad": ({}, dict(lr=0.1, weight_decay=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    "rmsprop": ({}, dict(lr=0.01, weight_decay=0.1, momentum=0.5)),
    "rmsprop_centered": ({"centered": True}, dict(lr=0.01, momentum=0.5)),
    "adam": ({}, dict(lr=0.05, weight_decay=0.1)),
    "adamw": ({}, dict(lr=0.05, weight_decay=0.1)),
    "amsgrad": ({}, dict(lr=0.05, weight_decay=0.1)),
    "adabelief": ({}, dict(lr=0.05, weight_decay=0.1)),
    "adabelief_coupled": ({"decoupled": False}, dict(lr=0.05, weight_decay=0.1)),
    "adamssm": ({}, dict(lr=0.05, weight_decay=0.1)),
    "adan": ({}, dict(lr=0.05, weight_decay=0.1, max_grad_norm=0.5)),
    "adan_noprox": ({"no_prox": True}, dict(lr=0.05, weight_decay=0.1)),
    "signgd": ({}, dict(lr=0.05, weight_decay=0.1)),
    "dgclip": ({}, dict(lr=0.5, gamma=0.5, delta=0.1, weight_decay=0.01)),
}


def design_of(case: str):
    options, _ = CASES[case]
    return ctopt.zoo.get(case.split("_")[0] if case not in ctopt.zoo.names() else case, **options)


def problem(n: int = 11, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    hess = a @ a.T / n + np.eye(n)
    x0 = rng.standard_normal(n)
    return (lambda x: hess @ x + np.sin(3 * x) - 0.5), x0


def split(x: np.ndarray, dtype=torch.float64) -> list[torch.Tensor]:
    out, i = [], 0
    for shape in SHAPES:
        n = int(np.prod(shape))
        out.append(torch.nn.Parameter(torch.tensor(x[i:i + n], dtype=dtype).reshape(shape)))
        i += n
    return out


def run(opt_cls, values, steps=20, dtype=torch.float64, module=None, **kwargs) -> np.ndarray:
    grad_fn, x0 = problem()
    params = split(x0, dtype)
    opt = opt_cls(params, **values, **kwargs)
    traj = [x0]
    for _ in range(steps):
        x = np.concatenate([p.detach().double().reshape(-1).numpy() for p in params])
        grads = split(grad_fn(x), dtype)
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr.detach()
        opt.step()
        traj.append(np.concatenate([p.detach().double().reshape(-1).numpy() for p in params]))
    return np.array(traj)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_oracle_float64(case, backend):
    design = design_of(case)
    values = CASES[case][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design, grad_fn, x0, 20, **values)
    out = run(ctopt.to_torch(design, check=False), values, backend=backend)
    assert rel_err(out, reference) <= 1e-12
    assert rel_err(out[-1], x0) > 1e-3  # it moved


@pytest.mark.parametrize("case", ["adam", "dgclip", "adan"])
def test_maximize_equals_oracle(case):
    design, values = design_of(case), CASES[case][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design, grad_fn, x0, 20, maximize=True, **values)
    for backend in EAGER:
        out = run(ctopt.to_torch(design, check=False), values, backend=backend, maximize=True)
        assert rel_err(out, reference) <= 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_paths_agree_float32(case):
    design, values = design_of(case), CASES[case][1]
    cls = ctopt.to_torch(design, check=False)
    a = run(cls, values, dtype=torch.float32, backend="forloop")
    b = run(cls, values, dtype=torch.float32, backend="foreach")
    assert rel_err(b, a) <= PATH_RTOL32


TORCH = {
    "adam": (lambda p, **v: torch.optim.Adam(p, **v), dict(lr=0.01, betas=(0.8, 0.99),
                                                          weight_decay=0.1)),
    "adamw": (lambda p, **v: torch.optim.AdamW(p, **v), dict(lr=0.01, weight_decay=0.1)),
    "amsgrad": (lambda p, **v: torch.optim.Adam(p, amsgrad=True, **v), dict(lr=0.01)),
    "adagrad": (lambda p, **v: torch.optim.Adagrad(p, **v),
                dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    "rmsprop": (lambda p, **v: torch.optim.RMSprop(p, **v), dict(lr=0.005, momentum=0.5,
                                                                weight_decay=0.1)),
    "sgd": (lambda p, **v: torch.optim.SGD(p, **v), dict(lr=0.02, weight_decay=0.1)),
    "heavy_ball": (lambda p, **v: torch.optim.SGD(p, **v),
                   dict(lr=0.02, momentum=0.9, dampening=0.1)),
    "nesterov": (lambda p, **v: torch.optim.SGD(p, nesterov=True, **v),
                 dict(lr=0.02, momentum=0.9, weight_decay=0.1)),
}
#: float32, 100 steps: tolerance against torch.optim (rounding differs, no algorithmic slack)
TORCH_RTOL32 = 2e-5


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("name", sorted(TORCH))
def test_equals_torch_float32(name, backend):
    make, values = TORCH[name]
    expected = run(lambda p, **v: make(p, foreach=False, **v), values, steps=100,
                   dtype=torch.float32)
    ours = run(ctopt.to_torch(ctopt.zoo.get(name)), values, steps=100, dtype=torch.float32,
               backend=backend)
    assert rel_err(ours, expected) <= TORCH_RTOL32
    assert rel_err(ours[-1], ours[0]) > 1e-3


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """Every case exported with export_source and imported as a plain module."""
    folder = tmp_path_factory.mktemp("exported")
    classes = {}
    for case in CASES:
        path = folder / f"opt_{case}.py"
        ctopt.export_source(design_of(case), path, check=False)
        spec = importlib.util.spec_from_file_location(f"opt_{case}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert "ctopt" not in {m.split(".")[0] for m in vars(module) if m == "ctopt"}
        classes[case] = getattr(module, module.__all__[0])
    return classes


@pytest.mark.parametrize("case", sorted(CASES))
def test_standalone_equals_oracle(standalone, case):
    design, values = design_of(case), CASES[case][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design, grad_fn, x0, 20, **values)
    for backend in EAGER:
        out = run(standalone[case], values, backend=backend)
        assert rel_err(out, reference) <= 1e-12


@pytest.mark.parametrize("name", ["adam", "rmsprop", "nesterov"])
def test_standalone_equals_torch(standalone, name):
    make, values = TORCH[name]
    expected = run(lambda p, **v: make(p, foreach=False, **v), values, steps=100,
                   dtype=torch.float32)
    ours = run(standalone[name], values, steps=100, dtype=torch.float32, backend="foreach")
    assert rel_err(ours, expected) <= TORCH_RTOL32


def test_standalone_has_no_ctopt_import(tmp_path):
    text = ctopt.export_source(ctopt.zoo.get("adan"), tmp_path / "adan_opt.py")
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all("ctopt" not in line for line in imports)
    assert (tmp_path / "adan_opt.py").read_text() == text


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("case", sorted(CASES))
def test_defaults_equal_oracle_float64(case, backend):
    """With the defaults (no weight decay, no clipping) the eager paths read the gradient itself
    instead of a scaled copy (a run-time identity); that branch equals the oracle too."""
    design, values = design_of(case), {"lr": CASES[case][1]["lr"]}
    grad_fn, x0 = problem()
    for maximize in (False, True):
        reference = ctopt.simulate(design, grad_fn, x0, 20, maximize=maximize, **values)
        out = run(ctopt.to_torch(design, check=False), values, backend=backend, maximize=maximize)
        assert rel_err(out, reference) <= 1e-12
        assert rel_err(out[-1], x0) > 1e-3


class _Allocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts tensors of at least ``numel`` elements that out-of-place ops return."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func._schema.is_mutable:
            flat = out if isinstance(out, (list, tuple)) else [out]
            self.count += sum(isinstance(t, torch.Tensor) and t.numel() >= self.numel for t in flat)
        return out


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("name", ["adam", "adamw", "amsgrad", "rmsprop", "heavy_ball", "sgd"])
def test_eager_steps_allocate_no_more_than_torch(name, backend):
    """States and parameters are updated in place: a step allocates no more parameter-sized
    temporaries than torch.optim's own implementation in the same mode."""
    make, values = TORCH[name]
    counts = []
    for build in (lambda p: make(p, foreach=backend == "foreach", **values),
                  lambda p: ctopt.to_torch(ctopt.zoo.get(name))(p, backend=backend, **values)):
        params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(3)]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = build(params)
        opt.step()  # states exist from here on
        with _Allocations(64 * 64) as mode:
            opt.step()
        counts.append(mode.count)
    assert counts[1] <= counts[0], counts


def _coefficient_draws(cls, values: dict) -> list[tuple]:
    """Coefficients of real steps that take every run-time branch of the in-place code: the
    defaults (gradient identities on), the case's values (weight decay, clipping), maximize,
    first and later steps."""
    defaults = {h.name: h.default for h in cls.hyperparameters}
    draws = []
    for hyper in (defaults, {**defaults, **values}):
        for k in (1, 3):
            for gsign in (1.0, -1.0):
                draws.append(cls._scalars(hyper, k, gsign, lambda name: 0.7))
    return draws


@pytest.mark.parametrize("case", sorted(CASES))
def test_inplace_code_equals_elementwise(case):
    """The generated in-place functions equal the operator-tree ``_elementwise`` in float64,
    whichever run-time branch the step's coefficients select, and never write the gradient."""
    cls = ctopt.to_torch(design_of(case), check=False)
    nstates = len(cls.state_keys)
    gen = torch.Generator().manual_seed(0)
    for coef in _coefficient_draws(cls, CASES[case][1]):
        inputs = [torch.randn(2, 5, generator=gen, dtype=torch.float64).abs() + 0.25
                  for _ in range(2 + nstates)]
        expected = [torch.as_tensor(t) for t in cls._elementwise(*inputs, *coef)]
        one = [t.clone() for t in inputs]
        cls._forloop(*one, *coef)
        lists = [[t.clone(), t[:1].clone()] for t in inputs]
        cls._foreach(*lists, *coef)
        # random states can be inconsistent (centered RMSprop: v < m^2): NaN where the reference
        # has NaN, equal elsewhere
        scale = max(float(t.nan_to_num(0.0).abs().max()) for t in expected)
        for got in ([one[0], *one[2:]], [lst[0] for lst in [lists[0], *lists[2:]]]):
            for a, b in zip(got, expected, strict=True):
                b = b.expand_as(a)
                assert torch.equal(a.isnan(), b.isnan()), (case, coef)
                error = float((a - b).nan_to_num(0.0).abs().max())
                assert error <= 1e-12 * scale, (case, coef)
        assert torch.equal(one[1], inputs[1]) and torch.equal(lists[1][0], inputs[1])


def test_a_lerp_is_proved_on_rational_weights_with_bounded_algebra(monkeypatch):
    """``m/(1+c) + u*c/(1+c)`` is a lerp only once its weights' sum is cancelled to 1 (sympy
    does not fold it on its own); the proof is rational algebra, never ``sympy.simplify``,
    whose work is unbounded, and the code it gives equals a hand-written reference."""
    import sympy as sp

    from ctopt.design import POSITIVE, DesignBuilder, g, theta

    def no_simplify(*args, **kwargs):
        raise AssertionError("sympy.simplify called while printing the in-place code")

    monkeypatch.setattr(sp, "simplify", no_simplify)
    b = DesignBuilder("rational_lerp")
    lr = b.hyper("lr", 0.1, POSITIVE)
    c = b.hyper("c", 3.0, POSITIVE)
    m = b.state("m")
    u = b.let("u", 2 * g)  # read twice, so a tensor of its own (as Adam's gradient)
    b.assign(m, m / (1 + c) + u * c / (1 + c))
    b.update(theta - lr * (m + u))
    design = b.build()
    source = ctopt.export.class_source(design, "RationalLerp")
    assert "torch._foreach_lerp_(" in source and ".lerp_(" in source
    cls = ctopt.to_torch(design, check=False)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = cls([p], backend="foreach")
    grads = [np.array([0.5, 1.0]), np.array([-1.0, 0.25]), np.array([2.0, 0.0])]
    m_ref, theta_ref = np.zeros(2), np.array([1.0, -2.0])
    for grad in grads:
        p.grad = torch.tensor(grad)
        opt.step()
        m_ref = m_ref / 4 + 2 * grad * 3 / 4
        theta_ref = theta_ref - 0.1 * (m_ref + 2 * grad)
    np.testing.assert_allclose(p.detach().numpy(), theta_ref, rtol=1e-15, atol=1e-15)
