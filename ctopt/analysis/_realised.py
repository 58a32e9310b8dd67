"""The recursions of the realised map: the linear blocks the generated code runs, and the
quantities it takes a square root or a log of, or divides by.

A design's box (:func:`~ctopt.analysis._box.build_box`, the assignments the code generator
prints, lets expanded) gives each state as a function of old states, the states assigned
above (their new values), signals and hyperparameters. Writing every state line as

    ``x_new = A_old x_old + A_new x_new + E u + offset``

with ``A_old``, ``A_new`` constants of the design (no signal, no state, no ``k`` after the
``k -> oo`` limit of bias corrections) and ``u`` the remaining input terms, the realised state
map is ``x_k = A x_{k-1} + B u_k + offset`` with ``A = (I - A_new)^-1 A_old`` and
``B = (I - A_new)^-1 E``: hand-written recursions and declared filters are read the same way.
A :class:`Block` is a strongly connected set of states under ``A`` (a hidden second-order loop
``m <- ... + q; q <- m`` is one block of two states).

Example:
    >>> import ctopt
    >>> [b.names for b in linear_blocks(ctopt.zoo.get("adamssm"))[0]]
    [('m',), ('v', 'v_1')]
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import ops
from ..design import Design, g, k, theta
from ..errors import CtoptError
from ._box import Box, _asymptotic_box, build_box

__all__ = ["Block", "Guard", "assumed_symbols", "guards", "linear_blocks"]


@dataclass(frozen=True)
class Block:
    """States ``names`` (design order; the first is the output) with ``x_k = A x_{k-1} + B u_k +
    offset``. ``u`` is the input in box terms (a state there means its latest value); ``B`` is
    ``None`` when several inputs enter the block in different proportions (``inputs`` lists
    them then). ``init`` are the states' initial values."""

    names: tuple[str, ...]
    A: sp.Matrix
    B: sp.Matrix | None
    u: sp.Expr
    offset: sp.Matrix
    init: tuple[sp.Expr, ...]
    inputs: tuple[sp.Expr, ...] = ()

    def transfer(self, z: sp.Symbol, output: int = 0) -> sp.Expr:
        """``H(z) = z e_out^T (zI - A)^-1 B`` from ``u`` to the ``output``-th state."""
        n = len(self.names)
        x = (z * sp.eye(n) - self.A).LUsolve(self.B)
        return sp.cancel(sp.together(z * x[output]))


@dataclass(frozen=True)
class Guard:
    """A quantity the update needs nonnegative: ``kind`` is ``"square root"``, ``"log"`` or
    ``"divisor"``; ``where`` names the assignment; ``arg`` is in box terms."""

    kind: str
    arg: sp.Expr
    where: str

    def __str__(self) -> str:
        return f"{self.kind} of {self.arg} (in {self.where})"


def _dynamic(design: Design, box: Box) -> set[sp.Symbol]:
    return ({g, theta, k} | set(box.old.values()) | set(box.new.values())
            | {r.symbol for r in design.reductions})


def _lines(box: Box) -> dict[str, sp.Expr]:
    try:
        return dict(_asymptotic_box(box)[0])
    except CtoptError:  # a factor without a limit: keep the raw line (it will read as input)
        return dict(box.exprs)


def _split(expr: sp.Expr, dynamic: set) -> list[tuple[sp.Expr, sp.Expr]]:
    """``expr`` as ``[(constant coefficient, dynamic part)]`` term by term (products distributed
    over sums, powers left alone)."""
    spread = sp.expand(expr, power_exp=False, power_base=False, multinomial=False, log=False)
    out = []
    for term in sp.Add.make_args(spread):
        coeff, part = term.as_independent(*dynamic, as_Add=False)
        out.append((coeff, part))
    return out


def linear_blocks(design: Design) -> tuple[list[Block], dict[str, str]]:
    """The linear blocks of the realised map and, for every other state, why it is not one."""
    box = build_box(design)
    lines = _lines(box)
    dynamic = _dynamic(design, box)
    names = [s.name for s in design.states]
    old = box.old
    new = box.new
    n = len(names)
    index = {s: i for i, s in enumerate(names)}
    A_old, A_new = sp.zeros(n, n), sp.zeros(n, n)
    rests: dict[str, list[tuple[sp.Expr, sp.Expr]]] = {}
    skipped: dict[str, str] = {}
    for s in names:
        terms = _split(lines[s], dynamic)
        rest = []
        for coeff, part in terms:
            hit = [(m, 0) for m in names if part == old[m]] + \
                  [(m, 1) for m in names if part == new[m]]
            if hit and not coeff.has(k):
                m, which = hit[0]
                (A_old if which == 0 else A_new)[index[s], index[m]] += coeff
            else:
                rest.append((coeff, part))
        rests[s] = rest
    A_new_inv = (sp.eye(n) - A_new).inv() if n else sp.zeros(0, 0)
    A = (A_new_inv * A_old).applyfunc(sp.cancel)
    blocks = []
    for comp in _components(A, names):
        i0 = index[comp[0]]
        own = {old[m] for m in comp} | {new[m] for m in comp}
        if len(comp) == 1 and A[i0, i0] == 0:
            itself = any(part.has(*own) for _, part in rests[comp[0]])
            skipped[comp[0]] = (f"the update {comp[0]} <- {_show(box, lines[comp[0]])} is not "
                                f"affine in {comp[0]}" if itself else
                                "a memory of its input, not a recursion")
            continue
        bad = [m for m in comp if any(part.has(*own) for _, part in rests[m])]
        if bad:
            for m in comp:
                skipped[m] = (f"the update of {bad[0]!r} is not affine in "
                              f"{', '.join(repr(x) for x in comp)}: {_show(box, lines[bad[0]])}")
            continue
        blocks.append(_block(box, comp, names, A, A_new_inv, rests))
    return blocks, skipped


def _block(box: Box, comp, names, A, A_new_inv, rests) -> Block:
    design = box.design
    index = {s: i for i, s in enumerate(names)}
    idx = [index[m] for m in comp]
    # inputs of every state in the block, propagated through the new values assigned above
    signals: list[sp.Expr] = []
    E = {}
    const = {}
    for m in names:
        E[m], const[m] = {}, sp.Integer(0)
        for coeff, part in rests[m]:
            if part == 1:
                const[m] += coeff
                continue
            if part not in signals:
                signals.append(part)
            E[m][part] = E[m].get(part, sp.Integer(0)) + coeff
    full = sp.Matrix([[E[m].get(s, 0) for s in signals] for m in names]) if signals else None
    offsets = A_new_inv * sp.Matrix([const[m] for m in names])
    B_all = A_new_inv * full if full is not None else None
    # states outside the block that it reads linearly (old values, after flattening) are inputs
    outside = [j for j in range(len(names)) if names[j] not in comp
               and any(A[i, j] != 0 for i in idx)]
    if outside:
        extra = A.extract(list(range(len(names))), outside)
        B_all = extra if B_all is None else B_all.row_join(extra)
        signals += [box.old[names[j]] for j in outside]
    A_b = A.extract(idx, idx)
    offset = offsets.extract(idx, [0]).applyfunc(sp.cancel)
    init = tuple(sp.sympify(next(s.init for s in design.states if s.name == m)) for m in comp)
    back = {v: sp.Symbol(n, real=True) for n, v in box.new.items()}
    if B_all is None:
        return Block(tuple(comp), A_b, sp.zeros(len(comp), 1), sp.Integer(0), offset, init)
    cols = B_all.extract(idx, list(range(len(signals)))).applyfunc(sp.cancel)
    used = [j for j in range(len(signals)) if any(c != 0 for c in cols[:, j])]
    if not used:
        return Block(tuple(comp), A_b, sp.zeros(len(comp), 1), sp.Integer(0), offset, init)
    # one input when every column is a constant multiple of the first
    ref = cols[:, used[0]]
    pivot = next(i for i in range(len(comp)) if ref[i] != 0)
    ratios = [sp.cancel(cols[pivot, j] / ref[pivot]) for j in used]
    proportional = all(sp.cancel(cols[:, j] - r * ref).is_zero_matrix
                       for j, r in zip(used, ratios, strict=True))
    parts = [signals[j].xreplace(back) for j in used]
    if not proportional:
        return Block(tuple(comp), A_b, None, sp.Add(*parts), offset, init, tuple(parts))
    u = sp.Add(*[r * p for r, p in zip(ratios, parts, strict=True)])
    B = ref
    # a signal written with a negative factor, e.g. (beta - 1)*(-g): move the sign into B
    # only when the input is sign-indefinite (a flip must not change a nonnegative input)
    if not _nonnegative(u, design) and len(comp) == 1 and (B[0] / (1 - A_b[0, 0])).equals(-1):
        B, u = -B, -u
    return Block(tuple(comp), A_b, B, sp.factor_terms(u), offset, init)


def _show(box: Box, expr: sp.Expr) -> sp.Expr:
    return expr.xreplace({v: sp.Symbol(n, real=True) for n, v in box.new.items()})


def _components(A: sp.Matrix, names: list[str]) -> list[list[str]]:
    """Strongly connected components of the graph ``i -> j`` where ``A[i, j] != 0``, each in
    design order, the components in design order of their first state."""
    n = len(names)
    reach = [{j for j in range(n) if A[i, j] != 0} for i in range(n)]
    closure = [set(r) for r in reach]
    changed = True
    while changed:
        changed = False
        for i in range(n):
            more = set().union(*(closure[j] for j in closure[i])) - closure[i] if closure[i] \
                else set()
            if more:
                closure[i] |= more
                changed = True
    seen, out = set(), []
    for i in range(n):
        if i in seen:
            continue
        comp = [j for j in range(n) if j == i or (j in closure[i] and i in closure[j])]
        seen.update(comp)
        out.append([names[j] for j in comp])
    return out


# ------------------------------------------------------------------ signs under the domains
def assumed_symbols(design: Design) -> dict[sp.Symbol, sp.Symbol]:
    """Each hyperparameter symbol -> a symbol carrying the sign its domain implies
    (``positive`` for ``(0, inf)``, ``nonnegative`` for ``[0, 1)``, ...).

    Example:
        >>> import ctopt
        >>> assumed_symbols(ctopt.zoo.get("adam"))[sp.Symbol("eps", real=True)].is_positive
        True
    """
    out = {}
    for h in design.hyper:
        d = h.domain
        kw = {"real": True}
        if d.lower is not None and (d.lower > 0 or (d.lower == 0 and not d.lower_closed)):
            kw["positive"] = True
        elif d.lower is not None and d.lower >= 0:
            kw["nonnegative"] = True
        out[h.symbol] = sp.Symbol(h.name, **kw)
    return out


def _below_one(design: Design) -> dict[sp.Symbol, sp.Expr]:
    """Hyperparameters with domain inside ``[0, 1)`` (or ``(0, 1)``): each as ``1/(1 + s)``
    with ``s > 0``, so that sympy sees both ``beta > 0`` and ``1 - beta > 0``."""
    out = {}
    for h in design.hyper:
        d = h.domain
        if (d.lower is not None and d.lower >= 0 and d.upper is not None
                and (d.upper < 1 or (d.upper == 1 and not d.upper_closed))):
            out[h.symbol] = 1 / (1 + sp.Symbol(f"_s_{h.name}", positive=True))
    return out


def _nonnegative(expr: sp.Expr, design: Design, facts: dict | None = None) -> bool:
    """Whether ``expr >= 0`` follows from the domains (and ``facts``: symbols known
    nonnegative, e.g. states proven nonnegative)."""
    e = sp.sympify(expr).xreplace(facts or {})
    if e.xreplace(assumed_symbols(design)).is_nonnegative:
        return True
    below = _below_one(design)
    if not below or not (e.free_symbols & set(below)):
        return False
    trial = e.xreplace(below).xreplace(assumed_symbols(design))
    try:
        return bool(sp.factor_terms(sp.together(trial)).is_nonnegative)
    except (TypeError, ValueError):  # pragma: no cover - sympy internals
        return False


def positive_scalar(expr: sp.Expr, design: Design) -> bool:
    """Whether a per-step scalar (hyperparameters and ``k`` only) is positive for every
    admissible value and every ``k >= 1``: ``1 - beta**k`` with ``beta`` in ``[0, 1)``.

    A power ``beta**(a*k + c)`` (``a >= 1``) of such a ``beta`` is written
    ``beta**(a + c) * w`` with ``0 < w <= 1`` (as ``w = 1/(1 + s)``, ``s >= 0``), which holds for
    every ``k >= 1``; the rest is sympy's sign rules after cancelling.

    Example:
        >>> import ctopt
        >>> b2 = sp.Symbol("beta2", real=True)
        >>> positive_scalar(1 - b2**k, ctopt.zoo.get("adam"))
        True
    """
    e = sp.sympify(expr)
    if e.xreplace(assumed_symbols(design)).is_positive:
        return True
    below = _below_one(design)
    powers = {}
    for p in e.atoms(sp.Pow):
        if p.base in below and p.exp.has(k):
            a, c = sp.Poly(p.exp, k).all_coeffs() if p.exp.is_polynomial(k) and \
                sp.degree(p.exp, k) == 1 else (None, None)
            if a is None or not (a.is_integer and a >= 1) or not (a + c).is_nonnegative:
                return False
            powers[p] = p.base ** (a + c) / (1 + sp.Dummy("s", nonnegative=True))
    trial = e.xreplace(powers).xreplace(below).xreplace(assumed_symbols(design))
    if trial.has(k):
        return False
    try:
        return bool(sp.cancel(sp.together(trial)).is_positive)
    except (TypeError, ValueError):  # pragma: no cover - sympy internals
        return False


# ------------------------------------------------------------------ guarded quantities
def guards(design: Design) -> list[Guard]:
    """Every argument of a square root (any non-integer power), a log, or a denominator that
    involves the dynamics, in the assignments as the code generator prints them.

    Example:
        >>> import ctopt
        >>> [str(gd.arg) for gd in guards(ctopt.zoo.get("rmsprop")) if gd.kind == "square root"]
        ['sq']
    """
    box = build_box(design)
    dynamic = _dynamic(design, box) - {k}
    back = {v: sp.Symbol(n, real=True) for n, v in box.new.items()}
    out: list[Guard] = []
    for name in box.order:
        expr = box.exprs[name].xreplace(back)
        where = "theta" if name == "theta" else name
        for node in sp.preorder_traversal(expr):
            if not (node.free_symbols & dynamic):
                continue
            function = ops.function_of(node)
            if function is not None and function.guard is not None:
                _add(out, Guard(function.guard, node.args[0], where))
            elif node.is_Pow and node.exp.is_number:
                if not node.exp.is_integer:
                    _add(out, Guard("square root" if node.exp == sp.Rational(1, 2) or
                                    node.exp == -sp.Rational(1, 2) else "fractional power",
                                    node.base, where))
                elif node.exp < 0:
                    _add(out, Guard("divisor", node.base, where))
    return out


def _add(out: list[Guard], guard: Guard) -> None:
    if all((x.kind, x.arg) != (guard.kind, guard.arg) for x in out):
        out.append(guard)
