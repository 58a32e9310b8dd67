"""Closed loops: a design in feedback with the quadratic loss ``f(theta) = h*theta**2/2``.

Per coordinate the gradient is ``g = h*theta`` (the parameter before the step), so the box becomes
an autonomous map of ``x = (theta, states...)``. Its linear part, in the design's own
current-input convention ``x_k = A x_{k-1}``, is what stability and rate analyses consume.

Two treatments of an adaptive preconditioner:

``"frozen"``
    Every non-polynomial factor of the box that depends on the dynamics (a denominator such as
    ``sqrt(v_hat) + eps``, a clipping factor, ``|g|`` in ``sign(g) = g/|g|``) is replaced by a
    positive constant symbol ``r`` (``r1, r2, ...`` when there are several; ``ClosedLoop.frozen``
    says what each stands for, written with the states' latest values). Bias corrections take
    their ``k -> oo`` limit. States that then no longer reach ``theta`` (Adam's ``v``) drop out,
    leaving e.g. Adam as heavy ball with effective step ``lr*h/r``.
``"linearized"``
    The full map (every state, including ``v``) is differentiated at the point ``at`` (a mapping
    from ``"theta"`` and state names to values; a missing name becomes the symbol
    ``<name>_star``; ``at["k"]`` evaluates the time-varying factors at that step instead of their
    limits). Around ``(theta, m) = 0`` with ``v = v_star > 0`` Adam's Jacobian is block triangular:
    the frozen loop with ``r = sqrt(beta2*v_star) + eps`` (the latest ``v``) and the pole
    ``beta2`` of ``v``. Group reductions are taken over a one-coordinate group (``||g|| = |g|``).

For a closed loop the input is an additive gradient perturbation ``w`` (``g = h*theta + w``) and the
output is ``theta``: ``x_k = A x_{k-1} + B w_k``, ``theta_k = C x_k``.

Example:
    >>> import ctopt
    >>> loop = ctopt.closed_loop(ctopt.zoo.get("sgd"), weight_decay=0)
    >>> loop.charpoly()
    h*lr + z - 1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .. import ops
from ..design import Design, g, k, theta
from ..errors import DesignError, UnsupportedError
from ..filters import z
from ..limits import check_size, timed
from ._box import Box, TimeVarying, _fix, _numeric_values, asymptotic, build_box
from .transfer import TransferFunction

__all__ = ["ClosedLoop", "closed_loop"]

PRECONDITIONERS = ("frozen", "linearized")


@dataclass(frozen=True)
class ClosedLoop:
    """The linear part of a design in feedback with ``h*theta**2/2``: ``x_k = A x_{k-1} + B w_k``
    with ``x = (theta, states...)`` and a gradient perturbation ``w``; output ``theta = C x``.

    Example:
        >>> import ctopt
        >>> loop = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
        >>> loop.state_names, loop.parameters
        (['theta', 'buf'], [h, lr, momentum])
    """

    A: sp.Matrix
    B: sp.Matrix
    state_names: list[str]
    design: Design | None = field(default=None, repr=False, compare=False)
    curvature: sp.Symbol = sp.Symbol("h", real=True)
    preconditioner: str = "frozen"
    frozen: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    at: dict[str, sp.Expr] = field(default_factory=dict)
    time_varying: tuple[TimeVarying, ...] = ()

    @property
    def C(self) -> sp.Matrix:
        """The output row selecting ``theta``."""
        return sp.Matrix([[1] + [0] * (len(self.state_names) - 1)])

    @property
    def parameters(self) -> list[sp.Symbol]:
        """Free symbols of ``A`` and ``B``, sorted by name."""
        syms = self.A.free_symbols | self.B.free_symbols
        return sorted(syms, key=lambda s: s.name)

    def charpoly(self) -> sp.Expr:
        """``det(zI - A)``, monic in ``z``.

        Example:
            >>> import ctopt
            >>> loop = ctopt.closed_loop(ctopt.zoo.get("nesterov"), dampening=0, weight_decay=0)
            >>> sp.factor(loop.charpoly().coeff(z, 0))
            -momentum*(h*lr - 1)
        """
        check_size("characteristic polynomial", degree=self.A.shape[0])
        poly = sp.Poly(self.A.charpoly(z).as_expr(), z)
        return sum((sp.factor_terms(sp.expand(c)) * z**i
                    for i, c in enumerate(reversed(poly.all_coeffs()))), sp.Integer(0))

    def transfer_function(self) -> TransferFunction:
        """The closed-loop transfer function from the gradient perturbation ``w`` to ``theta``."""
        n = self.A.shape[0]
        x = (z * sp.eye(n) - self.A).LUsolve(self.B)
        return TransferFunction.from_expr(z * x[0], input=sp.Symbol("w", real=True),
                                          output="theta", design=self.design)

    def _values(self, values: Mapping[str, float]) -> dict[sp.Symbol, float]:
        syms = self.A.free_symbols | self.B.free_symbols
        return _numeric_values(syms, self.design, values)

    def numeric_A(self, **values: float) -> np.ndarray:
        """``A`` as a float array (the design's defaults for hyperparameters not given)."""
        return np.array(self.A.xreplace(self._values(values)), dtype=float)

    def eigenvalues(self, **values: float) -> np.ndarray:
        """Closed-loop poles for numeric ``values``.

        Example:
            >>> import ctopt
            >>> loop = ctopt.closed_loop(ctopt.zoo.get("sgd"), weight_decay=0)
            >>> loop.eigenvalues(h=1.0, lr=0.5).real.tolist()
            [0.5]
        """
        return np.linalg.eigvals(self.numeric_A(**values))

    def spectral_radius(self, **values: float) -> float:
        """``max |eig(A)|``: the asymptotic contraction factor per step (stable iff < 1)."""
        return float(np.max(np.abs(self.eigenvalues(**values))))

    def lambdify(self, *names: str):
        """A fast numeric ``A(*args)`` of the named parameters (others at their defaults or given
        later as keyword ``values``): returns ``f(*arrays, **values) -> array (..., n, n)``.

        Example:
            >>> import ctopt
            >>> f = ctopt.closed_loop(ctopt.zoo.get("sgd"), weight_decay=0).lambdify("h")
            >>> f(np.array([1.0, 2.0]), lr=0.5)[:, 0, 0].tolist()
            [0.5, 0.0]
        """
        table = {s.name: s for s in self.A.free_symbols}
        args = [table.get(n, sp.Symbol(n, real=True)) for n in names]
        others = sorted(self.A.free_symbols - set(args), key=lambda s: s.name)
        fn = sp.lambdify(args + others, self.A.tolist(), "numpy")
        n = self.A.shape[0]

        def evaluate(*arrays, **values: float) -> np.ndarray:
            given = _numeric_values(set(others), self.design, values)
            arrays = [np.asarray(a, dtype=float) for a in arrays]
            shape = np.broadcast(*arrays).shape if arrays else ()
            entries = fn(*arrays, *(given[s] for s in others))
            out = np.empty(shape + (n, n))
            for i in range(n):
                for j in range(n):
                    out[..., i, j] = np.broadcast_to(entries[i][j], shape)
            return out

        return evaluate

    def to_control(self, **values: float):
        """A ``control.StateSpace`` with ``dt=1`` in python-control's form
        ``xi_{k+1} = A xi_k + B w_k``, ``theta_k = C A xi_k + C B w_k`` (``xi_k = x_{k-1}``)."""
        import control

        subs = self._values(values)
        a = np.array(self.A.xreplace(subs), dtype=float)
        b = np.array(self.B.xreplace(subs), dtype=float)
        c = np.array(self.C, dtype=float)
        return control.ss(a, b, c @ a, c @ b, dt=1)

    def subs(self, **values: float | sp.Expr) -> ClosedLoop:
        """Substitute parameters by name.

        Example:
            >>> import ctopt
            >>> ctopt.closed_loop(ctopt.zoo.get("sgd"), weight_decay=0).subs(lr=0.5).A
            Matrix([[1 - 0.5*h]])
        """
        table = {s.name: s for s in self.A.free_symbols | self.B.free_symbols}
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise DesignError(f"{unknown} are not parameters of this loop: {sorted(table)}")
        subs = {table[n]: v for n, v in values.items()}
        return ClosedLoop(
            self.A.subs(subs), self.B.subs(subs), list(self.state_names), self.design,
            self.curvature, self.preconditioner, dict(self.frozen), dict(self.at),
            self.time_varying,
        )

    def __str__(self) -> str:
        lines = [f"closed loop of {self.design.name if self.design else 'a design'} with "
                 f"f = {self.curvature}*theta**2/2 ({self.preconditioner} preconditioner)",
                 f"  x = {self.state_names}", f"  A = {self.A.tolist()}"]
        lines += [f"  {s} := {e}" for s, e in self.frozen.items()]
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        x = sp.Matrix([sp.Symbol(n) for n in self.state_names])
        rows = [rf"{sp.latex(x)}_k = {sp.latex(self.A)} {sp.latex(x)}_{{k-1}}"]
        rows += [rf"{sp.latex(s)} := {sp.latex(e)}" for s, e in self.frozen.items()]
        rows.append(rf"\det(zI - A) = {sp.latex(self.charpoly())}")
        return r"$\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}$"


# ------------------------------------------------------------------------------- construction
def _freeze(exprs: dict[str, sp.Expr], box: Box) -> tuple[dict[str, sp.Expr], dict]:
    """Replace every non-polynomial dynamic factor by a constant symbol (see module doc)."""
    design = box.design
    dynamic = ({g, theta} | set(box.old.values()) | set(box.new.values())
               | {r.symbol for r in design.reductions})
    atoms: dict[sp.Expr, sp.Dummy] = {}

    def atom(e: sp.Expr) -> sp.Expr:
        if e not in atoms:
            atoms[e] = sp.Dummy(f"r{len(atoms) + 1}", positive=True)
        return atoms[e]

    def walk(e: sp.Expr) -> sp.Expr:
        if e.is_Atom or not (e.free_symbols & dynamic):
            return e
        if e.is_Add or e.is_Mul:
            return e.func(*[walk(a) for a in e.args])
        if e.is_Pow and e.exp.is_Integer:
            return walk(e.base) ** e.exp if e.exp > 0 else atom(e.base) ** e.exp
        if isinstance(e, sp.sign):
            return walk(e.args[0]) / atom(sp.Abs(e.args[0]))
        return atom(e)

    out = {n: walk(e) for n, e in exprs.items()}
    latest = {v: sp.Symbol(n, real=True) for n, v in box.new.items()}
    return out, {d: e.xreplace(latest) for e, d in atoms.items()}


def _name_frozen(atoms: dict, used: set, design: Design) -> dict:
    """Public names ``r`` (or ``r1, r2, ...``) for the frozen factors still in the loop."""
    kept = [d for d in atoms if d in used]
    taken = set(design.symbols) | {"h", "z", "w"}
    names = ["r"] if len(kept) == 1 else [f"r{i}" for i in range(1, len(kept) + 1)]
    names = [n + "_" if n in taken else n for n in names]
    return {d: sp.Symbol(n, positive=True) for d, n in zip(kept, names, strict=True)}


def _closure(flat: dict[str, sp.Expr], names: list[str]) -> list[str]:
    sym = {n: theta if n == "theta" else sp.Symbol(n, real=True) for n in names}
    keep, todo = set(), ["theta"]
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo.extend(m for m in names if flat[n].has(sym[m]))
    return [n for n in names if n in keep]


@timed("closed loop")
def closed_loop(design: Design, curvature: str = "h", preconditioner: str = "frozen",
                at: Mapping[str, float | sp.Expr] | None = None, **fixed: float) -> ClosedLoop:
    """The design in feedback with ``f(theta) = h*theta**2/2`` per coordinate (see the module
    doc for the frozen and linearised preconditioners). ``fixed`` substitutes hyperparameter
    values first (e.g. ``weight_decay=0``).

    Example:
        >>> import ctopt
        >>> loop = ctopt.closed_loop(ctopt.zoo.get("adam"), weight_decay=0)
        >>> loop.state_names, loop.frozen
        (['theta', 'm'], {r: eps + sqrt(v)})
    """
    check_size("closed loop", states=len(design.states) + 1)
    if preconditioner not in PRECONDITIONERS:
        raise DesignError(
            f"preconditioner must be one of {PRECONDITIONERS}, not {preconditioner!r}"
        )
    if fixed:
        design = _fix(design, fixed)
    clash = {curvature} & (set(design.hyperparameters) | set(design.state_names)
                           | {r.name for r in design.reductions} | {"z", "w"})
    if clash:
        raise DesignError(f"the curvature name {curvature!r} is already used in {design.name!r}")
    h = sp.Symbol(curvature, real=True)
    w = sp.Dummy("w", real=True)
    at = dict(at or {})
    unknown = sorted(set(at) - set(design.state_names) - {"theta", "k"})
    if unknown:
        raise DesignError(
            f"at= names {unknown} are not states of {design.name!r} (nor 'theta' or 'k')"
        )
    box = build_box(design)
    records: list[TimeVarying] = []
    exprs = {}
    for n in box.order:
        e = box.exprs[n]
        exprs[n] = e.xreplace({k: at["k"]}) if "k" in at else asymptotic(e, design, n, records)
    frozen: dict = {}
    if preconditioner == "frozen":
        if at:
            raise DesignError("at= applies to preconditioner='linearized' only")
        exprs, atoms = _freeze(exprs, box)
    flat = box.flatten(exprs)
    grad = h * theta + w
    norms = {r.symbol: ops.REDUCTIONS[r.kind].symbolic(r.of.xreplace({g: grad}))
             for r in design.reductions}
    flat = {n: e.xreplace(norms).xreplace({g: grad}) for n, e in flat.items()}
    names = ["theta", *design.state_names]
    if preconditioner == "frozen":
        names = _closure(flat, names)
        used = set().union(*(flat[n].free_symbols for n in names))
        rename = _name_frozen(atoms, used, design)
        frozen = {rename[d]: atoms[d] for d in rename}
        flat = {n: flat[n].xreplace(rename) for n in names}
    syms = [theta if n == "theta" else sp.Symbol(n, real=True) for n in names]
    point = {}
    if preconditioner == "linearized":
        for n, s in zip(names, syms, strict=True):
            point[s] = sp.sympify(at[n]) if n in at else sp.Symbol(f"{n}_star", real=True)
    point[w] = sp.S.Zero
    rows_a, rows_b = [], []
    for n in names:
        f = flat[n]
        row = [sp.diff(f, s) for s in syms]
        b = sp.diff(f, w)
        if preconditioner == "frozen":
            for d in [*row, b]:
                if d.free_symbols & (set(syms) | {w}):
                    raise UnsupportedError(
                        f"the frozen closed loop of {design.name!r} is not linear in {n!r}: {f}; "
                        "try preconditioner='linearized'"
                    )
        rows_a.append([_tidy(d.xreplace(point)) for d in row])
        rows_b.append(_tidy(b.xreplace(point)))
    return ClosedLoop(sp.Matrix(rows_a), sp.Matrix(rows_b), names, design, h, preconditioner,
                      frozen, {n: sp.sympify(v) for n, v in at.items()}, tuple(records))


def _tidy(e: sp.Expr) -> sp.Expr:
    """Cheap normal forms: expanded when rational, left alone otherwise (simplify is too slow
    for linearised entries)."""
    if e.has(sp.Piecewise, sp.Abs, sp.Max, sp.Min, sp.sign, sp.Heaviside):
        return e
    return sp.expand(e) if e.is_rational_function() else e
