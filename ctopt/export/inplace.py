"""The in-place printer: the elementwise part of a program as in-place torch code.

One printer, two renderings of the same plan:

- ``per_tensor=False`` — ``torch._foreach_*`` calls over lists of tensors (the foreach path);
- ``per_tensor=True`` — in-place tensor methods on one tensor (the for-loop path), which also
  works on tensor subclasses such as DTensor.

The plan is a small compiler pass over the SSA lines of a :class:`~ctopt.export.codegen.Program`:

1. **In place into dead values.** A new state (or theta) is written into the old state's tensor
   when no later line reads the old value; terms that read it are evaluated first.
2. **Fused pointwise ops.** ``x*a + y*b`` with ``a + b == 1`` (proved on the coefficients'
   definitions in the scalar part, by rational cancellation) becomes ``lerp_``; ``x + c*y*z``
   ``addcmul_``; ``x + c*y/z`` ``addcdiv_``; ``x*c`` ``mul_``; ``x + c*y`` ``add_(alpha=c)``;
   scalar coefficients are passed as Python floats. An affine denominator's scale moves into
   ``addcdiv_``'s value (``c*x/(sqrt(a*y) + b)`` is ``(c/sqrt(a))*x/(sqrt(y) + b/sqrt(a))``,
   one pass fewer) when the scale is finite and nonzero at run time.
3. **Temporaries.** Each subexpression allocates at most one fresh tensor (or list); later
   operations on it are in place.
4. **Runtime identities.** A linear form of the gradient, ``a*g + b*x + ...`` (maximize's sign
   and weight-decay-like terms fold into ``a``, ``b``), is read as ``g`` itself when at this step
   ``a == 1`` and the other coefficients are 0, so no copy of the gradient is made. A scalar
   ``Piecewise`` becomes a Python ``if``, so only the chosen branch runs.

Example:
    >>> import sympy as sp
    >>> m, g, c = sp.symbols("s_m g c", real=True)
    >>> fp = InplacePrinter({"s_m", "g"}, {"c": sp.Symbol("beta")})
    >>> fp.line("m_new", c * m + (1 - c) * g, inplace="s_m")
    >>> print("\\n".join(fp.lines))
    torch._foreach_lerp_(s_m, g, (1.0 + (-1.0 * c)))
    m_new = s_m
"""

from __future__ import annotations

import sympy as sp

from .. import ops
from .printers import ForeachRendering, TensorRendering, python_name, scalar_code, tensor_code

__all__ = ["InplacePrinter", "inplace_lines"]

_G = ops.g


class InplacePrinter:
    """Print elementwise lines as in-place torch code (see the module docstring).

    ``elementwise`` names the tensor-valued symbols (inputs and earlier lines); ``scalars`` maps
    coefficient names to their scalar definitions (used to recognise ``lerp``); ``writable``
    names the inputs that some line may overwrite in place (theta and the states). ``line``'s
    ``inplace`` names an input that may be overwritten to hold the line's value.

    Example:
        >>> import sympy as sp
        >>> x, g, c = sp.symbols("theta g c", real=True)
        >>> fp = InplacePrinter({"theta", "g"}, per_tensor=True)
        >>> fp.line("theta_new", x * c + g / (x + 1), inplace="theta")
        >>> print("\\n".join(fp.lines))
        _t1 = torch.add(theta, 1.0)
        if c != 1.0:
            theta.mul_(c)
        theta.addcdiv_(g, _t1)
        theta_new = theta
    """

    def __init__(self, elementwise: set[str], scalars: dict[str, sp.Expr] | None = None,
                 per_tensor: bool = False, writable: frozenset[str] = frozenset()):
        self.elementwise = set(elementwise)
        self.writable = frozenset(writable)
        self.scalars = dict(scalars or {})
        self.render = TensorRendering if per_tensor else ForeachRendering
        self.lines: list[str] = []
        self.indent = ""
        self._n = 0
        self.protected: str | None = None  # a tensor about to be overwritten in place

    # ------------------------------------------------------------------ rendering
    def put(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def _tmp(self) -> str:
        self._n += 1
        return f"_t{self._n}"

    def call(self, op: str, ref: str, extra: str = "", inplace: bool = False) -> str:
        """Source of ``op`` applied to ``ref`` (in place or out of place) in this rendering."""
        return self.render.call(op, ref, ", " + extra if extra else "", inplace)

    # ------------------------------------------------------------------ helpers
    def is_elem(self, e: sp.Basic) -> bool:
        return any(python_name(s.name) in self.elementwise for s in e.free_symbols)

    def scalar(self, e: sp.Basic) -> str:
        return scalar_code(e)

    def resolve(self, e: sp.Expr) -> sp.Expr:
        """A scalar expression with coefficient names replaced by their definitions."""
        for _ in range(len(self.scalars) + 1):
            known = {s: self.scalars[s.name] for s in e.free_symbols if s.name in self.scalars}
            if not known:
                break
            e = e.xreplace(known)
        return e

    def line(self, target: str, expr: sp.Expr, inplace: str | None = None) -> None:
        """Emit the code computing ``target`` from ``expr``."""
        ref, _ = self.emit(expr, inplace)
        self.put(f"{target} = {ref}")
        self.elementwise.add(target)

    def _fresh(self, call: str) -> tuple[str, bool]:
        name = self._tmp()
        self.put(f"{name} = {call}")
        return name, True

    def _apply(self, op: str, acc: tuple[str, bool], extra: str = "") -> tuple[str, bool]:
        ref, fresh = acc
        if fresh:
            self.put(self.call(op, ref, extra, inplace=True))
            return ref, True
        return self._fresh(self.call(op, ref, extra))

    def _scale(self, acc: tuple[str, bool], coef: sp.Expr) -> tuple[str, bool]:
        """``acc * coef``; on a fresh value, skipped at run time when ``coef`` is 1."""
        if coef == 1:
            return acc
        value = self.scalar(coef)
        if acc[1] and value.isidentifier():
            self.put(f"if {value} != 1.0:")
            self.put("    " + self.call("mul", acc[0], value, inplace=True))
            return acc
        return self._apply("mul", acc, value)

    # ------------------------------------------------------------------ emitters
    def emit(self, e: sp.Expr, into: str | None = None) -> tuple[str, bool]:
        """Emit ``e``; return (variable, whether it is a fresh value we may overwrite)."""
        if not self.is_elem(e):
            raise AssertionError(f"scalar expression reached the in-place printer: {e}")
        if e.is_Symbol:
            return python_name(e.name), python_name(e.name) == into
        if e.is_Add:
            return self._add(e, into)
        if e.is_Mul:
            return self._mul(e, into)
        if e.is_Pow:
            return self._pow(e)
        if type(e) in ops.MINMAX:
            elem = [a for a in e.args if self.is_elem(a)]
            scal = [a for a in e.args if not self.is_elem(a)]
            own = [a for a in elem if a.is_Symbol and python_name(a.name) == into]
            if own and not any(self._reads(a, into) for a in elem if a is not own[0]):
                elem.remove(own[0])  # the result is built in ``into``
                elem.insert(0, own[0])
            else:
                into = None
            acc = self.emit(elem[0], into)
            op = ops.MINMAX[type(e)]
            for a in elem[1:]:
                acc = self._apply(op.torch, acc, self.emit(a)[0])
            for a in scal:
                acc = self._apply(f"clamp_{op.clamp}", acc, self.scalar(a))
            return acc
        function = ops.function_of(e)
        if function is not None and function.inplace is not None:
            return self._apply(function.inplace, self.emit(e.args[0]))
        if isinstance(e, sp.Piecewise) and not any(self.is_elem(c) for _, c in e.args):
            return self._scalar_choice(e)
        # Piecewise with elementwise conditions, relations, logic: per-tensor torch code
        return self._fresh(self._per_tensor(e))

    def _scalar_choice(self, e: sp.Piecewise) -> tuple[str, bool]:
        """A ``Piecewise`` with scalar conditions: a Python ``if``; only one branch runs."""
        like = python_name(sorted(s.name for s in e.free_symbols if self.is_elem(s))[0])
        name, fresh, outer = self._tmp(), True, self.indent
        branches = [(v, c) for v, c in e.args]
        if branches[-1][1] is not sp.true:
            branches.append((sp.nan, sp.true))
        for i, (value, cond) in enumerate(branches):
            self.indent = outer
            if cond is sp.true:
                self.put("else:" if i > 0 else "if True:")
            else:
                self.put(f"{'if' if i == 0 else 'elif'} {self.scalar(cond)}:")
            self.indent = outer + "    "
            if self.is_elem(value):
                ref, is_fresh = self.emit(value)
                if not is_fresh and (ref == self.protected or ref in self.writable):
                    # an alias of a tensor a later line (or the final copy) overwrites would
                    # see the new value: the chosen branch copies it
                    ref, is_fresh = self.render.clone(ref), True
                fresh = fresh and is_fresh
            else:
                ref = self.render.full(self.scalar(value), like)
            self.put(f"{name} = {ref}")
            if cond is sp.true:
                break
        self.indent = outer
        return name, fresh

    def _per_tensor(self, e: sp.Expr) -> str:
        lists = sorted(python_name(s.name) for s in e.free_symbols if self.is_elem(s))
        return self.render.each(tensor_code(e, self.elementwise), lists)

    # ------------------------------------------------------------------ sums
    def _split(self, t: sp.Expr) -> tuple[sp.Expr, list[sp.Expr], list[sp.Expr]]:
        """A term as (scalar coefficient, elementwise numerator factors, denominator factors)."""
        if t.is_Mul:
            coef = sp.Mul(*[a for a in t.args if not self.is_elem(a)])
            num, den = ops.split_product(list(t.args))  # the oracle's order of factors
            return coef, [a for a in num if self.is_elem(a)], [a for a in den if self.is_elem(a)]
        return sp.S.One, [t], []

    def _operands(self, t: sp.Expr) -> list[sp.Expr]:
        _, num, den = self._split(t)
        return [f.base if f.is_Pow and f.exp == 2 else f for f in num + den]

    def _prepare(self, t: sp.Expr) -> tuple[str, str]:
        """Emit the operands of term ``t``; return the in-place op adding it and its arguments."""
        coef, num, den = self._split(t)
        value = self.scalar(coef)
        alpha = "" if coef == 1 else f", alpha={value}"
        vkw = "" if coef == 1 else f", value={value}"
        if len(num) == 1 and not den and num[0].is_Pow and num[0].exp == 2:
            x = self.emit(num[0].base)[0]
            return "addcmul", f"{x}, {x}{vkw}"
        if len(num) == 1 and not den:
            return "add", f"{self.emit(num[0])[0]}{alpha}"
        if len(num) == 2 and not den:
            x = self.emit(num[0])[0]
            y = x if num[1] == num[0] else self.emit(num[1])[0]
            return "addcmul", f"{x}, {y}{vkw}"
        if len(num) == 1 and len(den) == 1:
            x, y = self.emit(num[0])[0], self.emit(den[0])[0]
            return "addcdiv", f"{x}, {y}{vkw}"
        return "add", self.emit(t)[0]

    def _lerp(self, seed: sp.Expr, others: list[sp.Expr]) -> str | None:
        """``a*x + b*y`` with ``a + b == 1`` (scalars) and a plain ``y``: the weight ``b``."""
        if len(others) != 1:
            return None
        a, num_a, den_a = self._split(seed)
        b, num_b, den_b = self._split(others[0])
        if den_a or den_b or len(num_b) != 1 or not num_b[0].is_Symbol or a == 1 or b == 1:
            return None
        if sp.cancel(self.resolve(a) + self.resolve(b) - 1) != 0:  # bounded, unlike simplify
            return None
        return self.scalar(b)

    def _add(self, e: sp.Add, into: str | None) -> tuple[str, bool]:
        terms = [t for t in e.args if self.is_elem(t)]
        scal = [t for t in e.args if not self.is_elem(t)]
        seed = self._seed(terms, into)
        if seed is None:
            first = terms.pop(0)
            weight = self._lerp(first, terms)
            if weight is not None:
                x = self.emit(self._split(first)[1][0])[0]
                y = self.emit(self._split(terms[0])[1][0])[0]
                return self._add_scalars(self._fresh(self.call("lerp", x, f"{y}, {weight}")), scal)
            coef, num, den = self._split(first)
            acc = self.emit(first) if den or len(num) != 1 else self._scale(self.emit(num[0]), coef)
        else:
            first = terms.pop(seed)
            weight = self._lerp(first, terms)
            if weight is not None:
                y = self.emit(self._split(terms[0])[1][0])[0]
                self.put(self.call("lerp", into, f"{y}, {weight}", inplace=True))
                return self._add_scalars((into, True), scal)
            # operands that read the old value are evaluated before it is overwritten
            self.protected = into
            early = {i: self._prepare(t) for i, t in enumerate(terms) if self._reads(t, into)}
            self.protected = None
            acc = self._scale((into, True), self._split(first)[0])
            for i, t in enumerate(terms):
                acc = self._add_term(acc, t, early.get(i))
            return self._add_scalars(acc, scal)
        for t in terms:
            acc = self._add_term(acc, t)
        return self._add_scalars(acc, scal)

    def _add_term(self, acc: tuple[str, bool], t: sp.Expr, prepared=None) -> tuple[str, bool]:
        if prepared is None and acc[1]:
            scaled = self._scaled_quotient(t)
            if scaled is not None:
                return self._add_scaled_quotient(acc, t, *scaled)
        op, extra = prepared or self._prepare(t)
        return self._apply(op, acc, extra)

    def _scaled_quotient(self, t: sp.Expr):
        """``c*x / (s*y + b)`` or ``c*x / (sqrt(a*y) + b)`` (scalars ``c, s, a, b``): the parts
        ``(c, x, y', s, b, condition)`` of ``(c/s)*x / (y' + b/s)`` with ``y' = y`` or
        ``sqrt(y)``, ``s = sqrt(a)``, valid when ``condition`` holds at run time."""
        coef, num, den = self._split(t)
        if len(num) != 1 or len(den) != 1 or not den[0].is_Add:
            return None
        elem = [a for a in den[0].args if self.is_elem(a)]
        bias = sp.Add(*[a for a in den[0].args if not self.is_elem(a)])
        if len(elem) != 1 or bias == 0:
            return None
        scale, inner, inner_den = self._split(elem[0])
        if len(inner) != 1 or inner_den:
            return None
        if scale != 1:
            return (coef, num[0], inner[0], scale, bias,
                    f"0.0 < abs({self.scalar(scale)}) < math.inf")
        root = inner[0]
        if not (root.is_Pow and root.exp == sp.S.Half):
            return None
        a, base, base_den = self._split(root.base)
        if a == 1 or len(base) != 1 or base_den:
            return None
        return (coef, num[0], sp.sqrt(base[0], evaluate=False), sp.sqrt(a), bias,
                f"0.0 < {self.scalar(a)} < math.inf")

    def _add_scaled_quotient(self, acc, t, coef, x, y, scale, bias, cond) -> tuple[str, bool]:
        """Add ``t`` with its denominator's scale moved into the coefficient (one pass fewer);
        the general form runs when ``cond`` fails at run time."""
        outer = self.indent
        self.put(f"if {cond}:")
        self.indent = outer + "    "
        xs = self.emit(x)[0]
        denominator = self._apply("add", self.emit(y), self.scalar(bias / scale))
        self.put(self.call("addcdiv", acc[0], f"{xs}, {denominator[0]}, "
                                              f"value={self.scalar(coef / scale)}", inplace=True))
        self.indent = outer
        self.put("else:")
        self.indent = outer + "    "
        op, extra = self._prepare(t)
        self._apply(op, acc, extra)
        self.indent = outer
        return acc

    def _add_scalars(self, acc: tuple[str, bool], scal: list[sp.Expr]) -> tuple[str, bool]:
        for t in scal:
            acc = self._apply("add", acc, self.scalar(t))
        return acc

    def _reads(self, t: sp.Expr, name: str | None) -> bool:
        return name is not None and name in {python_name(s.name) for s in t.free_symbols}

    def _seed(self, terms: list[sp.Expr], into: str | None) -> int | None:
        """The index of a term ``into`` or ``scalar*into`` usable as the in-place accumulator:
        no other term may use ``into`` itself as an operand (composite operands are fine)."""
        if into is None:
            return None
        for i, t in enumerate(terms):
            coef, num, den = self._split(t)
            if den or len(num) != 1 or not num[0].is_Symbol or python_name(num[0].name) != into:
                continue
            others = [u for j, u in enumerate(terms) if j != i]
            if any(f.is_Symbol and python_name(f.name) == into
                   for u in others for f in self._operands(u)):
                continue
            return i
        return None

    # ------------------------------------------------------------------ products, powers
    def _mul(self, e: sp.Mul, into: str | None) -> tuple[str, bool]:
        coef, num, den = self._split(e)
        if num:
            # one elementwise factor: its value may be built in ``into`` and scaled there;
            # the coefficient multiplies first, as in the oracle's left-to-right product
            acc = self.emit(num[0], into if len(num) + len(den) == 1 else None)
            if len(num) + len(den) == 1:
                return self._scale(acc, coef)
            acc = self._scale(acc, coef)
            emitted = {num[0]: acc[0]} if not acc[1] else {}  # a square's base, emitted once
            for a in num[1:]:
                if a not in emitted:
                    emitted[a] = self.emit(a)[0]
                acc = self._apply("mul", acc, emitted[a])
        else:
            acc = self._scale(self._apply("reciprocal", self.emit(den.pop(0))), coef)
        for a in den:
            acc = self._apply("div", acc, self.emit(a)[0])
        return acc

    def _pow(self, e: sp.Pow) -> tuple[str, bool]:
        if not self.is_elem(e.base) or self.is_elem(e.exp):  # scalar ** elementwise
            return self._fresh(self._per_tensor(e))
        base = self.emit(e.base)
        form = ops.power_form(e.exp)
        if form == "sqrt":
            return self._apply("sqrt", base)
        if form == "rsqrt":
            return self._apply("reciprocal", self._apply("sqrt", base))
        if form == "recip":
            return self._apply("reciprocal", base)
        if form == "square":
            return self._apply("mul", base, base[0])
        return self._apply("pow", base, self.scalar(e.exp))


def _gradient_form(expr: sp.Expr, scalar) -> tuple[sp.Expr, list[str]] | None:
    """The first subexpression ``a*g + b*x + ...`` (scalar ``a, b, ...``, plain symbols) of
    ``expr`` and the run-time conditions under which it equals ``g``."""
    for sub in sp.preorder_traversal(expr):
        terms = list(sub.args) if sub.is_Add else [sub] if sub.is_Mul else []
        conds, has_g = [], False
        for t in terms:
            factors = list(t.args) if t.is_Mul else [t]
            elem = [f for f in factors if not scalar(f)]
            coef = sp.Mul(*[f for f in factors if scalar(f)])
            if len(elem) != 1 or not elem[0].is_Symbol:
                break
            if elem[0] == _G and not has_g and (coef == 1 or coef.is_Symbol):
                has_g = True
                if coef != 1:
                    conds.append(f"{python_name(coef.name)} == 1.0")
            elif coef.is_Symbol:
                conds.append(f"{python_name(coef.name)} == 0.0")
            else:
                break
        else:
            if has_g and conds:
                return sub, conds
    return None


def _replaced(expr: sp.Basic, old: sp.Basic, new: sp.Basic) -> sp.Basic:
    """``expr`` with ``old`` replaced by ``new`` and nothing re-evaluated: ``xreplace`` would let
    sympy rewrite the hoisted program (``Abs(c/x)`` into ``Abs(c)/x``, a scalar left in
    elementwise code)."""
    if expr == old:
        return new
    args = tuple(_replaced(a, old, new) for a in expr.args)
    if args == expr.args:
        return expr
    if isinstance(expr, sp.functions.elementary.piecewise.ExprCondPair):
        return expr.func(*args)  # a (value, condition) pair evaluates nothing
    return expr.func(*args, evaluate=False)


def inplace_lines(program, per_tensor: bool = False) -> list[str]:
    """The elementwise part of ``program`` as in-place code: ``torch._foreach_*`` calls over
    lists (``per_tensor=False``) or in-place methods on one tensor (``per_tensor=True``).
    Theta and the states are updated in place; the function returns nothing.

    Example:
        >>> import ctopt
        >>> from ctopt.export.codegen import build_program
        >>> lines = inplace_lines(build_program(ctopt.zoo.get("sgd")), per_tensor=True)
        >>> print("\\n".join(lines[:3]))
        if c0 == 1.0 and c1 == 0.0:
            theta.add_(g, alpha=c2)
            theta_new = theta
    """
    from .codegen import code_name, state_symbol

    design = program.design
    inputs = {"theta"} | {state_symbol(s.name).name for s in design.states}
    scalars = dict(program.scalars)
    names = set(scalars) | {code_name("hyper", h.name) for h in design.hyper}
    names |= {code_name("reduction", r.name) for r in design.reductions}

    def scalar(f: sp.Expr) -> bool:
        return all(s.name in names or s.name in ("k", "gsign") for s in f.free_symbols)

    printer = InplacePrinter({"theta", "g"} | inputs, scalars, per_tensor, writable=inputs)
    targets = {program.theta_out: "theta"}
    targets.update({out: state_symbol(s.name).name
                    for out, s in zip(program.state_out, design.states, strict=False)})
    for i, (name, expr) in enumerate(program.elementwise):
        later = {s.name for _, e in program.elementwise[i + 1:] for s in e.free_symbols}
        into = targets.get(name)
        if into is not None and into in later:
            into = None
        target = python_name(name)
        versions = [(None, expr)]
        form = _gradient_form(expr, scalar)
        if form is not None:
            versions = [(" and ".join(form[1]), _replaced(expr, form[0], _G)), (None, expr)]
        for cond, version in versions:
            if len(versions) > 1:
                printer.put(f"if {cond}:" if cond else "else:")
                printer.indent = "    "
            if version.is_Symbol and version.name in inputs:
                printer.put(f"{target} = {printer.render.clone(version.name)}")
                printer.elementwise.add(target)
            elif version.is_Symbol:
                printer.put(f"{target} = {python_name(version.name)}")
                printer.elementwise.add(target)
            else:
                printer.line(target, version, inplace=into)
            printer.indent = ""
    for out, target in targets.items():
        printer.put(f"if {python_name(out)} is not {target}:")
        printer.put("    " + printer.render.copy(target, python_name(out)))
    return printer.lines
