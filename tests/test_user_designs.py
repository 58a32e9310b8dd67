"""Designs a user writes: the guard judges the realised map, filters of any form, closed loops
and ``ctopt check`` for design files, readable conditions, Lyapunov certificates."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.impulse import impulse_response
from ctopt.analysis.readable import readable
from ctopt.analysis.validity import filter_validity
from ctopt.cli import EXIT_FAILED, EXIT_OK, EXIT_UNDECIDED, EXIT_USAGE, main
from ctopt.design import POSITIVE, REAL, UNIT, DesignBuilder, g, theta
from ctopt.errors import DesignError
from ctopt.filters import normalized, z


def _adaptive(name: str, v_update, lr=1e-3):
    b = DesignBuilder(name)
    lr = b.hyper("lr", lr, POSITIVE, role="lr")
    b2 = b.hyper("beta2", 0.999, UNIT, role="ema")
    eps = b.hyper("eps", 1e-8, POSITIVE, role="eps")
    v = b.state("v")
    b.assign(v, v_update(b2, v))
    b.update(theta - lr * g / (sp.sqrt(v) + eps))
    return b.build()


def _two_pole(H):
    b = DesignBuilder("two_pole")
    lr = b.hyper("lr", 1e-3, POSITIVE, role="lr")
    b.hyper("a1", 0.9, REAL)
    b.hyper("a2", 0.2, REAL)
    eps = b.hyper("eps", 1e-8, POSITIVE, role="eps")
    b.filter("v", H, g**2)
    b.update(theta - lr * g / (sp.sqrt(sp.Symbol("v", real=True)) + eps))
    return b.build()


a1, a2 = sp.symbols("a1 a2", real=True)


# ------------------------------------------------------------------ 1. the realised map
def test_a_second_moment_that_turns_negative_is_refused():
    d = _adaptive("negative_v", lambda b2, v: b2 * v + (b2 - 1) * g**2)
    result = filter_validity(d)
    assert not result.ok
    assert any(f.startswith("theta: square root of v: violated") for f in result.failed)
    with pytest.raises(DesignError, match="square root of v"):
        ctopt.to_torch(d)
    # the oracle agrees: v goes negative at step 1, so sqrt(v) is NaN
    v1 = 0.999 * 0 + (0.999 - 1) * 1.0**2
    assert v1 < 0


def test_the_same_moment_written_right_is_proven():
    d = _adaptive("ema_v", lambda b2, v: b2 * v + (1 - b2) * g**2)
    result = filter_validity(d)
    assert result.ok and not result.undecided
    guard = next(gd for gd in result.guards if gd.kind == "square root")
    assert guard.status == "holds" and guard.how.startswith("proven")


def test_a_hidden_second_order_loop_is_one_unstable_recursion():
    b = DesignBuilder("hidden_loop")
    lr = b.hyper("lr", 1e-3, POSITIVE, role="lr")
    b1 = b.hyper("beta1", 0.9, UNIT, role="ema")
    m, q = b.state("m"), b.state("q")
    b.assign(m, b1 * m + (1 - b1) * g + sp.Rational(19, 10) * q)
    b.assign(q, m)
    b.update(theta - lr * m)
    d = b.build()
    result = filter_validity(d)
    check = result.filters[0]
    assert check.block.names == ("m", "q")
    assert check.status["stable"] == "violated"
    with pytest.raises(DesignError, match="m: stable"):
        ctopt.to_torch(d)
    # brute force: the realised map diverges like (beta1 + 1.9)^k
    A = np.array(check.block.A.subs(sp.Symbol("beta1", real=True), 0.9), dtype=float)
    assert np.max(np.abs(np.linalg.eigvals(A))) == pytest.approx(2.8)
    traj = ctopt.simulate(d, lambda x: np.ones_like(x), np.zeros(1), 40)
    assert not np.all(np.abs(traj[-1]) < 1e6)


# ------------------------------------------------------------------ 2. filters of any form
def test_a_polynomial_coefficient_two_pole_filter_is_valid():
    d = _two_pole((1 - a1 + a2) * z**2 / (z**2 - a1 * z + a2))
    result = filter_validity(d)
    assert result.ok, result.failed
    check = result.filters[0]
    assert check.how["nonnegative impulse response"].startswith("at these values (certificate)")
    assert check.how["unit DC gain"] == "proven"
    ctopt.to_torch(d)  # exports
    # complex poles (a1 = 0.5, a2 = 0.5): the impulse response changes sign; refused
    bad = filter_validity(d, a1=0.5, a2=0.5)
    assert not bad.ok
    assert any("nonnegative impulse response: violated" in f for f in bad.failed)


def test_float_coefficients_pass_within_the_stated_tolerance_or_normalised():
    H = 0.3000001 * z**2 / (z**2 - 0.9 * z + 0.2)
    result = filter_validity(_two_pole(H))
    assert result.ok, result.failed
    assert "1e-06" in str(result.proof)
    off = 0.31 * z**2 / (z**2 - 0.9 * z + 0.2)
    assert not filter_validity(_two_pole(off)).ok
    assert filter_validity(_two_pole(normalized(off))).ok


def test_repeated_poles_are_proven_in_closed_form():
    b = sp.Symbol("beta2", real=True)
    d = DesignBuilder("cascade")
    lr = d.hyper("lr", 1e-3, POSITIVE, role="lr")
    d.hyper("beta2", 0.99, UNIT, role="ema")
    eps = d.hyper("eps", 1e-8, POSITIVE, role="eps")
    d.filter("v", (1 - b) ** 2 * z**2 / (z - b) ** 2, g**2)
    d.update(theta - lr * g / (sp.sqrt(sp.Symbol("v", real=True)) + eps))
    result = filter_validity(d.build())
    assert result.ok
    assert result.filters[0].how["nonnegative impulse response"] == "proven"


# ------------------------------------------------------------------ 3. check for design files
def _three_state():
    b = DesignBuilder("adam3", "Adam with a momentum on the normalised step")
    lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
    b1 = b.hyper("beta1", 0.9, UNIT, role="ema")
    b2 = b.hyper("beta2", 0.999, UNIT, role="ema")
    mu = b.hyper("mu", 0.5, UNIT)
    eps = b.hyper("eps", 1e-8, POSITIVE, role="eps")
    m, v, d = b.state("m"), b.state("v"), b.state("d")
    b.assign(m, b1 * m + (1 - b1) * g)
    b.assign(v, b2 * v + (1 - b2) * g**2)
    b.assign(d, mu * d + m / (sp.sqrt(v) + eps))
    b.update(theta - lr * d)
    return b.build()


def test_closed_loop_of_an_adaptive_three_state_design_file(tmp_path):
    from ctopt.report import analyze

    path = tmp_path / "adam3.json"
    ctopt.save_design(_three_state(), path)
    design = ctopt.load_design(path)
    loop = ctopt.closed_loop(design)
    for c in (5.0, 7.0):
        rho = loop.spectral_radius(h=c, r=1.0, lr=0.1, beta1=0.9, mu=0.5)
        (section,) = [s for s in analyze(design, include=("stability",), curvature=c)
                      if s.title.startswith("Closed-loop")]
        (name, ok), = section.verdicts
        assert ok is (rho < 1), name
        assert f"numeric spectral radius {rho:.6g}" in name
    (section,) = [s for s in analyze(design, include=("stability",))
                  if s.title.startswith("Closed-loop")]
    assert "h/r (r = eps + sqrt(v), frozen) in (0, 6.11111)" in section.verdicts[0][0]


@pytest.mark.slow
def test_check_on_an_adaptive_three_state_design_file(tmp_path, capsys):
    path = tmp_path / "adam3.json"
    ctopt.save_design(_three_state(), path)
    for c, expected in ((5.0, EXIT_OK), (7.0, EXIT_FAILED)):
        code = main(["check", str(path), "--curvature", str(c), "--no-proof"])
        assert code == expected, capsys.readouterr().out
    assert main(["check", str(path), "--no-proof"]) == EXIT_OK


def test_undecided_has_its_own_exit_code(tmp_path, capsys):
    # two frozen factors (a clip and a root): the loop depends on r1 and r2, not on h/r alone
    b = DesignBuilder("two_frozen")
    lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
    b1 = b.hyper("beta1", 0.9, UNIT, role="ema")
    b2 = b.hyper("beta2", 0.99, UNIT, role="ema")
    m, v = b.state("m"), b.state("v")
    b.assign(m, b1 * m + (1 - b1) * g / (1 + sp.Abs(g)))
    b.assign(v, b2 * v + (1 - b2) * g**2)
    b.update(theta - lr * m / (sp.sqrt(v) + 1))
    path = tmp_path / "two.json"
    ctopt.save_design(b.build(), path)
    assert main(["check", str(path), "--curvature", "1", "--no-proof"]) == EXIT_UNDECIDED
    assert "--frozen" in capsys.readouterr().out
    code = main(["check", str(path), "--curvature", "1", "--frozen", "r1=1", "--frozen",
                 "r2=1", "--no-proof"])
    assert code in (EXIT_OK, EXIT_FAILED)
    capsys.readouterr()
    assert main(["check", str(path), "--frozen", "zz=1", "--no-proof"]) == EXIT_USAGE
    assert "not frozen factors" in capsys.readouterr().err


def test_check_help_documents_the_exit_codes():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "ctopt", "check", "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert "4 when none fails but one is undecided" in " ".join(out.stdout.split())


# ------------------------------------------------------------------ 4. readable results
def test_conditions_are_simplified_under_the_domains():
    b1, b3, lr, h = sp.symbols("beta1 beta3 lr h", real=True)
    domains = {b1: UNIT, b3: UNIT, lr: POSITIVE}
    assert readable([h * lr > b1 * h * lr], domains) == [h > 0]
    assert readable([(b1 >= b3) | (b3 >= b1), sp.Abs(b1) < 1, h > 0, h >= 0], domains) == [h > 0]
    loop = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    cond = ctopt.stability_conditions(loop)
    assert (sp.Abs(sp.Symbol("momentum", real=True)) < 1) in cond.atoms
    assert len(cond.readable) == 2  # |momentum| < 1 follows from momentum in [0, 1)


def test_heavy_ball_lyapunov_certificate_is_proven_by_lyapunovs_theorem():
    loop = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    cert = ctopt.lyapunov(loop, samples=200)
    assert cert.proven
    assert "Lyapunov's theorem" in cert.method or "Sylvester" in cert.method
    # P solves the Stein equation and is positive definite at a point of the region
    P = cert.P_at(h=1.0, lr=0.1, momentum=0.5)
    assert np.all(np.linalg.eigvalsh(P) > 0)
    assert cert.cross_check(h=1.0, lr=0.1, momentum=0.5) < 1e-10


def test_the_adam_report_headline_has_no_undecided_condition():
    from ctopt.report import analyze

    sections = analyze(ctopt.zoo.get("adam"), include=("stability", "lyapunov"))
    verdicts = [ok for s in sections for _, ok in s.verdicts]
    assert verdicts and all(ok is True for ok in verdicts)


def test_impulse_response_helper_matches_a_recursion():
    A, b, c = np.array([[0.9, 1.0], [-0.2, 0.0]]), np.array([0.3, 0.0]), np.array([1.0, 0.0])
    y, prev, prev2 = [], 0.0, 0.0
    for t in range(20):
        cur = 0.9 * prev - 0.2 * prev2 + (0.3 if t == 0 else 0.0)
        y.append(cur)
        prev2, prev = prev, cur
    assert np.allclose(impulse_response(A, b, c, 20), y, rtol=0, atol=1e-15)


def test_a_divisor_driven_negative_by_its_constant_input_is_refused():
    b = DesignBuilder("drifting_divisor")
    lr = b.hyper("lr", 0.01, POSITIVE, role="lr")
    c = b.hyper("c", -0.3, REAL)
    s = b.state("s", init=1)
    b.assign(s, s + c)
    b.update(theta - lr * g / s)
    result = filter_validity(b.build())
    assert not result.ok
    assert "s = -0.2 < 0 at step 4" in result.failed[0]
    # the float64 oracle agrees: with g = 0, s runs 1, 0.7, 0.4, 0.1, -0.2
    from ctopt.oracle import init_state, step

    state, seen = init_state(b.build(), 1), []
    for k in range(1, 5):
        _, state = step(b.build(), np.zeros(1), np.zeros(1), state, k)
        seen.append(float(state["s"][0]))
    assert seen[3] < 0 < seen[2]
    assert filter_validity(b.build(), c=0.3).ok
