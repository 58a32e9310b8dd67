"""Report sections: the analyses of a design at given values (transfer functions, moment-filter
validity, closed-loop stability, Lyapunov certificate), each with verdicts and proofs, rendered
for a terminal (``ctopt show``/``check``) and as Markdown (``ctopt report``).

Example:
    >>> import ctopt
    >>> from ctopt.report.sections import analyze
    >>> [s.title for s in analyze(ctopt.zoo.get("sgd"), include=["transfer"])]
    ['Transfer functions']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..design import Design
from ..errors import CtoptError, OptionError

__all__ = ["Section", "analyze"]



@dataclass
class Section:
    """One part of a report: a title, text blocks, optional LaTeX, verdicts and proofs.

    ``verdicts`` lists ``(condition name, holds)`` with ``holds`` True, False or None (undecided).

    Example:
        >>> s = Section("Stability", ["0 < lr*h < 2"], verdicts=[("closed loop", True)])
        >>> "holds" in s.as_markdown()
        True
    """

    title: str
    text: list[str] = field(default_factory=list)
    latex: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, bool | None]] = field(default_factory=list)
    proofs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_text(self, proofs: bool = True) -> str:
        """Terminal rendering."""
        lines = [f"== {self.title} =="]
        lines += self.text
        for name, ok in self.verdicts:
            lines.append(f"  [{_mark(ok)}] {name}")
        lines += [f"  note: {n}" for n in self.notes]
        if proofs:
            for name, proof in self.proofs:
                lines += ["", f"-- proof: {name} --", proof.rstrip()]
        return "\n".join(lines)

    def as_markdown(self, proofs: bool = True) -> str:
        """Markdown rendering (LaTeX in ``$$`` blocks, proofs in collapsible details)."""
        out = [f"## {self.title}", ""]
        for t in self.text:
            out += ["```text", t.rstrip(), "```", ""]
        for tex in self.latex:
            out += ["$$", tex.strip().strip("$"), "$$", ""]
        if self.verdicts:
            out += ["| condition | verdict |", "|---|---|"]
            out += [f"| {_md(name)} | {_word(ok)} |" for name, ok in self.verdicts]
            out.append("")
        out += [f"> {_md(n)}" for n in self.notes]
        if self.notes:
            out.append("")
        if proofs:
            for name, proof in self.proofs:
                out += [f"<details><summary>Proof: {name}</summary>", "", "```text",
                        proof.rstrip(), "```", "", "</details>", ""]
        return "\n".join(out)


def _mark(ok: bool | None) -> str:
    return {True: "holds", False: "FAILS", None: "undecided"}[ok]


def _md(text: str) -> str:
    """``text`` safe inside Markdown prose or a table cell (``*`` is not emphasis)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")


def _word(ok: bool | None) -> str:
    return {True: "holds", False: "**fails**", None: "undecided"}[ok]


_ANALYSES = ("transfer", "validity", "stability", "lyapunov", "sharpness")


def analyze(
    design: Design,
    values: Mapping[str, float] | None = None,
    *,
    include: Iterable[str] = _ANALYSES,
    curvature: float | None = None,
    frozen: Mapping[str, float] | None = None,
) -> list[Section]:
    """The analyses of ``design`` at hyperparameter ``values`` (defaults otherwise), as report
    sections: ``"transfer"`` (transfer functions of its moments), ``"validity"`` (moment-filter
    validity), ``"stability"`` (closed loop on ``h*theta**2/2``: Jury conditions; with
    ``curvature`` the verdict at that ``h``, else the range of ``h`` where it holds; ``frozen``
    gives values to frozen preconditioner factors such as ``r``), ``"lyapunov"`` (a certificate
    for that closed loop) and ``"sharpness"`` (the critical preconditioned sharpness, the adaptive
    edge of stability). ``"stability"`` implies ``"validity"``.

    Example:
        >>> import ctopt
        >>> [s.title for s in analyze(ctopt.zoo.get("adam"), include=["transfer"])]
        ['Transfer functions']
    """
    include = set(include)
    unknown = include - set(_ANALYSES)
    if unknown:
        raise OptionError(f"unknown analyses {sorted(unknown)}; known: {list(_ANALYSES)}")
    values = design.check_values(**dict(values or {}))
    given = {n: v for n, v in values.items() if v != design.defaults[n]}
    sections = []
    if "transfer" in include:
        sections.append(_transfer_section(design, values))
    if include & {"validity", "stability"}:
        sections.append(_validity_section(design, given))
    if include & {"stability", "lyapunov"}:
        sections += _closed_loop_sections(design, values, curvature, include, frozen)
    if "sharpness" in include:
        sections.append(_sharpness_section(design, values))
    return sections


def _sharpness_section(design: Design, values: Mapping[str, float]) -> Section:
    """The critical sharpness: where full-batch training settles (see docs/edge_of_stability)."""
    import ctopt

    s = Section("Critical sharpness (adaptive edge of stability)")
    off = {n: 0.0 for n, v in values.items() if v == 0}
    try:
        cs = ctopt.critical_sharpness(design, **off)
        value = cs.value(**{n: v for n, v in values.items() if n not in cs.fixed})
    except CtoptError as exc:
        s.notes.append(f"no critical sharpness: {exc}")
        return s
    s.text.append(str(cs))
    s.text.append(f"at these values: lambda_max(D^-1 H) < {value:.6g}; full-batch training is "
                  "expected to settle there (measure it with ctopt.SharpnessMonitor)")
    s.latex.append(cs._repr_latex_())
    s.notes.append(f"derived: {cs.kind}")
    s.proofs.append(("critical sharpness", str(cs.proof)))
    return s


def _transfer_section(design: Design, values: Mapping[str, float]) -> Section:
    from ..analysis.transfer import transfer_functions

    s = Section("Transfer functions")
    internal = {s for f in design.filters for s in f.states[1:]}  # realisation states
    tfs = {n: tf for n, tf in transfer_functions(design).items() if n not in internal}
    if not tfs:
        s.notes.append(f"{design.name} has no linear moment filter (its states do not follow "
                       "a linear recursion of one input signal).")
    off = {n: 0 for n, v in values.items() if v == 0}  # features switched off
    used = set()
    for tf in tfs.values():
        present = {n: 0 for n in off if sp.Symbol(n, real=True) in tf.expr.free_symbols}
        if present:
            tf = tf.subs(**present)
            used |= set(present)
        lines = [str(tf)]
        try:
            lines.append(f"  poles {tf.poles()}, zeros {tf.zeros()}, DC gain {tf.dc_gain()}")
        except CtoptError as exc:  # roots not in closed form
            lines.append(f"  ({exc})")
        for tv in tf.time_varying:
            lines.append(f"  time-varying factor (outside the LTI map): {tv}")
        if tf.offset != 0:
            lines.append(f"  constant input (not filtered): {tf.offset}")
        s.text.append("\n".join(lines))
        s.latex.append(tf._repr_latex_())
    if used:
        s.notes.append(f"with {', '.join(f'{n} = 0' for n in sorted(used))} (switched off)")
    return s


def _validity_section(design: Design, values: Mapping[str, float]) -> Section:
    from ..analysis.validity import filter_validity

    s = Section("Moment-filter validity")
    fv = filter_validity(design, **values)
    for f in fv.filters:
        for check, status in f.status.items():
            if status.startswith("not required"):
                continue
            verdict = {"holds": True, "marginal": True, "violated": False}.get(status)
            note = " (marginal: an accumulator)" if status == "marginal" else ""
            how = f.how.get(check, "")
            cond = f.conditions[check]
            shown = "" if str(cond) == "numeric_certificate" else f": {cond}"
            s.verdicts.append((f"{f.name} ({f.kind}): {check}{shown}{note} [{how}]", verdict))
    for gd in fv.guards:
        verdict = {"holds": True, "violated": False}.get(gd.status)
        s.verdicts.append((f"{gd.where}: {gd.kind} of {gd.arg} nonnegative ({gd.how})", verdict))
    for name, why in fv.skipped.items():
        s.notes.append(f"{name}: not a linear filter ({why})")
    if not fv.filters:
        s.notes.append("no moment filter to check")
    s.proofs.append(("moment-filter validity", str(fv.proof)))
    return s


def _closed_loop_sections(design, values, curvature, include, frozen=None
                           ) -> list[Section]:
    import sympy as sp

    import ctopt

    taken = set(design.hyperparameters) | set(design.state_names) | \
        {r.name for r in design.reductions}
    name = next(n for n in ("h", "h_", "curvature") if n not in taken)
    s = Section(f"Closed-loop stability (quadratic loss, curvature {name})")
    out = [s]
    # a hyperparameter at 0 switches a feature off (weight decay, dampening, clipping): fix it
    off = {n: 0.0 for n, v in values.items() if v == 0}
    try:
        loop = ctopt.closed_loop(design, curvature=name, **off)
    except CtoptError as exc:
        s.notes.append(f"no linear closed loop: {exc}")
        return out
    cond = ctopt.stability_conditions(loop)
    if off:
        s.notes.append(f"derived with {', '.join(f'{n} = 0' for n in off)} (switched off)")
    s.text += [str(loop), str(cond)]
    s.latex.append(cond._repr_latex_())
    h = next((p for p in cond.parameters if p.name == name), sp.Symbol(name, real=True))
    unknown = sorted(set(frozen or {}) - {str(r) for r in loop.frozen})
    if unknown:
        raise OptionError(f"--frozen names {unknown} are not frozen factors of this closed loop; "
                         f"its frozen factors: {sorted(map(str, loop.frozen)) or 'none'}")
    fixed = {p: values[p.name] for p in cond.parameters if p.name in values}
    fixed |= {p: v for p in cond.parameters for n, v in (frozen or {}).items() if p.name == n}
    at_values = cond.expr.subs(fixed)
    what, point = name, dict(fixed)
    rs = [r for r in loop.frozen if r in at_values.free_symbols]
    power = next((p for p in (-1, 1) if len(rs) == 1 and _ratio_only(loop, h, rs[0], p)), None)
    if power is not None:
        # the loop depends on h and r only through h/r (or h*r): r = 1, h = the effective value
        r = rs[0]
        at_values = at_values.subs(r, 1)
        point[r] = 1.0
        what = (f"the effective curvature {name}{'/' if power < 0 else '*'}{r} ({r} = "
                f"{loop.frozen[r]}, frozen)")
    free = at_values.free_symbols - {h}
    if free:
        missing = sorted(map(str, free))
        hint = (f"; give the frozen quantities, e.g. --frozen {missing[0]}=1"
                if set(missing) & {str(r) for r in loop.frozen} else "")
        s.verdicts.append((f"closed loop stable (undecided: depends on {missing} too{hint})",
                           None))
    elif curvature is not None:
        ok = bool(at_values.subs(h, curvature))
        rho = _spectral_radius(loop, point | {h: curvature})
        text = f"closed loop stable at {what} = {curvature:g} (Jury conditions evaluated"
        if rho is not None:
            text += f"; numeric spectral radius {rho:.6g}"
            if (rho < 1) != ok:
                text += ", DISAGREES: not stable"
                ok = False
        s.verdicts.append((text + ")", ok))
    else:
        region = _region(at_values, h)
        if region is None:
            s.verdicts.append((f"closed loop stable for {what} in some range (undecided: the "
                               "region of the Jury conditions did not reduce to intervals)", None))
        else:
            s.verdicts.append((f"closed loop stable for {what} in {_show_set(region)}",
                               region != sp.EmptySet))
    s.proofs.append(("closed-loop stability (Jury)", str(cond.proof)))
    if "lyapunov" in include:
        out.append(_lyapunov_section(loop, values))
    return out


def _ratio_only(loop, h, r, power: int = -1) -> bool:
    """Whether the loop's characteristic polynomial depends on ``h`` and ``r`` only through
    ``h*r**power`` (``h/r`` for -1: scaling ``h`` by ``t`` and ``r`` by ``t**-power`` scales the
    polynomial, not its roots)."""
    import sympy as sp

    t = sp.Dummy("t", positive=True)
    p = sp.expand(loop.charpoly())
    q = sp.expand(p.xreplace({h: t * h, r: t ** (-power) * r}))
    ratio = sp.cancel(q / p)
    return not ratio.has(sp.Symbol("z"), h, r)


def _spectral_radius(loop, point) -> float | None:
    """``max |eig(A)|`` at ``point`` (every symbol of ``A`` given), else None."""
    import numpy as np

    A = loop.A.xreplace({s: v for s, v in point.items()})
    if A.free_symbols:
        return None
    return float(np.max(np.abs(np.linalg.eigvals(np.array(A, dtype=float)))))


def _region(at_values, h):
    """The set of positive ``h`` where ``at_values`` holds, or None when sympy cannot reduce it
    (within a time limit)."""
    import sympy as sp

    from ..limits import time_limit

    if at_values in (sp.true, sp.false):
        region = sp.Reals if at_values else sp.EmptySet
    else:
        try:
            with time_limit(20, "stability region"):
                region = at_values.as_set()
        except (CtoptError, NotImplementedError, TypeError, ValueError):
            return None
    return region.intersect(sp.Interval.open(0, sp.oo))


def _show_set(interval) -> str:
    import sympy as sp

    if isinstance(interval, sp.Interval):
        left = "[" if not interval.left_open else "("
        right = "]" if not interval.right_open else ")"
        return f"{left}{float(interval.start):.6g}, {float(interval.end):.6g}{right}"
    return str(interval)


def _lyapunov_section(loop, values) -> Section:
    import ctopt

    s = Section("Lyapunov certificate")
    try:
        cert = ctopt.lyapunov(loop, samples=300)
    except CtoptError as exc:
        s.notes.append(f"no certificate: {exc}")
        return s
    s.text.append(str(cert))
    s.verdicts.append((f"V(x) = x^T P x certifies the closed loop (P > 0 proven: {cert.method})"
                       if cert.proven else
                       "V(x) = x^T P x certifies the closed loop (undecided: P > 0 sampled only)",
                       True if cert.proven else None))
    if hasattr(cert, "_repr_latex_"):
        s.latex.append(cert._repr_latex_())
    s.proofs.append(("Lyapunov certificate", str(cert.proof)))
    return s
