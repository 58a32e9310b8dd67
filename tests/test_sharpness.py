"""The preconditioner view and the critical sharpness, against brute-force spectral radii of
independently written frozen loops and against the float64 oracle."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.errors import CtoptError, NotPreconditionedError
from ctopt.experiments.edge import qhadam


# ------------------------------------------------------------------ the preconditioner view
def _same(expr, fn):
    """``expr`` equals ``fn`` (a numpy formula by name) at random values of every name."""
    rng = np.random.default_rng(3)
    names = ["eps", "s", "sq", "v", "vmax", "n", "m", "g", "buf", "beta1", "beta2", "beta3", "k"]
    f = sp.lambdify([sp.Symbol(n) for n in names],
                    expr.xreplace({s: sp.Symbol(s.name) for s in expr.free_symbols}))
    for _ in range(5):
        vals = {n: float(rng.uniform(0.1, 0.9)) for n in names}
        vals["k"] = 3.0
        if not np.isclose(f(*(vals[n] for n in names)), fn(**vals), rtol=1e-12):
            return False
    return True


def _bias(x, beta, k):
    return x / (1 - beta**k)


@pytest.mark.parametrize("name, D, u", [
    ("adagrad", lambda eps, s, **_: eps + np.sqrt(s), lambda g, **_: g),
    ("rmsprop", lambda eps, sq, **_: eps + np.sqrt(sq), lambda g, **_: g),
    ("adam", lambda eps, v, beta2, k, **_: eps + np.sqrt(_bias(v, beta2, k)),
     lambda m, beta1, k, **_: _bias(m, beta1, k)),
    ("amsgrad", lambda eps, vmax, beta2, k, **_: eps + np.sqrt(_bias(vmax, beta2, k)),
     lambda m, beta1, k, **_: _bias(m, beta1, k)),
    ("adabelief", lambda eps, s, beta2, k, **_: eps + np.sqrt(_bias(s, beta2, k)),
     lambda m, beta1, k, **_: _bias(m, beta1, k)),
    ("adan", lambda eps, n, beta3, k, **_: eps + np.sqrt(_bias(n, beta3, k)),
     lambda m, v, beta1, beta2, k, **_: _bias(m, beta1, k) + beta2 * _bias(v, beta2, k)),
    ("signgd", lambda g, **_: np.abs(g), lambda g, **_: g),
    ("sgd", lambda **_: 1.0, lambda g, **_: g),
    ("heavy_ball", lambda **_: 1.0, lambda buf, **_: buf),
])
def test_preconditioner_of_the_zoo(name, D, u):
    pre = ctopt.preconditioner(ctopt.zoo.get(name))
    assert _same(pre.D, D) and _same(pre.direction, u)
    assert pre.adaptive == (name not in ("sgd", "heavy_ball"))
    assert "D" in pre._repr_latex_() and pre.proof.steps


def test_adamssm_preconditioner_tends_to_the_frozen_r():
    pre = ctopt.preconditioner(ctopt.zoo.get("adamssm"))
    assert pre.D.has(ctopt.k) and not pre.D_limit.has(ctopt.k)
    assert _same(pre.D_limit, lambda eps, v, **_: eps + np.sqrt(v))


def test_preconditioner_agrees_with_the_oracle_step():
    """theta - lr*u/D at the new states equals one float64 oracle step of Adam."""
    d = ctopt.zoo.get("adam")
    pre = ctopt.preconditioner(d)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(3)]
    it = iter(grads)
    traj = ctopt.simulate(d, lambda x: next(it), x0, 3, lr=0.1)
    m = v = np.zeros(4)
    for gg in grads:
        m, v = 0.9 * m + 0.1 * gg, 0.999 * v + 0.001 * gg**2
    by_name = {s.name: s for s in (pre.D * pre.direction * pre.lr).free_symbols}
    syms = [by_name[n] for n in ("v", "m", "k", "lr", "beta1", "beta2", "eps")]
    step = sp.lambdify(syms, pre.lr * pre.direction / pre.D)
    np.testing.assert_allclose(traj[2] - step(v, m, 3, 0.1, 0.9, 0.999, 1e-8), traj[3],
                               rtol=1e-12, atol=1e-14)


def test_weight_decay_is_a_decay_factor_not_a_direction():
    pre = ctopt.preconditioner(ctopt.zoo.get("adamw"), weight_decay=0.01)
    assert pre.decay == 1 - pre.lr * sp.Rational(1, 100)
    coupled = ctopt.preconditioner(ctopt.zoo.get("adam"), weight_decay=0.01)
    assert coupled.decay == 1 and coupled.direction.has(sp.Symbol("m", real=True))  # L2 in m
    from ctopt.zoo._common import learning_rate

    b = ctopt.DesignBuilder("scaled", doc="theta scaled by a gradient-dependent factor")
    lr = learning_rate(b, 0.1)
    b.update(ctopt.theta * (1 - lr * ctopt.g**2) - lr * ctopt.g)
    with pytest.raises(NotPreconditionedError, match="linear in theta"):
        ctopt.preconditioner(b.build())


def test_refusals_are_named():
    with pytest.raises(NotPreconditionedError, match="lr"):
        ctopt.preconditioner(ctopt.zoo.get("dgclip"))
    with pytest.raises(NotPreconditionedError):
        ctopt.critical_sharpness(ctopt.zoo.get("dgclip"))
    with pytest.raises(CtoptError, match="unknown hyperparameter"):
        ctopt.critical_sharpness(ctopt.zoo.get("adam"), lr2=1.0)
    with pytest.raises(CtoptError, match="Design"):
        ctopt.critical_sharpness("adam")


# ----------------------------------------------------------------- independent frozen loops
def _hb(lam, lr, momentum, **_):
    a = lr * lam  # heavy ball in (theta_k, theta_{k-1}) (Lessard et al.)
    return np.array([[1 + momentum - a, -momentum], [1, 0]])


def _nesterov(lam, lr, momentum, **_):
    a = lr * lam  # Lessard et al.: A + B*lam*C with C = [1 + b, -b]
    return np.array([[(1 + momentum) * (1 - a), -momentum * (1 - a)], [1, 0]])


def _adam(lam, lr, beta1, **_):
    # (theta, m): m+ = b1 m + (1 - b1) lam theta; theta+ = theta - lr m+  (D = 1 after scaling)
    return np.array([[1 - lr * (1 - beta1) * lam, -lr * beta1], [(1 - beta1) * lam, beta1]])


def _adan(lam, lr, beta1, beta2, **_):
    # (theta, m, v, g_prev) with g = lam*theta:  m+ = b1 m + (1-b1) g;
    # v+ = b2 v + (1-b2)(g - g_prev);  g_prev+ = g;  theta+ = theta - lr (m+ + b2 v+)
    m_row = [(1 - beta1) * lam, beta1, 0, 0]
    v_row = [(1 - beta2) * lam, 0, beta2, -(1 - beta2)]
    th = [1 - lr * (m_row[0] + beta2 * v_row[0]), -lr * beta1, -lr * beta2 * beta2,
          lr * beta2 * (1 - beta2)]
    return np.array([th, m_row, v_row, [lam, 0, 0, 0]])


def _radius(a):
    return float(np.max(np.abs(np.linalg.eigvals(a))))


def _first_crossing(matrix, values, hi=1e9):
    """Brute force: scan lambda on a fine geometric grid, then bisect."""
    grid = np.geomspace(1e-6, hi, 600)
    rho = np.array([_radius(matrix(x, **values)) for x in grid])
    i = int(np.argmax(rho >= 1))
    lo, up = grid[i - 1], grid[i]
    for _ in range(60):
        mid = 0.5 * (lo + up)
        lo, up = (mid, up) if _radius(matrix(mid, **values)) < 1 else (lo, mid)
    return lo


CASES = [("heavy_ball", _hb, ("momentum",)), ("nesterov", _nesterov, ("momentum",)),
         ("adam", _adam, ("beta1",)), ("adabelief", _adam, ("beta1",)),
         ("adamssm", _adam, ("beta1",)), ("amsgrad", _adam, ("beta1",)),
         ("adan", _adan, ("beta1", "beta2"))]


@pytest.mark.parametrize("name, matrix, betas", CASES, ids=[c[0] for c in CASES])
def test_closed_form_is_the_first_crossing_of_an_independent_loop(name, matrix, betas):
    cs = ctopt.critical_sharpness(ctopt.zoo.get(name))
    assert cs.kind == ("closed form, checked" if name == "adan" else "proven")
    rng = np.random.default_rng(7)
    for _ in range(3):
        values = {"lr": float(np.exp(rng.uniform(np.log(1e-4), 0)))}
        values.update({b: float(rng.uniform(0.02, 0.98)) for b in betas})
        want = _first_crossing(matrix, values, hi=1e3 / values["lr"])
        assert cs.value(**values) == pytest.approx(want, rel=1e-7)


def test_the_literature_thresholds():
    b1, lr, mom = sp.symbols("beta1 lr momentum", real=True)
    forms = {"adam": 2 * (1 + b1) / ((1 - b1) * lr), "rmsprop": 2 / lr, "adagrad": 2 / lr,
             "sgd": 2 / lr, "heavy_ball": 2 * (1 + mom) / lr,
             "nesterov": (2 + 2 * mom) / ((1 + 2 * mom) * lr)}
    for name, form in forms.items():
        expr = ctopt.critical_sharpness(ctopt.zoo.get(name)).expr
        assert sp.simplify(expr.xreplace({s: sp.Symbol(s.name, real=True)
                                          for s in expr.free_symbols}) - form) == 0, name
    assert ctopt.critical_sharpness(ctopt.zoo.get("adam")).value(lr=0.01, beta1=0.9) == \
        pytest.approx(3800.0, rel=1e-12)


@settings(max_examples=10, deadline=None)
@given(lr=st.floats(1e-4, 1.0), beta1=st.floats(0.0, 0.99), nu=st.floats(0.01, 0.99))
def test_user_design_closed_form_matches_bisection(lr, beta1, nu):
    """QHAdam (not in the zoo): the derived closed form equals the bisection on the frozen
    loop's spectral radius at random hyperparameters."""
    cs = ctopt.critical_sharpness(qhadam())
    assert cs.kind == "proven"
    assert cs.value(lr=lr, beta1=beta1, nu=nu) == pytest.approx(
        cs.numeric_value(lr=lr, beta1=beta1, nu=nu), rel=1e-8)


def _delayed():
    """A user design: momentum on the previous step's gradient (a one-step delay, as in
    asynchronous training); its stability ends where a complex pair leaves the unit disc."""
    from ctopt.zoo._common import ema, learning_rate

    b = ctopt.DesignBuilder("delayed_momentum", doc="heavy ball on a one-step-old gradient")
    lr = learning_rate(b, 0.01)
    mu = ema(b, "mu", 0.5, "momentum factor")
    buf, gp = b.state("buf"), b.state("g_prev")
    b.assign(buf, mu * buf + gp)
    b.assign(gp, ctopt.g)
    b.update(ctopt.theta - lr * buf)
    return b.build()


def _delayed_mix():
    """A user design with float coefficients whose stability ends at a complex pair: no
    closed form is derived, the answer is numeric."""
    from ctopt.zoo._common import ema, learning_rate

    b = ctopt.DesignBuilder("delayed_mix", doc="momentum on a mix of new and old gradients")
    lr = learning_rate(b, 0.01)
    mu = ema(b, "mu", 0.5, "momentum factor")
    buf, gp = b.state("buf"), b.state("g_prev")
    b.assign(buf, mu * buf + 0.7 * gp + 0.3 * ctopt.g)
    b.assign(gp, ctopt.g)
    b.update(ctopt.theta - lr * buf)
    return b.build()


def test_complex_crossing_closed_form_agrees_with_brute_force():
    d = _delayed()
    cs = ctopt.critical_sharpness(d)
    loop = ctopt.closed_loop(d)
    values = {"lr": 0.01, "mu": 0.5}

    def matrix(lam, **v):
        return loop.numeric_A(h=lam, **v)

    want = _first_crossing(matrix, values, hi=1e5)
    assert cs.kind == "proven" and cs.value(**values) == pytest.approx(want, rel=1e-7)
    poles = np.linalg.eigvals(matrix(want * 1.0001, **values))
    assert abs(poles[np.argmax(np.abs(poles))].imag) > 1e-3  # a complex pair leaves the disc


def test_numeric_kind_is_labelled_and_agrees_with_brute_force():
    d = _delayed_mix()
    cs = ctopt.critical_sharpness(d)
    loop = ctopt.closed_loop(d)
    values = {"lr": 0.02, "mu": 0.3}

    def matrix(lam, **v):
        return loop.numeric_A(h=lam, **v)

    want = _first_crossing(matrix, values, hi=1e5)
    assert cs.value(**values) == pytest.approx(want, rel=1e-7)
    assert cs.kind == "numeric"
    assert cs.expr is None and cs.proof.numeric and "numeric" in str(cs)


def test_misspelt_keywords_are_refused():
    adam = ctopt.zoo.get("adam")
    for call in (lambda: ctopt.preconditioner(adam, betaa=0.1),
                 lambda: ctopt.critical_sharpness(adam, betaa=0.1),
                 lambda: ctopt.critical_sharpness(adam).value(betaa=0.1)):
        with pytest.raises(CtoptError, match="betaa"):
            call()


def test_report_section_shows_the_critical_sharpness():
    from ctopt.report.sections import analyze

    (sec,) = analyze(ctopt.zoo.get("adam"), {"lr": 0.01}, include=["sharpness"])
    text = sec.as_markdown()
    assert "Critical sharpness" in text and "< 3800" in text and "proven" in text
    (refused,) = analyze(ctopt.zoo.get("dgclip"), include=["sharpness"])
    assert "no critical sharpness" in refused.as_text()


@settings(max_examples=8, deadline=None)
@given(c0=st.fractions(0, 2, max_denominator=8), c1=st.fractions(0, 2, max_denominator=8),
       beta=st.floats(0.05, 0.95), lr=st.floats(1e-3, 1.0))
def test_random_preconditioned_momentum_designs(c0, c1, beta, lr):
    """Random designs theta -= lr*(c0*g + c1*m)/(sqrt(v) + eps): the derived threshold is the
    first crossing of a hand-written frozen loop, and D is read off the update line."""
    from hypothesis import assume

    from ctopt.zoo._common import ema, epsilon, learning_rate

    assume(c0 + c1 > 0)
    b = ctopt.DesignBuilder("random_mix", doc="a random gradient/momentum mix")
    lr_s = learning_rate(b, 0.01)
    beta_s = ema(b, "beta", 0.9, "momentum EMA")
    beta2 = ema(b, "beta2", 0.99, "second-moment EMA")
    eps = epsilon(b, 1e-8)
    m, v = b.state("m"), b.state("v")
    b.assign(m, beta_s * m + (1 - beta_s) * ctopt.g)
    b.assign(v, beta2 * v + (1 - beta2) * ctopt.g**2)
    b.update(ctopt.theta - lr_s * (sp.Rational(c0) * ctopt.g + sp.Rational(c1) * m)
             / (sp.sqrt(v) + eps))
    d = b.build()
    pre = ctopt.preconditioner(d)
    assert _same(pre.D, lambda eps, v, **_: eps + np.sqrt(v))
    cs = ctopt.critical_sharpness(d)
    assert cs.kind in ("proven", "closed form, checked", "numeric")
    a0, a1 = float(c0), float(c1)

    def matrix(lam, lr, beta):  # (theta, m), g = lam*theta, D = 1 after scaling
        m_row = [(1 - beta) * lam, beta]
        return np.array([[1 - lr * (a0 * lam + a1 * m_row[0]), -lr * a1 * beta], m_row])

    want = _first_crossing(matrix, {"lr": lr, "beta": beta}, hi=1e4 / lr)
    assert cs.value(lr=lr, beta=beta) == pytest.approx(want, rel=1e-6)
