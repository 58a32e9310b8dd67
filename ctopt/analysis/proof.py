"""A proof: the ordered steps that led to an analysis result.

Every analysis result (stability conditions, Lyapunov certificates, filter validity, rates)
carries a :class:`Proof` so that a user can read *why* a claim holds. A step is a sentence and,
optionally, sympy expressions (an equation, a matrix, a boolean). A step can be marked
``numeric``: evidence from sampling or floating point, never presented as a symbolic proof.

Example:
    >>> import sympy as sp
    >>> x = sp.Symbol("x")
    >>> p = Proof("x squared is nonnegative")
    >>> p.step("square of a real", x**2 >= 0)
    >>> print(p)
    Proof: x squared is nonnegative
      1. square of a real: x**2 >= 0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import sympy as sp

__all__ = ["Proof", "Step"]


@dataclass(frozen=True)
class Step:
    """One step of a proof: a sentence, the expressions it is about, and whether it is
    numeric evidence rather than a symbolic argument."""

    text: str
    exprs: tuple[sp.Basic, ...] = ()
    numeric: bool = False

    def __str__(self) -> str:
        tag = "[numeric] " if self.numeric else ""
        if not self.exprs:
            return tag + self.text
        shown = "; ".join(_plain(e) for e in self.exprs)
        return f"{tag}{self.text}: {shown}"

    def latex(self) -> str:
        tag = r"\textbf{[numeric]}\ " if self.numeric else ""
        text = tag + r"\text{" + _escape(self.text) + "}"
        if not self.exprs:
            return text
        return text + r":\ " + r",\quad ".join(_latex(e) for e in self.exprs)


@dataclass
class Proof:
    """Ordered proof steps with a title; prints in a terminal, renders as LaTeX in Jupyter.

    Example:
        >>> p = Proof("demo")
        >>> p.step("a numeric check", numeric=True)
        >>> p.numeric
        True
    """

    title: str
    steps: list[Step] = field(default_factory=list)

    def step(self, text: str, *exprs: sp.Basic, numeric: bool = False) -> None:
        """Append a step (a sentence and optional sympy expressions)."""
        self.steps.append(Step(text, tuple(sp.sympify(e) for e in exprs), numeric))

    def extend(self, other: Proof, prefix: str | None = None) -> None:
        """Append every step of ``other`` (optionally prefixed, e.g. by a sub-result's name)."""
        for s in other.steps:
            text = f"{prefix}: {s.text}" if prefix else s.text
            self.steps.append(Step(text, s.exprs, s.numeric))

    @property
    def numeric(self) -> bool:
        """Whether any step is numeric evidence rather than a symbolic argument."""
        return any(s.numeric for s in self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __str__(self) -> str:
        lines = [f"Proof: {self.title}"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Proof({self.title!r}, {len(self.steps)} steps)"

    def _repr_latex_(self) -> str:
        rows = [r"\textbf{Proof: " + _escape(self.title) + "}"]
        rows += [rf"{i}.\ {s.latex()}" for i, s in enumerate(self.steps, 1)]
        return r"$\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}$"


def _plain(expr: sp.Basic) -> str:
    if isinstance(expr, sp.MatrixBase):
        return str(expr.tolist())
    return str(expr)


def _latex(expr: sp.Basic) -> str:
    return sp.latex(expr)


def _escape(text: str) -> str:
    for ch, rep in (("\\", r"\backslash "), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                    ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(ch, rep)
    return text


def join_lines(items: Iterable[str]) -> str:
    """Join readable condition strings for messages."""
    return "; ".join(items)
