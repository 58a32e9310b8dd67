"""Transfer functions of a design's linear part, symbolically in ``z``.

A design's box gives the state map ``x_k = F(x_{k-1}, inputs_k, k)``. ctopt reads a transfer
function off it in four steps:

1. *Flatten* the box by substitution. A state on a right-hand side means its latest value, so the
   expressions are first written with "new-value" placeholders and the placeholders resolved in
   assignment order.
2. *Asymptotics*: time-varying scalar factors (bias corrections ``1/(1 - beta**k)``, ``Piecewise``
   branches on ``k`` such as torch's ``buf_1 = grad``) are replaced by their ``k -> oo`` limits.
   They are asymptotically vanishing gains and are listed in ``TransferFunction.time_varying``.
3. *Input*: the requested signal (``"g**2"``, ``"(g - m)**2"``, ...) is written in the box's own
   terms (a state in it means its latest value) and replaced by a fresh input ``u``. Every other
   input is held at zero, as for any SISO transfer function of a MIMO system: the rest of ``g`` and,
   unless the output is ``theta``, the parameter ``theta`` (coupled weight decay is feedback through
   the parameter and belongs to :func:`ctopt.analysis.closed_loop`). Group reductions stay as
   symbolic gains. Constant terms (AdaBelief's ``eps`` inside the recursion) are reported as
   ``offset``, not filtered.
4. The result must be affine in the states and ``u``; then ``H(z) = z C (zI - A)^{-1} B`` in the
   current-input convention of :mod:`ctopt.filters` (``x_k = A x_{k-1} + B u_k``), so an EMA is
   ``(1 - beta) z / (z - beta)``.

Example:
    >>> import ctopt
    >>> tf = ctopt.transfer_function(ctopt.zoo.get("adam"), output="v", input="g**2")
    >>> tf.expr
    z*(1 - beta2)/(-beta2 + z)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..design import Design, g, k, theta
from ..errors import DesignError, HyperparameterError, UnsupportedError
from ..filters import Filter, inverse_z, z
from ..limits import check_size, timed

__all__ = [
    "StateSpace", "TransferFunction", "state_space", "transfer_function", "transfer_functions",
]

from ._box import (
    Box,
    TimeVarying,
    _fix,
    _numeric_values,
    _relevant,
    asymptotic,
    build_box,
    detect_signal,
    linear_part,
    parse_signal,
)


def _monic(den: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``den`` as a product of factors monic in z where that keeps them polynomial (a symbolic
    leading coefficient such as a frozen ``r`` stays), and the constant divided out."""
    poly = sp.Poly(den, z)
    if den.has(sp.Float):
        coeffs = poly.all_coeffs()
        n = len(coeffs) - 1
        rest = sum(c / coeffs[0] * z ** (n - i) for i, c in enumerate(coeffs) if i)
        return z**n + rest, coeffs[0]
    const, factors = sp.factor_list(den, z)
    lead, parts = const, []
    for f, m in factors:
        c = sp.Poly(f, z).LC()
        monic = sp.expand(f / c)
        if not c.is_Number and sp.denom(sp.together(monic)) != 1:
            parts.append(f**m)
            continue
        lead *= c**m
        parts.append(monic**m)
    return sp.Mul(*parts), lead


def _inverse(expr: sp.Expr, step: sp.Expr) -> sp.Expr:
    """``y[step]`` (``step >= 1``) of ``Y(z)``: :func:`ctopt.filters.inverse_z` where partial
    fractions exist over the coefficients' field, else residues at the (distinct) roots."""
    j = sp.Symbol("j", integer=True, nonnegative=True)
    try:
        value = inverse_z(expr, j) if sp.fraction(sp.cancel(expr))[1].has(z) else \
            sp.cancel(expr) * sp.KroneckerDelta(j, 0)
    except DesignError:
        value = _inverse_by_residues(expr, j)
    return sp.Add(*[sp.powsimp(t) for t in sp.Add.make_args(value.subs(j, step - 1))])


def _inverse_by_residues(expr: sp.Expr, j: sp.Symbol) -> sp.Expr:
    num, den = sp.fraction(sp.cancel(expr))
    pd = sp.Poly(den, z)
    if den.has(sp.Float):
        roots = [sp.nsimplify(r) if r.is_real and r == 0 else r for r in pd.nroots()]
    else:
        found = sp.roots(pd, multiple=True)
        if len(found) != pd.degree():
            raise DesignError(f"no closed-form roots for the denominator {den}")
        roots = found
    if len(set(roots)) != len(roots) or any(r == 0 for r in roots):
        raise DesignError(f"no closed-form inverse z-transform of {expr} (repeated or zero pole)")
    slope = sp.diff(den, z)
    out = sp.cancel(num.subs(z, 0) / den.subs(z, 0)) * sp.KroneckerDelta(j, 0)
    for r in roots:
        out += num.subs(z, r) / (r * slope.subs(z, r)) * r**j
    return out


def _positive_constants(expr: sp.Expr) -> sp.Expr:
    """Flip factors such as ``beta2 - 1`` to ``1 - beta2`` (sign moved to the front)."""
    sign, parts = 1, []
    for fac in sp.Mul.make_args(expr):
        base, power = fac.as_base_exp()
        if base.is_Add and not base.has(z) and base.as_coeff_Add()[0] < 0 and power.is_integer:
            base, sign = -base, sign * (-1) ** power
        parts.append(sp.Pow(base, power, evaluate=False) if power != 1 else base)
    return sign * sp.Mul(*parts)


def _coefficients(expr: sp.Expr) -> np.ndarray:
    coeffs = sp.Poly(expr, z).all_coeffs()
    return np.array([complex(c) for c in coeffs]).real.astype(float)


# --------------------------------------------------------------------------- transfer functions
@dataclass(frozen=True)
class TransferFunction:
    """A symbolic discrete-time transfer function ``H(z) = num/den`` (denominator monic in z)
    from ``input`` to ``output`` of a design, in the current-input convention.

    ``time_varying`` lists the box's factors that depend on ``k`` along this path (bias
    corrections, first-step branches) with the ``k -> oo`` limits used here: they are
    asymptotically vanishing gains, outside the LTI map. ``offset`` is the constant input of the
    output's equation (AdaBelief's ``eps``), not part of ``H``.

    Example:
        >>> import ctopt
        >>> tf = ctopt.transfer_function(ctopt.zoo.get("adagrad"), output="s", input="g**2")
        >>> tf.poles(), tf.dc_gain()
        ([1], zoo)
    """

    num: sp.Expr
    den: sp.Expr
    input: sp.Expr = sp.Symbol("u", real=True)
    output: str = "y"
    design: Design | None = field(default=None, repr=False, compare=False)
    time_varying: tuple[TimeVarying, ...] = ()
    offset: sp.Expr = sp.Integer(0)

    @property
    def expr(self) -> sp.Expr:
        """``H(z)`` as one sympy expression."""
        return self.num / self.den

    @classmethod
    def from_expr(cls, expr: sp.Expr, **fields) -> TransferFunction:
        """Normalise ``expr`` (rational in z) to factored numerator over monic denominator.

        Example:
            >>> TransferFunction.from_expr(2 * z / (2 * z - 1)).expr
            z/(z - 1/2)
        """
        num, den = sp.fraction(sp.cancel(sp.together(sp.sympify(expr))))
        return cls.from_parts(num, den, **fields)

    @classmethod
    def from_parts(cls, num: sp.Expr, den: sp.Expr, **fields) -> TransferFunction:
        """Like :meth:`from_expr` for a numerator and denominator without common factors."""
        den, lead = _monic(den)
        num = num / lead if lead.is_Number else sp.cancel(num / lead)
        return cls(_positive_constants(sp.factor(num)), den, **fields)

    def _filter(self) -> Filter:
        return Filter(self.output, self.expr, self.input, ())

    def poles(self) -> list[sp.Expr]:
        """Poles with multiplicity."""
        return self._filter().poles() if self.den.has(z) else []

    def zeros(self) -> list[sp.Expr]:
        """Finite zeros with multiplicity."""
        if not self.num.has(z):
            return []
        return self._filter().zeros()

    def dc_gain(self) -> sp.Expr:
        """``H(1)``; ``zoo`` (complex infinity) for an integrator."""
        value = sp.cancel(self.expr.subs(z, 1)) if self.den.subs(z, 1) != 0 else sp.zoo
        return sp.factor(value) if value is not sp.zoo else value

    def impulse_response(self, step: sp.Expr = k) -> sp.Expr:
        """Closed-form response ``h[k]`` to a unit impulse at ``k = 1`` from zero state.

        Example:
            >>> import ctopt
            >>> tf = ctopt.transfer_function(ctopt.zoo.get("adagrad"), output="s", input="g**2")
            >>> tf.impulse_response()
            1
        """
        try:
            return self._filter().impulse_response(step) if self.den.has(z) else \
                _inverse(self.expr, step)
        except DesignError:
            return _inverse(self.expr, step)

    def step_response(self, step: sp.Expr = k) -> sp.Expr:
        """Closed-form response ``s[k]`` to a unit step from zero state (the generalised bias
        correction of a moment filter)."""
        try:
            return self._filter().step_response(step)
        except DesignError:
            return _inverse(self.expr * z / (z - 1), step)

    def numeric(self, **values: float) -> tuple[np.ndarray, np.ndarray]:
        """Numerator and denominator coefficients (highest power first) for ``values``
        (the design's defaults for hyperparameters not given)."""
        subs = _numeric_values(self.expr.free_symbols - {z}, self.design, values)
        return _coefficients(sp.expand(self.num.xreplace(subs))), _coefficients(
            sp.expand(self.den.xreplace(subs))
        )

    def frequency_response(self, w, **values: float) -> np.ndarray:
        """Complex ``H(e^{jw})`` at the angular frequencies ``w`` (radians per step).

        Example:
            >>> import ctopt
            >>> tf = ctopt.transfer_function(ctopt.zoo.get("adam"), output="v", input="g**2")
            >>> float(abs(tf.frequency_response([0.0])[0]))
            1.0
        """
        num, den = self.numeric(**values)
        ez = np.exp(1j * np.asarray(w, dtype=float))
        return np.polyval(num, ez) / np.polyval(den, ez)

    def to_control(self, **values: float):
        """A ``control.TransferFunction`` with ``dt=1``."""
        import control

        num, den = self.numeric(**values)
        return control.tf(num, den, dt=1)

    def to_sympy(self):
        """A ``sympy.physics.control.TransferFunction`` in ``z``."""
        from sympy.physics.control import TransferFunction as SympyTF

        return SympyTF(self.num, self.den, z)

    def subs(self, **values: float | sp.Expr) -> TransferFunction:
        """Substitute symbols by name (numbers are validated against the design's domains).

        Example:
            >>> import ctopt
            >>> tf = ctopt.transfer_function(ctopt.zoo.get("adam"), output="m", input="g")
            >>> tf.subs(beta1=0.5).expr
            0.5*z/(z - 0.5)
        """
        table = {s.name: s for s in self.expr.free_symbols | self.offset.free_symbols}
        hyper = self.design.hyperparameters if self.design is not None else {}
        subs = {}
        for name, value in values.items():
            if name not in table:
                raise HyperparameterError(f"{name!r} does not appear in {self.expr}")
            if name in hyper and not isinstance(value, sp.Basic):
                value = hyper[name].check(value)
            subs[table[name]] = value
        return TransferFunction.from_expr(
            self.expr.subs(subs), input=self.input, output=self.output, design=self.design,
            time_varying=self.time_varying, offset=self.offset.subs(subs),
        )

    def __str__(self) -> str:
        return f"H_{self.output}(z) = {self.expr}   (input {self.input})"

    def _repr_latex_(self) -> str:
        return (rf"$H_{{{sp.latex(sp.Symbol(self.output))}}}(z) = {sp.latex(self.expr)}"
                rf"\quad\text{{from }} {sp.latex(self.input)}$")


def _output_name(design: Design, output: str | None) -> str:
    names = list(design.state_names)
    if output is None:
        return names[0] if names else "theta"
    if output != "theta" and output not in names:
        raise DesignError(
            f"unknown output {output!r} for design {design.name!r}; outputs: {names + ['theta']}"
        )
    return output


@timed("transfer function")
def transfer_function(design: Design, output: str | None = None,
                      input: str | sp.Expr | None = None, **fixed: float) -> TransferFunction:
    """The transfer function from the signal ``input`` to the state ``output`` (or ``"theta"``).

    ``input`` is written in the design's terms (a state in it means its latest value, as in the
    box); ``None`` picks the signal the box feeds into ``output``. ``fixed`` substitutes
    hyperparameter values before the derivation.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.get("adabelief")
        >>> ctopt.transfer_function(d, output="s", input="(g - m)**2").expr
        z*(1 - beta2)/(-beta2 + z)
    """
    check_size("transfer function", states=len(design.states))
    if fixed:
        design = _fix(design, fixed)
    return _transfer_function(build_box(design), output, input)


def _transfer_function(box: Box, output: str | None, input) -> TransferFunction:
    design = box.design
    output = _output_name(design, output)
    keep_theta = output == "theta"
    if input is None:
        signal = detect_signal(box, output) if output != "theta" else g
        if signal is None:
            raise DesignError(f"no single input signal feeds {output!r}; pass input=...")
    else:
        signal = parse_signal(design, input)
    try:
        names = _relevant(box, output, keep_theta, signal)
    except DesignError:
        found = detect_signal(box, output) if output != "theta" else None
        raise DesignError(
            f"the input {signal} does not appear in the equations that feed {output!r} in design "
            f"{design.name!r}" + (f"; the signal fed to it is {found}" if found is not None else "")
        ) from None
    lin = linear_part(box, signal, names, keep_theta)
    check_size("transfer function", states=len(names))
    i = names.index(output)
    num, den = _siso(lin.A, lin.B, i)
    records = [r for r in lin.time_varying if r.where in names] + _corrections(design, output)
    return TransferFunction.from_parts(
        num, den, input=signal, output=output, design=design,
        time_varying=tuple(records), offset=lin.offset[i],
    )


def _siso(A: sp.Matrix, B: sp.Matrix, i: int) -> tuple[sp.Expr, sp.Expr]:
    """Numerator and denominator of ``z * e_i^T (zI - A)^{-1} B``, common factors removed."""
    M = z * sp.eye(A.shape[0]) - A
    den = sp.expand(M.det(method="berkowitz"))
    num = sp.expand(z * (M.adjugate(method="berkowitz")[i, :] * B)[0])
    try:
        common = sp.gcd(num, den)
    except sp.PolynomialError:  # Piecewise gains (clipping): let cancel treat them as atoms
        return sp.fraction(sp.cancel(num / den))
    if common.has(z):
        num, den = sp.quo(num, common, z), sp.quo(den, common, z)
    return num, den


def _corrections(design: Design, output: str) -> list[TimeVarying]:
    """Time-varying factors of the lines that read ``output`` directly (e.g. ``v_hat``)."""
    if output == "theta":
        return []
    sym = sp.Symbol(output, real=True)
    out: list[TimeVarying] = []
    per_step: dict[sp.Symbol, sp.Expr] = {}  # temporaries of k and hyperparameters only
    signals = {g, theta} | {s.symbol for s in design.states}
    for a in design.assignments:
        expr = a.expr.xreplace(per_step)
        if a.kind == "let" and not (expr.free_symbols & signals):
            per_step[a.target] = expr
        if a.kind == "let" and expr.has(sym) and expr.has(k):
            try:
                asymptotic(expr, design, a.target.name, out)
            except UnsupportedError:
                continue
    return out


@timed("transfer functions")
def transfer_functions(design: Design) -> dict[str, TransferFunction]:
    """Every state's transfer function from the signal the box feeds into it (states with no
    single linear input are left out), plus ``theta``'s from ``g`` when the update is linear.

    Example:
        >>> import ctopt
        >>> sorted(transfer_functions(ctopt.zoo.get("adam")))
        ['m', 'v']
    """
    check_size("transfer function", states=len(design.states))
    box = build_box(design)
    out = {}
    for name in [*design.state_names, "theta"]:
        try:
            out[name] = _transfer_function(box, name, None)
        except (UnsupportedError, DesignError):
            continue
    return out


# ---------------------------------------------------------------------------------- state space
@dataclass(frozen=True)
class StateSpace:
    """Symbolic ``(A, B, C, D)`` of a design's linear part in python-control's form
    ``xi_{k+1} = A xi_k + B u_k``, ``y_k = C xi_k + D u_k`` with ``xi_k = x_{k-1}`` (the states
    before step k). The box's own current-input form is ``x_k = A x_{k-1} + B u_k``; outputs are
    the states themselves, so ``C = A`` and ``D = B`` row-wise.

    Example:
        >>> import ctopt
        >>> ss = ctopt.state_space(ctopt.zoo.get("adam"), input="g")
        >>> ss.state_names, ss.A
        (['m'], Matrix([[beta1]]))
        >>> ss.D
        Matrix([[1 - beta1]])
    """

    A: sp.Matrix
    B: sp.Matrix
    C: sp.Matrix
    D: sp.Matrix
    state_names: list[str]
    input: sp.Expr
    design: Design | None = field(default=None, repr=False, compare=False)
    offset: sp.Matrix | None = None

    def to_control(self, **values: float):
        """A ``control.StateSpace`` with ``dt=1``."""
        import control

        syms = set().union(*(m.free_symbols for m in (self.A, self.B, self.C, self.D)))
        subs = _numeric_values(syms, self.design, values)
        num = [np.array(m.xreplace(subs), dtype=float) for m in (self.A, self.B, self.C, self.D)]
        return control.ss(*num, dt=1)

    def transfer_function(self, output: str) -> TransferFunction:
        """The transfer function to one named state."""
        i = self.state_names.index(output)
        n = len(self.state_names)
        x = (z * sp.eye(n) - self.A).LUsolve(self.B)
        return TransferFunction.from_expr(z * x[i], input=self.input, output=output,
                                          design=self.design)

    def _repr_latex_(self) -> str:
        return (rf"$A = {sp.latex(self.A)},\ B = {sp.latex(self.B)},\ C = {sp.latex(self.C)},"
                rf"\ D = {sp.latex(self.D)}$")


@timed("state space")
def state_space(design: Design, input: str | sp.Expr | None = None,
                outputs: list[str] | None = None, **fixed: float) -> StateSpace:
    """Symbolic state space of the design's linear part from one input signal (default ``g``)
    to the states it reaches (or ``outputs``).

    Example:
        >>> import ctopt
        >>> ctopt.state_space(ctopt.zoo.get("adamssm"), input="g**2").state_names
        ['v', 'v_1']
    """
    check_size("state space", states=len(design.states))
    if fixed:
        design = _fix(design, fixed)
    signal = parse_signal(design, input if input is not None else "g")
    box = build_box(design)
    targets = outputs or [n for n in design.state_names]
    keep_theta = "theta" in targets
    names: list[str] = []
    for out in targets:
        try:
            found = _relevant(box, _output_name(design, out), keep_theta, signal)
            if not outputs:
                linear_part(box, signal, found)  # states the input reaches nonlinearly drop out
        except (DesignError, UnsupportedError):
            if outputs:
                raise
            continue
        names += [n for n in found if n not in names]
    if not names:
        raise DesignError(f"the input {signal} reaches no state of design {design.name!r}")
    names = [n for n in box.order if n in names]
    lin = linear_part(box, signal, names, keep_theta)
    return StateSpace(lin.A, lin.B, lin.A, lin.B, names, signal, design, lin.offset)
