"""The preconditioner view of a design: ``theta+ = theta - lr * D**-1 * u``.

An adaptive method is preconditioned gradient descent: a diagonal ``D`` (per coordinate) built
from past gradients divides a search direction ``u``. This is mirror descent with the weighted
Euclidean distance ``||x||_D**2 / 2`` (Duchi, Hazan & Singer 2011; Levy & Duchi 2019): for AdaGrad
``D = sqrt(s) + eps`` and ``u = g``; for Adam ``D = sqrt(v_hat) + eps`` and ``u = m_hat``.

:func:`preconditioner` reads ``D`` and ``u`` from the design's realised update line (the
assignments the code generator prints): ``D`` is the product of the denominators that depend on
the dynamics (states, ``g``), written with the states' latest values, ``u = (theta - theta+)*D/lr``.
Non-adaptive methods have ``D = 1``. A hyperparameter whose default is 0 switches a feature off
(weight decay, dampening, clipping) and is taken at 0 unless given. A design whose update is not
of this form (a step that is not ``lr`` times a direction, or one that scales ``theta``) is refused
with :class:`~ctopt.errors.NotPreconditionedError`.

Example:
    >>> import ctopt
    >>> pre = ctopt.preconditioner(ctopt.zoo.get("adagrad"))
    >>> pre.D, pre.direction
    (eps + sqrt(s), g)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..design import Design, g, k, theta
from ..errors import NotPreconditionedError
from ._box import _fix, build_box
from .proof import Proof

__all__ = ["Preconditioner", "preconditioner", "switched_off"]


@dataclass(frozen=True)
class Preconditioner:
    """``theta+ = theta - lr * direction / D`` per coordinate, with its proof.

    ``D`` and ``direction`` use the states' latest values (as the design's own lines do; a state's
    value before the step, where it appears, is named ``<state>_prev``) and the step ``k``.
    ``fixed`` lists the hyperparameters substituted first.

    Example:
        >>> import ctopt
        >>> pre = ctopt.preconditioner(ctopt.zoo.get("adam"))
        >>> pre.D
        eps + sqrt(v/(1 - beta2**k))
        >>> pre.adaptive
        True
    """

    design: Design
    D: sp.Expr
    direction: sp.Expr
    lr: sp.Symbol
    proof: Proof
    fixed: dict[str, float] = field(default_factory=dict)
    decay: sp.Expr = sp.Integer(1)

    @property
    def D_limit(self) -> sp.Expr:
        """``D`` as ``k -> oo`` (bias corrections at their limits): the frozen loop's ``r``.

        Example:
            >>> import ctopt
            >>> ctopt.preconditioner(ctopt.zoo.get("adam")).D_limit
            eps + sqrt(v)
        """
        return _limit(self.D, self.design)

    @property
    def adaptive(self) -> bool:
        """Whether ``D`` depends on the dynamics (``D = 1`` for non-adaptive methods)."""
        return self.D != 1

    @property
    def update(self) -> sp.Expr:
        """``theta - lr*direction/D``: the realised update line, rewritten."""
        return self.decay * theta - self.lr * self.direction / self.D

    def __str__(self) -> str:
        lines = [f"preconditioner of {self.design.name}: theta+ = theta - {self.lr}*u/D",
                 f"  D = {self.D}", f"  u = {self.direction}"]
        if self.fixed:
            lines.append("  with " + ", ".join(f"{n} = {v:g}" for n, v in self.fixed.items()))
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        rows = [rf"\theta^+ = \theta - {sp.latex(self.lr)}\, D^{{-1}} u",
                rf"D = {sp.latex(self.D)}", rf"u = {sp.latex(self.direction)}"]
        return r"$\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}$"


def switched_off(design: Design, fixed: Mapping[str, float]) -> dict[str, float]:
    """``fixed`` plus every hyperparameter whose default is 0 (a feature switched off), at 0.

    Example:
        >>> import ctopt
        >>> switched_off(ctopt.zoo.get("adam"), {})
        {'weight_decay': 0.0}
    """
    out = {h.name: 0.0 for h in design.hyper if h.default == 0 and h.name not in fixed}
    out.update(fixed)
    return out


def _lr_symbol(design: Design) -> sp.Symbol:
    lrs = [h.symbol for h in design.hyper if h.role == "lr"]
    if len(lrs) != 1:
        raise NotPreconditionedError(
            f"design {design.name!r} needs exactly one hyperparameter with role 'lr' "
            f"to be written as theta - lr*u/D (it has {len(lrs)})"
        )
    return lrs[0]


def _split(step: sp.Expr, dynamic: set) -> tuple[sp.Expr, sp.Expr]:
    """``step = u / D`` with ``D`` the product of the dynamic denominators (of every term)."""
    den: list[sp.Expr] = []
    for term in sp.Add.make_args(step):
        for f in sp.Mul.make_args(term):
            if (f.is_Pow and f.exp.is_negative and f.base.free_symbols & dynamic
                    and f.base ** -f.exp not in den):
                den.append(f.base ** -f.exp)
    D = sp.Mul(*den)
    return D, sp.Add(*(t * D for t in sp.Add.make_args(step)))


def _signs(expr: sp.Expr, dynamic: set) -> sp.Expr:
    """``sign(x) = x/|x|`` for dynamic ``x``: signGD is preconditioned by ``D = |g|``."""
    return expr.replace(lambda e: isinstance(e, sp.sign) and e.free_symbols & dynamic,
                        lambda e: e.args[0] / sp.Abs(e.args[0]))


def _limit(expr: sp.Expr, design: Design) -> sp.Expr:
    from ._box import asymptotic

    return asymptotic(expr, design, "D", [])


def preconditioner(design: Design, **fixed: float) -> Preconditioner:
    """The update of ``design`` as ``theta+ = theta - lr * D**-1 * u`` (see the module doc).

    Example:
        >>> import ctopt
        >>> pre = ctopt.preconditioner(ctopt.zoo.get("heavy_ball"))
        >>> pre.D, pre.direction
        (1, buf)
    """
    design.check_values(**fixed)  # unknown names and out-of-domain values are refused
    fixed = switched_off(design, fixed)
    fixed_design = _fix(design, fixed) if fixed else design
    lr = _lr_symbol(fixed_design)
    box = build_box(fixed_design)
    latest = {p: sp.Symbol(n, real=True) for n, p in box.new.items()}
    previous = {s.symbol: sp.Symbol(f"{s.name}_prev", real=True) for s in fixed_design.states}
    dynamic = ({g} | set(box.old.values()) | set(box.new.values())
               | {r.symbol for r in fixed_design.reductions})
    proof = Proof(f"the update of {design.name} as theta - lr*u/D")
    line = box.exprs["theta"]
    proof.step("the realised update line (latest states)", sp.Eq(theta, line.xreplace(latest)))
    decay = sp.diff(line, theta)
    step = sp.factor_terms(decay * theta - line)
    if decay.free_symbols & dynamic or step.has(theta) or (step / lr).has(lr):
        why = ("is not linear in theta with a constant factor"
               if decay.free_symbols & dynamic or step.has(theta)
               else f"is not {lr} times a factor free of {lr}")
        raise NotPreconditionedError(
            f"the update of {design.name!r} is not decay*theta - {lr}*(a direction): the step "
            f"{step.xreplace(latest)} {why}; fix the hyperparameters that cause it "
            "(e.g. weight_decay=0)"
        )
    step = _signs(sp.factor_terms(step / lr), dynamic)
    D, u = _split(step, dynamic)
    substituted: set = set()
    # a preconditioner applied inside a state (RMSprop's momentum buffer): look one line up
    while D == 1 and (step.free_symbols & set(box.new.values())):
        inner = {p: box.exprs[n] for n, p in box.new.items() if step.has(p)}
        substituted |= {box.old[n] for n, p in box.new.items() if p in inner}
        expanded = _signs(sp.factor_terms(step.xreplace(inner)), dynamic)
        D2, u2 = _split(expanded, dynamic)
        if D2 != 1:
            D, u, step = D2, u2, expanded
            proof.step("the direction's state lines substituted",
                       sp.Eq(theta, decay * theta - lr * expanded.xreplace(latest)))
        elif expanded == step:
            break
        else:
            step = expanded
    if D == 1:
        substituted = set()
        u = sp.factor_terms(decay * theta - line) / lr
        step = u
    rename = {**{s: previous[s] for s in substituted}, **latest}
    D, u = D.xreplace(rename), u.xreplace(rename)
    if sp.simplify(u / D - step.xreplace(rename)) != 0:  # pragma: no cover - by construction
        raise NotPreconditionedError(f"could not write the update of {design.name!r} as u/D")
    if decay != 1:
        proof.step("theta is scaled by a constant factor first (weight decay)",
                   sp.Eq(sp.Symbol("decay"), decay))
    proof.step("the dynamic denominators form the diagonal preconditioner",
               sp.Eq(sp.Symbol("D"), D))
    proof.step("the rest is the search direction u = (decay*theta - theta+)*D/lr",
               sp.Eq(sp.Symbol("u"), u))
    proof.step("decay*theta - lr*u/D equals the realised line (the simplified difference is 0)")
    if D != 1:
        proof.step("mirror descent with the distance ||x||_D^2/2: D weights each coordinate")
    if D.has(k):
        proof.step("D depends on the step k (bias correction); as k -> oo it tends to",
                   sp.Eq(sp.Symbol("D_oo"), _limit(D, fixed_design)))
    return Preconditioner(design, D, u, lr, proof, fixed, decay)
