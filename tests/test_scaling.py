"""The square-root and linear batch-size rules, and their numeric validation."""

import math

import pytest

import ctopt
from ctopt.errors import DesignError, HyperparameterError
from ctopt.scaling import linear_rule, sqrt_rule, validate_sqrt_rule


def test_sqrt_rule_transforms_every_role_of_adam():
    d = ctopt.zoo.get("adam")
    base = {"lr": 0.01, "beta1": 0.95, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
    new = sqrt_rule(base, 9, d)
    assert new["lr"] == pytest.approx(0.03)
    assert 1 - new["beta1"] == pytest.approx(9 * 0.05)
    assert 1 - new["beta2"] == pytest.approx(9 * 0.001)
    assert new["eps"] == pytest.approx(1e-8 / 3)
    assert new["weight_decay"] == 0.1  # no role: unchanged


def test_sqrt_rule_reads_roles_of_any_design():
    for name in ("adabelief", "adan", "adamssm", "rmsprop"):
        d = ctopt.zoo.get(name)
        new = sqrt_rule(d, 2)
        for h in d.hyper:
            v = d.defaults[h.name]
            if h.role == "ema":
                assert 1 - new[h.name] == pytest.approx(2 * (1 - v)), (name, h.name)
            elif h.role == "lr":
                assert new[h.name] == pytest.approx(v * math.sqrt(2))
            else:
                assert h.role == "eps" or new[h.name] == v


def test_kappa_one_is_identity_and_rules_compose():
    d = ctopt.zoo.get("adam")
    assert sqrt_rule(d, 1) == pytest.approx(d.defaults)
    twice = sqrt_rule(sqrt_rule(d, 2), 3, d)
    assert twice == pytest.approx(sqrt_rule(d, 6))


def test_role_override_scales_adamssm_pole_and_zero():
    d = ctopt.zoo.get("adamssm")
    new = sqrt_rule(d, 2, roles={"pole": "ema", "zero": "ema"})
    assert 1 - new["pole"] == pytest.approx(2 * (1 - d.defaults["pole"]))
    assert 1 - new["zero"] == pytest.approx(2 * (1 - d.defaults["zero"]))
    with pytest.raises(HyperparameterError, match="nope"):
        sqrt_rule(d, 2, roles={"nope": "ema"})


def test_kappa_that_breaks_a_beta_names_it():
    d = ctopt.zoo.get("adam")
    with pytest.raises(HyperparameterError, match="beta1"):
        sqrt_rule(d, 11)  # 1 - 11*0.1 < 0
    with pytest.raises(HyperparameterError, match="beta1"):
        sqrt_rule({"beta1": 0.0}, 2, d)
    with pytest.raises(HyperparameterError, match="kappa"):
        sqrt_rule(d, -1)
    with pytest.raises(DesignError, match="design"):
        sqrt_rule({"lr": 0.1}, 2)


def test_linear_rule_scales_only_the_learning_rate():
    d = ctopt.zoo.get("heavy_ball")
    new = linear_rule({"lr": 0.1, "momentum": 0.9}, 4, d)
    assert new["lr"] == pytest.approx(0.4)
    assert new["momentum"] == 0.9


@pytest.mark.parametrize("name, values", [
    ("adam", {"lr": 1e-3, "beta1": 0.99, "beta2": 0.999}),
    ("rmsprop", {"lr": 1e-3, "alpha": 0.999}),
])
@pytest.mark.parametrize("kappa", [4, 16])
def test_sqrt_rule_matches_within_seed_noise_where_unscaled_does_not(name, values, kappa):
    r = validate_sqrt_rule(ctopt.zoo.get(name), kappa, values, samples=6400, seeds=8,
                           checkpoints=10)
    assert r.distance_rule < r.seed_noise, str(r)
    assert r.distance_unscaled > 2 * r.seed_noise, str(r)
