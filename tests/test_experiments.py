"""The experiment harness at tiny sizes, and AdamSSM's filter checks."""

import math

import numpy as np
import pytest

import ctopt
from ctopt.experiments import Comparison, OptimizerSpec, RunCurves, compare
from ctopt.experiments.study import filter_check, impulse_response

pytest.importorskip("torch")


class FakeTask:
    """Metric = a known function of lr (and a little of the seed); lr 0.3 diverges."""

    name, metric, higher_is_better = "fake", "score", True

    def train(self, make, lr, seed):
        value = float("nan") if lr == 0.3 else 1.0 - abs(math.log10(lr) + 2) + 0.01 * seed
        return RunCurves([1, 2], [1.0, 0.5], [1.0, 0.5], [0.0, value])


def test_compare_picks_the_best_lr_treats_divergence_as_worst_and_round_trips(tmp_path):
    specs = [OptimizerSpec("A", "adam", {}, (1e-3, 1e-2, 0.3)), OptimizerSpec("B", "sgd", {}, (0.3, 1e-1))]
    result = compare(FakeTask(), specs, seeds=3, factory=lambda spec: None, progress=False)
    assert result.best_lr == {"A": 1e-2, "B": 1e-1}
    mean, std = result.summary()["A"]
    assert mean == pytest.approx(1.01) and std == pytest.approx(0.01)
    assert "| A |" in result.table() and "n=3" in result.table()
    result.save(tmp_path / "r.json")
    again = Comparison.load(tmp_path / "r.json")
    assert again.summary() == result.summary() and again.best_lr == result.best_lr


def test_digits_with_exported_optimizers_at_tiny_size():
    pytest.importorskip("sklearn")
    from ctopt.experiments import DigitsTask

    task = DigitsTask(epochs=1, batch=256, width=4)
    specs = [OptimizerSpec("AdamSSM", "adamssm", {}, (3e-3,)), OptimizerSpec("Adan", "adan", {}, (1e-2,))]
    result = compare(task, specs, seeds=1, progress=False)
    for label, runs in result.runs.items():
        assert 0.0 <= runs[0].final <= 1.0, label
        assert runs[0].train_loss[0] < math.log(10) * 1.5  # cross-entropy starts near log(10)


def test_language_task_at_tiny_size():
    from ctopt.experiments import LanguageTask, ctopt_factory

    task = LanguageTask(chars=20_000, steps=6, hidden=8, embed=4, seq=8, batch=4, eval_every=3)
    run = task.train(ctopt_factory(OptimizerSpec("Adam", "adam")), 1e-2, 0)
    assert run.steps == [3, 6]
    assert all(1.0 < p < 200 for p in run.val_metric)  # perplexity below the ~100-symbol uniform


def test_impulse_response_is_the_designs_own_v_recursion():
    d = ctopt.zoo.get("adamssm")
    values = {"pole": 0.6, "zero": 0.95, "beta2": 0.99}
    state = ctopt.oracle.init_state(d, 1, **values)
    x = np.zeros(1)
    got = []
    for step in range(1, 30):
        grad = np.array([1.0 if step == 1 else 0.0])
        x, state = ctopt.oracle.step(d, x, grad, state, step, **values)
        got.append(float(state["v"][0]))
    np.testing.assert_allclose(got, impulse_response(0.6, 0.95, 0.99, 29), rtol=1e-12, atol=1e-18)


def test_nonnegativity_region_matches_the_analytic_condition():
    # with poles p, beta2 in [0, 1): h >= 0 for all k iff zero <= max(pole, beta2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        p, b2 = rng.uniform(0, 0.99, 2)
        q_ok = rng.uniform(-0.9, max(p, b2))
        assert filter_check(p, q_ok, b2, n=4000)["nonnegative"], (p, q_ok, b2)
    for p, q, b2 in [(0.9, 0.9995, 0.999), (0.5, 0.95, 0.9), (0.0, 0.5, 0.3), (0.3, 0.8, 0.0),
                     (0.99, 0.995, 0.9)]:
        assert not filter_check(p, q, b2, n=4000)["nonnegative"], (p, q, b2)


def test_adamssm_defaults_are_valid():
    d = ctopt.zoo.get("adamssm").defaults
    c = filter_check(d["pole"], d["zero"], d["beta2"])
    assert c["stable"] and c["nonnegative"]
    assert c["dc_gain"] == pytest.approx(1.0, abs=1e-3)
