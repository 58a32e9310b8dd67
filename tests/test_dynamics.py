"""The dynamics lab: problems, batched simulation, the regime classifier, Ma-Wu-E's observations."""

import numpy as np
import pytest

import ctopt
from ctopt.dynamics import (
    classify,
    logistic_regression,
    mlp,
    phase_map,
    quadratic,
    rosenbrock,
    run,
    run_batch,
    signgd_flow,
    signgd_limit,
)
from ctopt.errors import DesignError, HyperparameterError

PROBLEMS = [quadratic(100.0, dim=3), rosenbrock(), logistic_regression(samples=40, dim=3), mlp(hidden=3)]


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_gradients_match_finite_differences(problem):
    rng = np.random.default_rng(0)
    x = problem.x0 + 0.3 * rng.standard_normal(problem.x0.size)
    h = 1e-6
    fd = [(problem.loss(x + h * e) - problem.loss(x - h * e)) / (2 * h) for e in np.eye(x.size)]
    np.testing.assert_allclose(problem.grad(x), fd, rtol=1e-5, atol=1e-7)
    batch = np.stack([x, problem.x0])  # batched evaluation agrees with row by row
    np.testing.assert_allclose(problem.grad(batch)[1], problem.grad(problem.x0))
    assert problem.loss(x) >= problem.minimum - 1e-9


@pytest.mark.parametrize("name", ["adam", "adan", "dgclip", "adagrad", "adamssm"])
def test_batched_simulation_equals_the_oracle_per_setting(name):
    d = ctopt.zoo.get(name)
    lrs = np.array([1e-3, 3e-2])
    batch = run_batch(d, rosenbrock(), 30, lr=lrs)
    for i, lr in enumerate(lrs):
        one = run(d, rosenbrock(), 30, lr=float(lr))
        np.testing.assert_allclose(batch.x[i], one.x, rtol=1e-12, atol=1e-14)


def test_batched_values_are_validated():
    with pytest.raises(HyperparameterError, match="beta1"):
        run_batch(ctopt.zoo.get("adam"), quadratic(), 3, beta1=np.array([0.5, 1.5]))
    with pytest.raises(HyperparameterError, match="unknown"):
        run_batch(ctopt.zoo.get("adam"), quadratic(), 3, momentum=0.5)
    with pytest.raises(HyperparameterError, match="lengths"):
        run_batch(ctopt.zoo.get("adam"), quadratic(), 3, lr=[0.1, 0.2], beta1=[0.5, 0.6, 0.7])


# ---------------------------------------------------------------- classifier, constructed cases
K = np.arange(1000)


def test_classifier_on_constructed_curves():
    assert classify(0.99**K) == "converging"
    assert classify(0.99**K * (1.5 + np.sin(K))) == "converging"  # wiggles while falling
    assert classify(1.0 / (1.0 + K)) == "converging"  # slow but steady
    assert classify(1e-3 * 10.0 ** np.sin(0.7 * K)) == "oscillating"  # swings 2 decades, no progress
    spike = 0.97**K
    spike[600:620] = 1e-2  # after reaching ~1e-8, back up by 6 decades, then down again
    assert classify(spike) == "spiking"
    assert classify(1.02**K) == "diverging"
    nan = 0.99**K
    nan[500] = np.nan
    assert classify(nan) == "diverging"


def test_classifier_thresholds_move_the_boundaries():
    small_spike = 0.97**K
    small_spike[300:320] = small_spike[299] * 100  # 2 decades
    assert classify(small_spike) == "spiking"
    assert classify(small_spike, spike_decades=2.5) == "converging"
    with pytest.raises(DesignError):
        classify([1.0, 2.0])


def test_classifier_on_simulated_runs():
    p = quadratic(10.0)
    assert run(ctopt.zoo.get("sgd"), p, 300, lr=0.5).regime == "converging"
    assert run(ctopt.zoo.get("sgd"), p, 300, lr=2.5).regime == "diverging"
    assert run(ctopt.zoo.get("signgd"), p, 300, lr=0.05).regime == "oscillating"


# ---------------------------------------------------------------- Ma-Wu-E
def test_signgd_flow_is_exact_for_a_separable_quadratic():
    x = run(ctopt.zoo.get("signgd"), quadratic(100.0, x0=(1.0, 0.5)), 40, lr=0.01).x
    np.testing.assert_allclose(x, signgd_flow([1.0, 0.5], np.arange(41) * 0.01), atol=1e-12)


def test_adam_approaches_the_signgd_flow_as_lr_shrinks():
    d = signgd_limit((1e-3, 3e-4, 1e-4), beta1=0.9, beta2=0.99)
    assert d[1e-3] > d[3e-4] > d[1e-4]
    assert d[1e-4] < 0.5 * d[1e-3]


def test_phase_map_shows_the_three_regimes_on_a_quadratic():
    a = b = np.array([0.5, 5.0, 50.0])
    pm = phase_map(a, b, eta=1e-2, steps=3000)
    assert pm.regimes[0, 0] == "converging"  # a ~ b
    assert pm.regimes[1, 1] == "converging"
    assert pm.regimes[2, 0] == "spiking"  # b >> a
    assert pm.regimes[0, 2] == "oscillating"  # a >> b
    with pytest.raises(HyperparameterError, match="b"):
        phase_map([1.0], [200.0], eta=1e-2)


def test_torch_backend_matches_the_oracle():
    export = pytest.importorskip("ctopt.export")
    if not hasattr(export, "to_torch"):
        pytest.skip("the torch exporter is not available")
    d = ctopt.zoo.get("adam")
    a = run(d, rosenbrock(), 20, lr=0.01, backend="torch")
    b = run(d, rosenbrock(), 20, lr=0.01)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-10, atol=1e-12)
