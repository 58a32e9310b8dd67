"""Check a user's Lyapunov candidate ``V`` along a design's own (possibly nonlinear) dynamics.

Problem class ``"quadratic"``: every coordinate sees ``f(theta) = h*theta**2/2`` with curvature
``h in [m, L]``, so ``g = h*theta``; the design's full box runs, adaptive second moment
included. :func:`check_lyapunov` computes the one-step change ``dV = V(x_next) - V(x)``:

1. **symbolically**, on the steady-state map (the ``k -> oo`` limit of every line): if ``dV`` is
   a quadratic form in the state, ``-dV >= 0`` is proven from the principal minors of its
   matrix under the stated ``conditions`` (sign factors matched as in :mod:`.lyapunov`);
2. otherwise, or in addition, **numerically**: a search for ``dV > 0`` with the float64 oracle
   (the real map, bias corrections and all) over random states in a box, over states reached
   from random starts, then a local maximisation from the worst points. The worst point found
   is reported as a counterexample, labelled numeric.

Example:
    >>> import sympy as sp, ctopt
    >>> theta = sp.Symbol("theta", real=True)
    >>> r = check_lyapunov(ctopt.zoo.get("sgd"), theta**2, m=1, L=10, lr=0.05)
    >>> r.proven, r.counterexample is None
    (False, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .. import ops
from ..design import Design, g, theta
from ..errors import ExpressionError, OptionError
from ..limits import timed
from ._box import asymptotic
from .certificates import _positive_by_factors
from .proof import Proof
from .stability import _split_abs, positive_form

__all__ = ["LyapunovCheck", "check_lyapunov", "one_step_change"]

H = sp.Symbol("h", positive=True)
K_VALUES = (2, 3, 10, 100, 10**6)


@dataclass
class LyapunovCheck:
    """Result of :func:`check_lyapunov`. ``proven``: ``dV <= 0`` shown symbolically (steady
    state) under ``conditions``; ``counterexample``: the worst point found with ``dV > 0`` (a
    dict of values, or None); ``worst_increase``: the largest ``dV`` found numerically."""

    delta: sp.Expr
    proven: bool
    counterexample: dict | None
    worst_increase: float
    proof: Proof
    reachable_counterexample: dict | None = None
    reachable_increase: float = float("-inf")

    def __str__(self) -> str:
        if self.proven:
            head = "dV <= 0 proven symbolically (steady state)"
        elif self.counterexample:
            where = "reachable from zero states" if self.reachable_counterexample else "box"
            head = (f"counterexample (numeric, {where}): dV = {self.worst_increase:.3g} > 0 at "
                    f"{self.counterexample}")
        else:
            head = ("no counterexample found (numeric search; largest dV = "
                    f"{self.worst_increase:.3g})")
        return f"Lyapunov candidate check: {head}"

    def _repr_latex_(self) -> str:
        return r"$\Delta V = " + sp.latex(self.delta) + r"$ \quad " + str(self).replace("_", r"\_")


def one_step_change(design: Design, V: sp.Expr) -> sp.Expr:
    """``V(x_next) - V(x)`` on ``f = h*theta**2/2`` for the steady-state box: every line at its
    ``k -> oo`` limit (the one asymptotic pass of :func:`ctopt.analysis._box.asymptotic`: the
    eventual branch of a ``Piecewise`` on ``k``, ``beta**k -> 0`` where ``|beta| < 1`` is known
    from its domain), in the design's symbols and ``h``.

    Example:
        >>> import ctopt
        >>> wd = sp.Symbol("weight_decay", real=True)
        >>> one_step_change(ctopt.zoo.get("sgd"), theta**2).subs(wd, 0).factor()
        h*lr*theta**2*(h*lr - 2)
    """
    env: dict[sp.Symbol, sp.Expr] = {s.symbol: s.symbol for s in design.states}
    env[g] = H * theta
    env[theta] = theta
    for r in design.reductions:
        env[r.symbol] = ops.REDUCTIONS[r.kind].symbolic(r.of.xreplace(env))
    new_theta = theta
    records: list = []
    for a in design.assignments:
        value = asymptotic(a.expr, design, a.target.name, records).xreplace(env)
        if a.kind == "update":
            new_theta = value
        else:
            env[a.target] = value
    after = {s.symbol: env[s.symbol] for s in design.states} | {theta: new_theta}
    return V.xreplace(after) - V


@timed("Lyapunov-candidate check")
def check_lyapunov(design: Design, V: sp.Expr, problem: str = "quadratic", *, m: float = 1.0,
                   L: float = 10.0, conditions: Iterable[sp.Basic] = (), ranges=None,
                   samples: int = 20000, seed: int = 0, **values: float) -> LyapunovCheck:
    """Try to prove ``V(x_next) <= V(x)`` along ``design`` on the stated problem class, and
    search numerically for a counterexample at hyperparameter ``values`` (defaults elsewhere).

    ``conditions``: relations assumed in the symbolic proof (e.g. the Jury region).
    ``ranges``: state-name -> ``(lo, hi)`` for the box search (default ``(-1, 1)``, and
    ``(0, 1)`` for second moments and accumulators).

    Example:
        >>> import sympy as sp, ctopt
        >>> theta, buf = sp.symbols("theta buf", real=True)
        >>> r = ctopt.check_lyapunov(ctopt.zoo.get("heavy_ball"), theta**2 + buf**2,
        ...                          samples=200, lr=0.01, momentum=0.5)
        >>> r.proven, r.counterexample is not None  # a naive V fails, and ctopt says where
        (False, True)
    """
    if problem != "quadratic":
        raise OptionError(f"unknown problem class {problem!r}; available: 'quadratic'")
    from .convergence import check_curvatures

    check_curvatures(m, L)
    V = sp.sympify(V)
    names = {s.name for s in design.states} | {"theta", "h"} | set(design.hyperparameters)
    unknown = sorted(s.name for s in V.free_symbols if s.name not in names)
    if unknown:
        raise ExpressionError(f"V uses {unknown}: only theta, h, states {list(design.state_names)} and "
                         "hyperparameters are known")
    V = V.xreplace({s: H for s in V.free_symbols if s.name == "h"})
    proof = Proof(f"V = {V} does not increase along {design.name!r} on "
                  f"f = h*theta**2/2, h in [{m:g}, {L:g}]")
    conditions = list(conditions)
    symbolic = {s.name for s in V.free_symbols} | {s.name for c in conditions
                                                   for s in c.free_symbols}
    hyper = design.check_values(**values)
    fixed = {hp.symbol: sp.nsimplify(hyper[hp.name]) for hp in design.hyper
             if hp.name not in symbolic}
    if fixed:
        proof.step("hyperparameters absent from V and the conditions take their values",
                   *[sp.Eq(k_, v) for k_, v in fixed.items()])
    delta = one_step_change(design, V).xreplace(fixed)
    proven = _symbolic(delta, design, conditions, proof)
    found = _search(design, V, m, L, ranges or {}, samples, seed, values, proof)
    (box_worst, box_point), (reach_worst, reach_point) = found["box"], found["reachable"]
    # a counterexample reached from zero states says more than one from the box: prefer it
    worst, counter = (reach_worst, reach_point) if reach_point else (box_worst, box_point)
    if proven and counter:
        proof.step("the numeric counterexample lies outside the steady state or the stated "
                   "conditions (the symbolic proof covers the k -> oo limit of the map)", numeric=True)
    return LyapunovCheck(delta, proven, counter, worst, proof, reach_point, reach_worst)


def _symbolic(delta, design, conditions, proof) -> bool:
    proof.step("one-step change on the steady-state map", sp.Eq(sp.Symbol("dV"), delta))
    states = [theta] + [s.symbol for s in design.states]
    if _nonrational(delta):
        proof.step("dV involves roots, absolute values or branches of the state (adaptive or "
                   "nonlinear dynamics): no symbolic proof attempted")
        return False
    d = sp.cancel(sp.expand(delta))
    if d == 0:
        proof.step("dV = 0 identically")
        return True
    if not d.is_polynomial(*states) or sp.Poly(d, *states).total_degree() != 2 or any(
            sum(mon) != 2 for mon in sp.Poly(d, *states).monoms()):
        proof.step("dV is not a quadratic form in the state: no symbolic proof attempted "
                   "(adaptive or nonlinear dynamics)")
        return False
    used = [s for s in states if d.has(s)]
    M = sp.hessian(-d, used) / 2
    known = []
    for c in conditions:
        for atom in sp.And.make_args(c):
            form, _ = positive_form(atom)
            known += [sp.expand(p) for p in _split_abs(form)]
    proof.step("-dV = x^T M x with", M)
    from itertools import combinations

    for size in range(1, len(used) + 1):
        for idx in combinations(range(len(used)), size):
            minor = sp.factor(M.extract(list(idx), list(idx)).det())
            if minor == 0:
                proof.step(f"principal minor {idx} = 0")
                continue
            reason = _positive_by_factors(minor, known)
            if reason is None:
                proof.step(f"principal minor {idx}: sign not decided", minor)
                return False
            proof.step(f"principal minor {idx} > 0: {reason}", minor)
    proof.step("every principal minor of M is >= 0: M is positive semidefinite, dV <= 0")
    return True


def _nonrational(expr: sp.Expr) -> bool:
    if expr.atoms(*ops.allowed_functions()):
        return True
    return any(not p.exp.is_integer for p in expr.atoms(sp.Pow))


def _search(design, V, m, L, ranges, samples, seed, values, proof):
    from ..oracle import init_state, step
    from .validity import filter_validity

    rng = np.random.default_rng(seed)
    hyper = design.check_values(**values)
    nonneg = {c.name for c in filter_validity(design).filters
              if c.kind in ("moment", "accumulator") and sp.sympify(c.input).is_nonnegative}
    box = {s: ranges.get(s, (0.0, 1.0) if s in nonneg else (-1.0, 1.0)) for s in design.state_names}
    box = {"theta": ranges.get("theta", (-1.0, 1.0))} | box
    params = sorted(V.free_symbols, key=lambda s: s.name)
    fn = sp.lambdify(params, V, modules="numpy")

    def v_of(x, st, h):
        env = {"theta": x, "h": h} | st | hyper
        return np.broadcast_to(fn(*[env[p.name] for p in params]), x.shape)

    found = {"box": (-np.inf, None), "reachable": (-np.inf, None)}
    batches = []
    n = samples // len(K_VALUES)
    for kk in K_VALUES:  # random states in the box
        x = rng.uniform(*box["theta"], n)
        st = {s: rng.uniform(*box[s], n) for s in design.state_names}
        batches.append(("box", x, st, rng.uniform(m, L, n), kk))
    n_traj, horizon = max(1, samples // 200), 200  # states reached from zero-state starts
    h = rng.uniform(m, L, n_traj)
    x, st = rng.uniform(-1, 1, n_traj), init_state(design, n_traj, **hyper)
    for kk in range(1, horizon + 1):
        batches.append(("reachable", x, st, h, kk))
        x, st = step(design, x, h * x, st, kk, **hyper)
    for source, x, st, h, kk in batches:
        x1, st1 = step(design, x, h * x, st, kk, **hyper)
        dv = v_of(x1, st1, h) - v_of(x, st, h)
        dv = np.where(np.isfinite(dv), dv, -np.inf)
        i = int(np.argmax(dv))
        if dv[i] > found[source][0]:
            found[source] = (float(dv[i]), {
                "theta": float(x[i]), "h": float(h[i]), "k": int(kk),
                **{s: float(st[s][i]) for s in design.state_names},
                "V": float(v_of(x, st, h)[i])})
    proof.step(f"searched {samples} random states in the box {box}: largest dV = "
               f"{found['box'][0]:.3g}", numeric=True)
    proof.step(f"searched {n_traj} trajectories x {horizon} steps from zero states (reachable "
               f"states): largest dV = {found['reachable'][0]:.3g}", numeric=True)
    out = {}
    for source, (worst, point) in found.items():
        if point is not None and worst > 1e-12 * max(1.0, abs(point["V"])):
            proof.step(f"worst {source} point (a counterexample to dV <= 0)",
                       *[sp.Eq(sp.Symbol(k_), sp.Float(v, 6)) for k_, v in point.items()],
                       numeric=True)
            out[source] = (worst, point)
        else:
            out[source] = (worst, None)
    return out


def known_lyapunov_function(design: Design, **values) -> tuple[sp.Expr, list[sp.Basic]]:
    """``V = x^T P x`` from :func:`ctopt.lyapunov` of the design's closed loop (``Q = I``), with
    the Jury conditions under which it is a Lyapunov function. For heavy ball this is the
    classical quadratic certificate.

    Example:
        >>> import ctopt
        >>> V, conds = known_lyapunov_function(ctopt.zoo.get("heavy_ball"))
        >>> sorted(s.name for s in V.free_symbols)
        ['buf', 'h', 'lr', 'momentum', 'theta']
    """
    from .certificates import lyapunov
    from .loops import closed_loop

    fixed: Mapping = {"dampening": 0, "weight_decay": 0} | values
    loop = closed_loop(design, **{k_: v for k_, v in fixed.items() if k_ in
                                   design.hyperparameters})
    cert = lyapunov(loop)
    x = sp.Matrix([sp.Symbol(n, real=True) for n in loop.state_names])
    V = sp.expand((x.T * cert.P * x)[0, 0])
    V = V.xreplace({s: H for s in V.free_symbols if s.name == "h"})
    conds = [c.xreplace({s: H for s in c.free_symbols if s.name == "h"})
             for c in cert.stability.atoms]
    return V, conds
