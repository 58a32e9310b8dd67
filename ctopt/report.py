"""``ctopt report``: one folder that tells a design's whole story.

The report holds the design's equations, the transfer functions of its moment filters, figures
(Bode, pole-zero, root locus, stability region), its stability and validity conditions with their
proofs, the exported standalone optimizer, and a quick training comparison against Adam on real
data (scikit-learn's bundled digits). The same analysis feeds ``ctopt show`` and ``ctopt check``.

Example:
    >>> import ctopt
    >>> from ctopt.report import Section
    >>> print(Section("Equations", ["m <- beta1*m + (1 - beta1)*g"]).as_text())
    == Equations ==
    m <- beta1*m + (1 - beta1)*g
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from .design import Design
from .errors import CtoptError, UnsupportedError

__all__ = ["Section", "analyze", "save_plot", "train_comparison", "bench", "write_report"]


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
            out += [f"| {name} | {_word(ok)} |" for name, ok in self.verdicts]
            out.append("")
        out += [f"> {n}" for n in self.notes]
        if self.notes:
            out.append("")
        if proofs:
            for name, proof in self.proofs:
                out += [f"<details><summary>Proof: {name}</summary>", "", "```text",
                        proof.rstrip(), "```", "", "</details>", ""]
        return "\n".join(out)


def _mark(ok: bool | None) -> str:
    return {True: "holds", False: "FAILS", None: "undecided"}[ok]


def _word(ok: bool | None) -> str:
    return {True: "holds", False: "**fails**", None: "undecided"}[ok]


# ----------------------------------------------------------------------------- training
def train_comparison(design: Design, values: Mapping[str, float] | None = None, *,
                     epochs: int = 10, seeds: int = 3, progress: bool = True):
    """Train the digits CNN of :class:`ctopt.experiments.DigitsTask` with ``design`` (exported
    by ctopt, at ``values``) and with ``torch.optim.Adam``: a three-point lr sweep each (around
    the design's lr; 3e-4, 1e-3, 3e-3 for Adam), then ``seeds`` seeds at the best lr. Returns the
    :class:`ctopt.experiments.Comparison`.

    Example:
        >>> import ctopt
        >>> result = train_comparison(ctopt.zoo.get("adamssm"), epochs=1, seeds=1,
        ...                           progress=False)  # doctest: +SKIP
        >>> sorted(result.best_lr)  # doctest: +SKIP
        ['adam (torch.optim)', 'adamssm (ctopt)']
    """
    import torch

    from .experiments import DigitsTask, OptimizerSpec, compare
    from .export import to_torch

    values = design.check_values(**dict(values or {}))
    exported = to_torch(design.with_defaults(**values))
    lr = values.get("lr", 1e-3)
    mine = f"{design.name} (ctopt)"
    specs = [OptimizerSpec(mine, design.name, {}, (lr / 3, lr, 3 * lr)),
             OptimizerSpec("adam (torch.optim)", "adam", {}, (3e-4, 1e-3, 3e-3))]

    def factory(spec):
        if spec.label == mine:
            return lambda params, lr: exported(params, lr=lr)
        return lambda params, lr: torch.optim.Adam(params, lr=lr)

    import warnings

    with warnings.catch_warnings():  # float(loss) on a graph tensor: harmless, noisy
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        return compare(DigitsTask(epochs=epochs), specs, seeds=seeds, factory=factory,
                       progress=progress)


def _training_markdown(result, epochs: int) -> list[str]:
    seeds = len(next(iter(result.runs.values())))
    return [
        result.table(), "",
        f"A small CNN on scikit-learn's bundled 8x8 digits (1437 training / 360 validation "
        f"images, a fixed stratified split), {epochs} epochs, batch 32. Each optimizer gets a "
        f"three-point learning-rate sweep (seed 0), then {seeds} seed(s) at the best rate; "
        "the metric is the final validation accuracy. A quick check, not a benchmark: see the "
        "experiments page of the docs for the full study.",
    ]


# ----------------------------------------------------------------------------- bench
_TORCH_EQUIVALENT = {
    "sgd": ("SGD", {}),
    "heavy_ball": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "amsgrad": ("Adam", {"amsgrad": True}),
}


def bench(
    designs: Iterable[Design],
    *,
    numel: int = 1 << 22,
    steps: int = 20,
    backend: str = "auto",
    out: TextIO | None = None,
) -> list[dict[str, object]]:
    """Time one optimizer step of each exported design on a float32 tensor of ``numel`` elements
    against torch.optim's own implementation (foreach, and fused where torch has it), medians in
    one process. Returns the rows it prints.

    Example:
        >>> import ctopt
        >>> rows = bench([ctopt.zoo.get("sgd")], numel=1000, steps=2)  # doctest: +SKIP
    """
    import statistics
    import sys

    import torch

    from .export import to_torch

    out = out or sys.stdout

    def median_ms(opt, param) -> float:
        times = []
        for i in range(steps + 3):
            param.grad = grads[i % len(grads)]
            t0 = time.perf_counter()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(numel, generator=gen) for _ in range(2)]
    rows = []
    print(f"{'design':<12} {'path':<22} {'ms/step':>9} {'vs torch':>9}", file=out)
    for d in designs:
        param = torch.nn.Parameter(torch.randn(numel, generator=gen))
        t0 = time.perf_counter()
        opt = to_torch(d)([param], backend=backend)
        param.grad = grads[0]
        opt.step()
        first = time.perf_counter() - t0
        mine = median_ms(opt, param)
        reference = None
        if d.name in _TORCH_EQUIVALENT:
            cls_name, kwargs = _TORCH_EQUIVALENT[d.name]
            cls = getattr(torch.optim, cls_name)
            for variant in ("fused", "foreach"):
                p = torch.nn.Parameter(param.detach().clone())
                try:
                    ref = cls([p], lr=d.defaults["lr"], **kwargs, **{variant: True})
                    ms = median_ms(ref, p)
                except (RuntimeError, TypeError):
                    continue
                rows.append({"design": d.name, "path": f"torch {variant}", "ms": ms})
                print(f"{d.name:<12} {'torch ' + variant:<22} {ms:9.3f} {'':>9}", file=out)
                reference = ms if reference is None else min(reference, ms)
        ratio = f"{mine / reference:8.2f}x" if reference else ""
        label = f"ctopt {backend}"
        rows.append({"design": d.name, "path": label, "ms": mine, "first_step_s": first})
        print(f"{d.name:<12} {label:<22} {mine:9.3f} {ratio:>9}   (first step incl. setup "
              f"{first:.2f} s)", file=out)
    print(f"{numel} float32 elements, median of {steps} steps; ratio against torch's fastest.",
          file=out)
    return rows


# ----------------------------------------------------------------------------- analysis
_ANALYSES = ("transfer", "validity", "stability", "lyapunov")


def analyze(
    design: Design,
    values: Mapping[str, float] | None = None,
    *,
    include: Iterable[str] = _ANALYSES,
    curvature: float | None = None,
) -> list[Section]:
    """The analyses of ``design`` at hyperparameter ``values`` (defaults otherwise), as report
    sections: ``"transfer"`` (transfer functions of its moments), ``"validity"`` (moment-filter
    validity), ``"stability"`` (closed loop on ``h*theta**2/2``: Jury conditions; with
    ``curvature`` the verdict at that ``h``, else the range of ``h`` where it holds) and
    ``"lyapunov"`` (a certificate for that closed loop). ``"stability"`` implies ``"validity"``.

    Example:
        >>> import ctopt
        >>> [s.title for s in analyze(ctopt.zoo.get("adam"), include=["transfer"])]
        ['Transfer functions']
    """
    include = set(include)
    unknown = include - set(_ANALYSES)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}; known: {list(_ANALYSES)}")
    values = design.check_values(**dict(values or {}))
    given = {n: v for n, v in values.items() if v != design.defaults[n]}
    sections = []
    if "transfer" in include:
        sections.append(_transfer_section(design))
    if include & {"validity", "stability"}:
        sections.append(_validity_section(design, given))
    if include & {"stability", "lyapunov"}:
        sections += _closed_loop_sections(design, values, curvature, include)
    return sections


def _transfer_section(design: Design) -> Section:
    from .analysis.transfer import transfer_functions

    s = Section("Transfer functions")
    internal = {s for f in design.filters for s in f.states[1:]}  # realisation states
    tfs = {n: tf for n, tf in transfer_functions(design).items() if n not in internal}
    if not tfs:
        s.notes.append(f"{design.name} has no linear moment filter (its states do not follow "
                       "a linear recursion of one input signal).")
    for tf in tfs.values():
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
    return s


def _validity_section(design: Design, values: Mapping[str, float]) -> Section:
    from .analysis.validity import filter_validity

    s = Section("Moment-filter validity")
    fv = filter_validity(design, **values)
    for f in fv.filters:
        for check, status in f.status.items():
            if status.startswith("not required"):
                continue
            verdict = {"holds": True, "marginal": True, "violated": False}.get(status)
            note = " (marginal: an accumulator)" if status == "marginal" else ""
            s.verdicts.append((f"{f.name} ({f.kind}): {check}: {f.conditions[check]}{note}",
                               verdict))
    for name, why in fv.skipped.items():
        s.notes.append(f"{name}: not a linear filter ({why})")
    if not fv.filters:
        s.notes.append("no moment filter to check")
    s.proofs.append(("moment-filter validity", str(fv.proof)))
    return s


def _closed_loop_sections(design, values, curvature, include) -> list[Section]:
    import sympy as sp

    import ctopt

    s = Section("Closed-loop stability on the quadratic h*theta**2/2")
    out = [s]
    # a hyperparameter at 0 switches a feature off (weight decay, dampening, clipping): fix it
    off = {n: 0.0 for n, v in values.items() if v == 0}
    try:
        loop = ctopt.closed_loop(design, curvature="h", **off)
    except CtoptError as exc:
        s.notes.append(f"no linear closed loop: {exc}")
        return out
    cond = ctopt.stability_conditions(loop)
    if off:
        s.notes.append(f"derived with {', '.join(f'{n} = 0' for n in off)} (switched off)")
    s.text += [str(loop), str(cond)]
    s.latex.append(cond._repr_latex_())
    h = next((p for p in cond.parameters if p.name == "h"), sp.Symbol("h", real=True))
    at_values = cond.expr.subs({p: values[p.name] for p in cond.parameters if p.name in values})
    what = "h"
    frozen = [r for r in loop.frozen if r in at_values.free_symbols]
    if len(frozen) == 1:  # frozen preconditioner r: the loop depends on h/r only
        r = frozen[0]
        c = sp.Symbol("c", positive=True)
        at_values = _divide_out(at_values.subs(h, c * r), r)
        h = c
        what = f"the effective curvature h/{r} ({r} = {loop.frozen[r]}, frozen)"
    free = at_values.free_symbols - {h}
    if free:
        s.verdicts.append((f"closed loop stable (depends on {sorted(map(str, free))} too)", None))
    elif curvature is not None:
        ok = bool(at_values.subs(h, curvature))
        s.verdicts.append((f"closed loop stable at {what} = {curvature:g}", ok))
    else:
        region = at_values.as_set() if at_values not in (sp.true, sp.false) else (
            sp.Reals if at_values else sp.EmptySet)
        region = region.intersect(sp.Interval.open(0, sp.oo))
        s.verdicts.append((f"closed loop stable for {what} in {_show_set(region)}",
                           region != sp.EmptySet))
    s.proofs.append(("closed-loop stability (Jury)", str(cond.proof)))
    if "lyapunov" in include:
        out.append(_lyapunov_section(loop, values))
    return out


def _divide_out(boolean, r):
    """Each inequality ``a < b`` of ``boolean`` rewritten as ``(a - b)/r < 0`` (``r > 0``)."""
    import sympy as sp

    if isinstance(boolean, (sp.And, sp.Or)):
        return boolean.func(*[_divide_out(a, r) for a in boolean.args])
    if isinstance(boolean, sp.core.relational.Relational):
        return boolean.func(sp.simplify((boolean.lhs - boolean.rhs) / r), 0)
    return boolean


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
    s.verdicts.append(("V(x) = x^T P x certifies the closed loop (P > 0 proven symbolically)"
                       if cert.proven else
                       "V(x) = x^T P x certifies the closed loop (P > 0 sampled only)",
                       True if cert.proven else None))
    if hasattr(cert, "_repr_latex_"):
        s.latex.append(cert._repr_latex_())
    s.proofs.append(("Lyapunov certificate", str(cert.proof)))
    return s


# ----------------------------------------------------------------------------- figures
def save_plot(design: Design, kind: str, path: str | Path,
              values: Mapping[str, float] | None = None) -> Path:
    """Draw ``kind`` (``"bode"``, ``"pole-zero"``, ``"root-locus"`` or ``"region"``) for
    ``design`` at ``values`` and save it to ``path`` (format from the suffix).

    Example:
        >>> import ctopt
        >>> save_plot(ctopt.zoo.get("adam"), "bode", "adam-bode.png")  # doctest: +SKIP
        PosixPath('adam-bode.png')
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import plot

    kinds = {"bode": _bode, "pole-zero": _pole_zero, "root-locus": _root_locus, "region": _region}
    if kind not in kinds:
        raise ValueError(f"unknown plot kind {kind!r}; allowed: {', '.join(kinds)}")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise ValueError(f"cannot tell the image format of {str(path)!r}; use .png, .svg or .pdf")
    values = design.check_values(**dict(values or {}))
    fig = kinds[kind](plot, design, values)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the report
def write_report(
    design: Design,
    out: str | Path,
    *,
    values: Mapping[str, float] | None = None,
    epochs: int | None = None,
    seeds: int | None = None,
    training: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``out/report.md`` (with ``out/figures/`` and the exported optimizer's source) for
    ``design`` at hyperparameter ``values``; return the report's path. A stage that cannot be
    completed is reported in the Markdown and on stderr; the others still run.

    Example:
        >>> import ctopt
        >>> path = write_report(ctopt.zoo.get("sgd"), "report-sgd", training=False,
        ...                     progress=False)  # doctest: +SKIP
    """
    import sys
    import traceback

    import sympy as sp
    from tqdm.auto import tqdm

    from . import __version__

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    values = design.check_values(**dict(values or {}))
    tuned = design.with_defaults(**values)
    epochs = epochs or 10
    seeds = seeds or 3
    md: list[str] = [
        f"# ctopt report: `{design.name}`",
        "",
        f"{(design.doc or '').strip()}",
        "",
        f"Generated by `ctopt report {design.name}` (ctopt {__version__}). Sections: summary, "
        "design, transfer functions, moment-filter validity, closed-loop stability, Lyapunov "
        "certificate, figures, exported optimizer, training on real data.",
        "",
    ]

    def stage_design() -> list[str]:
        rows = ["## Design", "", "| hyperparameter | value | allowed | meaning |",
                "|---|---|---|---|"]
        for h in design.hyper:
            rows.append(f"| `{h.name}` | {values[h.name]:g} | {h.domain} | {h.doc} |")
        rows += ["", "The algorithm box (a state on a right-hand side means its latest value):",
                 "", "```text", str(tuned), "```", "", "$$", r"\begin{aligned}"]
        rows += [rf"{sp.latex(e.lhs)} &\leftarrow {sp.latex(e.rhs)} \\" for e in design.equations()]
        rows += [r"\end{aligned}", "$$", ""]
        return rows

    summary: list[str] = []

    def stage_analysis() -> list[str]:
        given = {n: v for n, v in values.items() if v != design.defaults[n]}
        sections = analyze(design, given)
        verdicts = [v for sec in sections for v in sec.verdicts]
        held = sum(ok is True for _, ok in verdicts)
        summary.append(f"- **Conditions**: {held} of {len(verdicts)} hold at these values"
                       + "".join(f"; {_word(ok)}: {name}" for name, ok in verdicts
                                 if ok is not True) + ".")
        summary.extend(f"- **Closed loop** on h*theta**2/2: {name[len('closed loop '):]}."
                       for name, ok in verdicts if ok is True and name.startswith("closed loop"))
        return [sec.as_markdown() for sec in sections]

    def stage_figures() -> list[str]:
        rows = ["## Figures", ""]
        for kind in ("bode", "pole-zero", "root-locus", "region"):
            name = f"figures/{kind}.png"
            try:
                save_plot(design, kind, out / name, values)
                rows += [f"![{kind}]({name})", ""]
            except CtoptError as exc:
                rows += [f"> {kind}: not drawn: {exc}", ""]
        if design.name == "adamssm":  # the region where its second-moment filter is valid
            import matplotlib.pyplot as plt

            from .analysis.validity import plot_adamssm_region

            fig, _ = plot_adamssm_region(beta2_values=(0.9, 0.99, values["beta2"]))
            fig.savefig(out / "figures" / "filter-validity.png", dpi=100)
            plt.close(fig)
            rows += ["![filter validity](figures/filter-validity.png)", ""]
        return rows

    def stage_export() -> list[str]:
        from .export import export_source

        name = f"{design.name}_optimizer.py"
        export_source(tuned, out / name)
        source = (out / name).read_text()
        from .export.source import class_name

        cls = class_name(tuned)
        return ["## Exported optimizer", "",
                f"[`{name}`]({name}) needs torch alone (no ctopt): copy it into a project and use "
                f"it like any `torch.optim` optimizer — `from {Path(name).stem} import {cls}`, "
                f"then `{cls}(model.parameters())`. Its defaults are the values above; its "
                "for-loop, foreach and compiled paths are all generated from the design.", "",
                f"<details><summary>{name} ({len(source.splitlines())} lines)</summary>", "",
                "```python", source.rstrip(), "```", "", "</details>", ""]

    def stage_training() -> list[str]:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from .experiments.figures import plot_curves

        result = train_comparison(tuned, epochs=epochs, seeds=seeds, progress=progress)
        plt.close(plot_curves(result, out / "figures" / "training.png"))
        summary.append("- **Digits, validation accuracy** (mean ± std over seeds): " + "; ".join(
            f"{label} {100 * mean:.2f} % ± {100 * std:.2f}"
            for label, (mean, std) in result.summary().items()) + ".")
        return ["## Training on real data", "", *_training_markdown(result, epochs), "",
                "![training](figures/training.png)", ""]

    stages = [("design", stage_design), ("analysis", stage_analysis),
              ("figures", stage_figures), ("export", stage_export)]
    if training:
        stages.append(("training", stage_training))
    bar = tqdm(stages, desc=f"report on {design.name}", unit="stage", disable=not progress)
    for title, stage in bar:
        bar.set_postfix_str(title)
        try:
            md += stage()
        except Exception as exc:  # a partial report beats none; the reason is written down
            reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"ctopt report: the {title} stage failed: {reason}", file=sys.stderr)
            md += [f"## {title.capitalize()}", "", f"> This stage failed: `{reason}`", ""]
    bar.close()
    if summary:
        at = md.index("## Design")
        md[at:at] = ["## Summary", "", *summary, ""]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _moments(design: Design) -> dict:
    """Transfer functions of the design's moments (realisation states left out; ``theta``'s
    only when there is no moment)."""
    from .analysis.transfer import transfer_functions

    internal = {s for f in design.filters for s in f.states[1:]}
    tfs = {n: tf for n, tf in transfer_functions(design).items() if n not in internal}
    moments = {n: tf for n, tf in tfs.items() if n != "theta"}
    return moments or tfs


def _known(tf, values):
    names = {s.name for s in tf.expr.free_symbols}
    return {n: v for n, v in values.items() if n in names}


def _bode(plot, design, values):
    import matplotlib.pyplot as plt

    tfs = _moments(design)
    if not tfs:
        raise UnsupportedError(f"{design.name} has no linear filter to draw")
    fig, (mag, phase) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 5.2))
    for name, tf in tfs.items():
        plot.bode(tf, ax=(mag, phase), **_known(tf, values))
        mag.get_lines()[-1].set_label(f"H_{name} (from {tf.input})")
    mag.set_title(f"{design.name}: moment filters")
    mag.legend(fontsize=8)
    return fig


def _pole_zero(plot, design, values):
    import matplotlib.pyplot as plt

    tfs = _moments(design)
    if not tfs:
        raise UnsupportedError(f"{design.name} has no linear filter to draw")
    fig, axes = plt.subplots(1, len(tfs), figsize=(4.6 * len(tfs), 4.6), squeeze=False)
    for ax, (name, tf) in zip(axes[0], tfs.items(), strict=True):
        plot.pole_zero(tf, ax=ax, **_known(tf, values))
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"H_{name} (from {tf.input})")
    fig.tight_layout()
    return fig


def _loop_and_range(design, values):
    """The closed loop (features at 0 switched off; a frozen factor r = 1, so h reads h/r) and
    the largest stable curvature at ``values`` (None when unbounded or undecided)."""
    import ctopt

    off = {n: 0.0 for n, v in values.items() if v == 0}
    loop = ctopt.closed_loop(design, curvature="h", **off)
    frozen = {r.name: 1.0 for r in loop.frozen}
    if len(frozen) > 1:
        raise UnsupportedError(f"{design.name}'s closed loop has several frozen factors")
    env = {**{n: v for n, v in values.items() if n not in off}, **frozen}
    env = {n: v for n, v in env.items() if n in {p.name for p in loop.parameters}}
    h = np.geomspace(1e-6, 1e8, 2000)
    radius = np.abs(np.linalg.eigvals(loop.lambdify("h")(h, **env))).max(axis=-1)
    stable = radius < 1
    h_max = float(h[stable].max()) if stable.any() and not stable[-1] else None
    return loop, env, h_max


def _root_locus(plot, design, values):
    import matplotlib.pyplot as plt

    loop, env, h_max = _loop_and_range(design, values)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    top = 1.5 * h_max if h_max else 10.0 / max(values.get("lr", 1.0), 1e-12)
    plot.root_locus(loop, h=np.linspace(0, top, 600), ax=ax, **env)
    if loop.frozen:
        r, expr = next(iter(loop.frozen.items()))
        ax.set_title(f"{ax.get_title()} (h in units of {r} = {expr})", fontsize=9)
    return fig


def _region(plot, design, values):
    import matplotlib.pyplot as plt

    loop, env, _ = _loop_and_range(design, values)
    names = [p.name for p in loop.parameters]
    if "lr" not in names:
        raise UnsupportedError(f"{design.name}'s closed loop has no learning rate to draw")
    y_name = next((h.name for h in design.hyper if h.name in names and h.name != "lr"
                   and h.domain.upper is not None), None)
    at = {**env, "h": 1.0}
    if y_name is None:  # the learning rate alone: draw the (lr, h) plane
        y_name, ys, values = "h", np.linspace(0.0, 4.0, 60), {**values, "h": 1.0}
    else:
        hyper = design.hyperparameters[y_name]
        upper = hyper.domain.upper - (0 if hyper.domain.upper_closed else 1e-3)
        ys = np.linspace(hyper.domain.lower or 0.0, upper, 60)
    lrs = np.geomspace(1e-6, 1e6, 600)
    probe = {**at, y_name: values[y_name]}
    probe.pop("lr")
    radius = np.abs(np.linalg.eigvals(loop.lambdify("lr")(lrs, **probe))).max(axis=-1)
    lr_max = float(lrs[radius < 1].max()) if (radius < 1).any() else 1.0
    xs = np.linspace(lr_max / 200, 1.6 * lr_max, 80)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    rest = {n: v for n, v in at.items() if n not in ("lr", y_name)}
    plot.region(loop, ("lr", xs), (y_name, ys), ax=ax, **rest)
    ax.plot([values["lr"]] if values["lr"] <= xs[-1] else [], [values[y_name]]
            if values["lr"] <= xs[-1] else [], "r*", ms=12, label="these values")
    unit = " (h in units of the frozen r)" if loop.frozen else ""
    where = "" if y_name == "h" else " at h = 1"
    ax.set_title(f"{design.name}: stable region{where}{unit}", fontsize=9)
    return fig
