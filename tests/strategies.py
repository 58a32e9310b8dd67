"""Hypothesis strategies that build random designs from the IR.

:func:`designs` draws a :class:`Drawn` design recipe and builds it with ``DesignBuilder``:

- hyperparameters (a learning rate, EMA coefficients in [0, 1), positive constants), group
  reductions (the L2 norm of ``g`` or of ``g + c*theta``), states with initial values and torch
  state-dict names, at most one moment filter of order 1 to 3 given in one of several forms
  (a cascade of EMAs, expanded polynomials, float coefficients, a complex pole pair, a
  pole-zero pair), temporaries, one state assignment per state (an EMA, a sum, any expression,
  or another value itself: ``prev <- theta``, a swap through a temporary) and the parameter
  update, in a random order (a line after the update rarely reads theta, which the IR refuses);
- expressions drawn from every function the IR allows (``+ - * /``, powers and square roots,
  ``Max``, ``Min``, ``Abs``, ``sign``, ``exp``, ``log``, ``Piecewise`` with elementwise and
  per-step conditions, ``And``/``Or``), mostly in bounded forms (``x/(1 + |x|)``,
  ``log(1 + |x|)``) so trajectories stay finite, sometimes raw (division by zero, ``log`` of a
  negative number);
- names drawn to collide: with Python keywords and builtins, with the code generator's own names
  (``s_m``, ``n_m``, ``t_x``, ``h_lr``, ``c0``, ``coef``, ``gsign``, ``theta_new``...), with the
  constructor's arguments, with each other and with torch state-dict names; now and then a name
  the IR must refuse (``k``, ``params``, ``step``, ``lr\\n``, a duplicate).

The strategy never decides whether the IR should accept a design: the property tests do.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from pathlib import Path

import sympy as sp
from hypothesis import reject
from hypothesis import strategies as st

import ctopt
from ctopt.design import POSITIVE, UNIT, DesignBuilder, g, k, theta
from ctopt.filters import z

#: Legal names that collide with Python, with the generated code's names or with each other's
#: prefixed forms.
TRICKY = (
    "m", "v", "x", "u", "w", "s", "n", "t", "h", "r", "c", "lr", "beta", "eps",
    "s_m", "n_m", "t_m", "h_lr", "r_m", "s_v", "n_v", "t_grad", "h_h", "m_new", "v_new",
    "theta_new", "c0", "c1", "c2", "coef", "gsign", "red", "grad",
    "super", "abs", "float", "self", "cls", "print", "len", "type", "id", "input", "object",
    "match", "case", "torch", "math", "np", "sp", "GeneratedOptimizer", "Hyper", "NamedTuple",
    "None", "for", "exp_avg", "momentum_buffer", "copy_",
    "step",
)
#: Names the IR must refuse somewhere (reserved, invalid, or an API name of the optimizer).
REFUSED = ("k", "g", "theta", "z", "lambda", "params", "betas", "maximize", "_x", "1x", "lr\n",
           "x-y", "a" * 65, "", "True", "class", "import")

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
names = st.one_of(
    st.sampled_from(TRICKY),
    st.builds(str.__add__, st.sampled_from(_LETTERS),
              st.text(alphabet=_LETTERS + "0123456789_", max_size=5)),
)

CONSTANTS = (sp.Integer(2), sp.Integer(-1), sp.Rational(1, 3), sp.Float(0.5), sp.Float(1e-3),
             sp.Integer(0))


@dataclass
class Drawn:
    """A drawn design: the builder's result (a design, or the error it raised) and the recipe."""

    design: object
    error: Exception | None
    recipe: list


def exported_class(drawn: Drawn):
    """The exported optimizer class of a drawn design, or None when building or exporting it
    was refused (with a ctopt error)."""
    import ctopt
    from ctopt.errors import CtoptError

    if drawn.error is not None:
        return None
    try:
        return ctopt.to_torch(drawn.design, check=False)
    except CtoptError:
        return None


def _bounded(x):
    return x / (1 + sp.Abs(x))


class _Draw:
    def __init__(self, draw, raw_rate: int):
        self.draw = draw
        self.raw_rate = raw_rate  # one in raw_rate operations is drawn in its raw (risky) form

    def raw(self) -> bool:
        return self.draw(st.integers(0, self.raw_rate - 1)) == 0

    def expr(self, leaves: list, scalars: list, depth: int):
        """A random expression; one sympy cannot form (``Max`` of ``zoo``...) is a leaf."""
        try:
            return self._expr(leaves, scalars, depth)
        except (ValueError, TypeError, ZeroDivisionError):
            return self.draw(st.sampled_from(leaves))

    def _expr(self, leaves: list, scalars: list, depth: int):
        draw = self.draw
        if depth <= 0 or draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(leaves + list(CONSTANTS)))
        op = draw(st.sampled_from((
            "add", "sub", "mul", "div", "sqrt", "square", "pow", "powk", "max", "min", "abs",
            "sign", "exp", "log", "where", "choose", "bounded", "powelem",
        )))
        a = self.expr(leaves, scalars, depth - 1)
        if op in ("add", "sub", "mul", "div", "max", "min", "where", "choose", "powelem"):
            b = self.expr(leaves, scalars, depth - 1)
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "div":
            return a / b if self.raw() else a / (1 + sp.Abs(b))
        if op == "sqrt":
            return sp.sqrt(a) if self.raw() else sp.sqrt(sp.Abs(a) + sp.Float(1e-3))
        if op == "square":
            return a**2
        if op == "pow":
            return (sp.Abs(a) + 1) ** draw(st.sampled_from((sp.Rational(-1, 2), sp.Float(1.5),
                                                            sp.Integer(-1), sp.Integer(3))))
        if op == "powk":  # a bias-correction-like per-step scalar
            base = draw(st.sampled_from(scalars)) if scalars else sp.Float(0.9)
            return a / (1 - sp.Float(0.5) * base**k) if not self.raw() else a * base**k
        if op == "max":
            return sp.Max(a, b)
        if op == "min":
            return sp.Min(a, b)
        if op == "abs":
            return sp.Abs(a)
        if op == "sign":
            return sp.sign(a)
        if op == "exp":
            return sp.exp(a) if self.raw() else sp.exp(-sp.Abs(a))
        if op == "log":
            return sp.log(a) if self.raw() else sp.log(1 + sp.Abs(a))
        if op == "where":  # an elementwise condition
            c = self.expr(leaves, scalars, depth - 1)
            cond = draw(st.sampled_from((sp.Gt, sp.Lt, sp.Ge, sp.Le)))(a, c)
            if draw(st.booleans()):
                cond = sp.Or(cond, sp.Gt(b, 0)) if draw(st.booleans()) else sp.And(cond, sp.Le(b, 1))
            return sp.Piecewise((a, cond), (b, True))
        if op == "choose":  # a per-step condition (first step, a hyperparameter's value)
            options = [sp.Eq(k, 1), sp.Gt(k, 3), sp.Ne(k, 2)]
            options += [sp.Gt(s, sp.Float(0.5)) for s in scalars]
            return sp.Piecewise((a, draw(st.sampled_from(options))), (b, True))
        if op == "bounded":
            return _bounded(a)
        if op == "powelem":
            return (sp.Abs(a) + sp.Float(0.5)) ** _bounded(b)
        raise AssertionError(op)


def _transfer(draw, betas: list):
    """A proper transfer function of order 1 to 3 in one of several forms, and its form."""
    form = draw(st.sampled_from(("cascade", "polynomial", "float", "complex", "pole_zero")))
    order = draw(st.integers(1, 3))
    poles = []
    for i in range(order):
        if i == 0 and betas and draw(st.booleans()):
            poles.append(draw(st.sampled_from(betas)))
        else:
            poles.append(sp.Rational(draw(st.integers(0 if i else 1, 9)), 10))
    if form == "complex":
        r = draw(st.sampled_from((0.3, 0.6, 0.9)))
        w = draw(st.sampled_from((0.3, 1.0, 2.5)))
        a1, a2 = 2 * r * math.cos(w), r * r
        return sp.Float(1 - a1 + a2) * z**2 / (z**2 - sp.Float(a1) * z + sp.Float(a2)), form
    if form == "pole_zero":
        p, q = poles[0], sp.Rational(draw(st.integers(-9, 9)), 10)
        extra = sp.Rational(draw(st.integers(0, 9)), 10)
        if q == 1 or extra == 1:
            q = sp.Rational(1, 2)
        return (1 - p) * z / (z - p) * (1 - extra) / (1 - q) * (z - q) / (z - extra), form
    cascade = sp.Mul(*[(1 - p) * z / (z - p) for p in poles])
    if form == "cascade":
        return cascade, form
    num, den = sp.fraction(sp.together(cascade))
    if form == "polynomial":
        return sp.expand(num) / sp.expand(den), form
    # float coefficients, as scipy.signal would give them
    if any(p.free_symbols for p in poles):
        return sp.expand(num) / sp.expand(den), "polynomial"
    pn, pd = sp.Poly(num, z), sp.Poly(den, z)
    to_float = [sp.Float(float(c)) for c in pn.all_coeffs()], [sp.Float(float(c))
                                                                for c in pd.all_coeffs()]
    return (sp.Poly(to_float[0], z).as_expr() / sp.Poly(to_float[1], z).as_expr()), form


@st.composite
def designs(draw, max_states: int = 3, max_lets: int = 3, depth: int = 3, raw_rate: int = 8):
    """A random design (see the module docstring); the result is a :class:`Drawn`."""
    d = _Draw(draw, raw_rate)
    recipe: list = []
    count = 8 + max_states + max_lets
    pool = draw(st.lists(names, min_size=count, max_size=count, unique=True))
    if draw(st.integers(0, 4)) == 0:  # now and then a refused name or a duplicate
        i = draw(st.integers(0, count - 1))
        pool[i] = draw(st.one_of(st.sampled_from(REFUSED), st.sampled_from(pool)))
    take = iter(pool)
    b = DesignBuilder(draw(st.sampled_from(("random", "hyper", "exception", "none", "generated_optimizer", "for"))))
    try:
        lr_name = next(take)
        lr = b.hyper(lr_name, draw(st.sampled_from((1e-3, 1e-2, 0.05, 0.1))), POSITIVE, role="lr")
        recipe.append(("hyper", lr_name))
        betas, consts = [], []
        for _ in range(draw(st.integers(0, 2))):
            name = next(take)
            betas.append(b.hyper(name, draw(st.sampled_from((0.0, 0.5, 0.9, 0.99))), UNIT,
                                 role="ema"))
            recipe.append(("hyper", name))
        for _ in range(draw(st.integers(0, 1))):
            name = next(take)
            consts.append(b.hyper(name, draw(st.sampled_from((1e-8, 0.1, 1.0, 2.0))), POSITIVE))
            recipe.append(("hyper", name))
        scalars = [lr, *betas, *consts]
        reductions = []
        if draw(st.integers(0, 2)) == 0:
            name = next(take)
            of = g if not consts else g + consts[0] * theta
            reductions.append(b.reduction(name, "l2_norm", of))
            recipe.append(("reduction", name, str(of)))
        states = []
        for _ in range(draw(st.integers(0, max_states))):
            name = next(take)
            init = draw(st.sampled_from([0, 0, sp.Rational(1, 10), *consts]))
            torch_name = draw(st.one_of(st.none(), st.none(), names))
            states.append(b.state(name, init, torch_name))
            recipe.append(("state", name, str(init), torch_name))
        lines = ["state"] * len(states) + ["let"] * draw(st.integers(0, max_lets)) + ["update"]
        if draw(st.integers(0, 2)) == 0:
            lines.append("filter")
        order = draw(st.permutations(lines))
        leaves = [g, theta, *scalars, *reductions, *states]
        if draw(st.integers(0, 5)) == 0:
            leaves.append(k)
        todo = list(states)
        for line in order:
            if line == "let":
                name = next(take)
                expr = d.expr(leaves, scalars, depth)
                leaves.append(b.let(name, expr))
                recipe.append(("let", name, str(expr)))
            elif line == "state":
                s = todo.pop(draw(st.integers(0, len(todo) - 1)))
                form = draw(st.sampled_from(("ema", "ema", "sum", "any", "copy")))
                inner = d.expr(leaves, scalars, depth)
                if form == "copy":  # another value itself: prev <- theta, a swap through a let
                    expr = draw(st.sampled_from([leaf for leaf in leaves if leaf is not s]))
                elif form == "ema":
                    beta = draw(st.sampled_from(betas)) if betas else sp.Float(0.9)
                    expr = beta * s + (1 - beta) * _bounded(inner)
                elif form == "sum":
                    expr = s + _bounded(inner) ** 2
                else:
                    expr = inner
                b.assign(s, expr)
                recipe.append(("assign", s.name, str(expr)))
            elif line == "filter":
                name = next(take)
                transfer, form = _transfer(draw, betas)
                source = draw(st.sampled_from(("g", "g2", "diff", "any")))
                state = states[0] if states else theta
                input = {"g": g, "g2": g**2, "diff": (g - state) ** 2}.get(source)
                if input is None:
                    input = d.expr(leaves, scalars, depth - 1)
                handle = b.filter(name, transfer, input=input,
                                  torch_name=draw(st.one_of(st.none(), names)))
                recipe.append(("filter", name, form, str(transfer), str(input)))
                leaves.append(handle)
                if draw(st.booleans()):  # bias-corrected by its own step response
                    corrected = handle / handle.step_response(k)
                    leaves.append(b.let(next(take), corrected))
                    recipe.append(("let", leaves[-1].name, str(corrected)))
            else:
                inner = d.expr(leaves, scalars, depth)
                expr = theta - lr * (inner if d.raw() else _bounded(inner))
                b.update(expr)
                recipe.append(("update", str(expr)))
                if not d.raw():  # a line after the update may not read theta (now and then one does)
                    leaves.remove(theta)
        return Drawn(b.build(), None, recipe)
    except StopIteration:
        raise AssertionError("the name pool is too small") from None
    except Exception as exc:  # the property decides whether this error is acceptable
        if not _raised_in_ctopt(exc):  # sympy failed on the drawn expression before ctopt saw it
            reject()
        return Drawn(None, exc, recipe)


_CTOPT = str(Path(ctopt.__file__).parent)


def _raised_in_ctopt(exc: BaseException) -> bool:
    """Whether ``exc`` passed through ctopt's code (not only this generator's own sympy calls,
    e.g. sympy's ``Piecewise`` recursing without end while an expression is drawn)."""
    return any(frame.filename.startswith(_CTOPT)
               for frame in traceback.extract_tb(exc.__traceback__))
