"""The bodies of the ``ctopt`` sub-commands (list, show, check, plot, export, bench, report), each
``(args, design, values) -> exit code``, and the table :data:`COMMANDS` that ``main`` dispatches on.

Example:
    >>> from ctopt.cli.commands import COMMANDS
    >>> sorted(COMMANDS)
    ['bench', 'check', 'export', 'list', 'plot', 'report', 'show']
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .. import zoo
from ._common import EXIT_FAILED, EXIT_OK, EXIT_UNDECIDED, _BadInput, _fail, _Unavailable


# ----------------------------------------------------------------------------- commands
def _cmd_list(args, design, values) -> int:
    rows = [("name", "states", "hyperparameters", "description")]
    for name in zoo.names():
        d = zoo.get(name)
        doc = (d.doc or "").strip().splitlines()[0] if d.doc else ""
        rows.append((name, ", ".join(d.state_names) or "-", ", ".join(d.hyperparameters), doc))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    print(f"\n{len(rows) - 1} designs. 'ctopt show NAME' prints one.")
    return EXIT_OK


def _cmd_show(args, design, values) -> int:
    from .. import report

    print(design if not values else design.with_defaults(**values))
    for section in report.analyze(design, values, include=("transfer", "stability")):
        print()
        print(section.as_text(proofs=False))
    return EXIT_OK


def _cmd_check(args, design, values) -> int:
    from .. import report

    sections = report.analyze(design, values, include=("stability", "lyapunov"),
                              curvature=args.curvature, frozen=dict(args.frozen))
    verdicts = [v for s in sections for v in s.verdicts]
    for section in sections:
        print(section.as_text(proofs=not args.no_proof))
        print()
    failed = [name for name, ok in verdicts if ok is False]
    unknown = [name for name, ok in verdicts if ok is None]
    summary = f"{len(verdicts) - len(failed) - len(unknown)} of {len(verdicts)} conditions hold"
    if unknown:
        summary += f"; undecided: {', '.join(unknown)}"
    if failed:
        print(f"{summary}; FAILED: {', '.join(failed)}")
        return EXIT_FAILED
    print(summary + ".")
    return EXIT_UNDECIDED if unknown else EXIT_OK


def _cmd_plot(args, design, values) -> int:
    from .. import report

    output = Path(args.output or f"{design.name}-{args.kind}.png")
    report.save_plot(design, args.kind, output, values)
    print(f"wrote {output}")
    return EXIT_OK


def _cmd_export(args, design, values) -> int:
    output = Path(args.output or f"{design.name}_optimizer.py")
    if output.suffix != ".py":
        raise _BadInput(f"--output must name a .py file, got {str(output)!r}")
    export_source = _feature("export_source", "the exporter")
    d = design.with_defaults(**values) if values else design
    from ..export.source import class_name
    from ..export.verify import ExportCheckError, check_module

    # written beside the target, imported and checked against the oracle, then moved into place
    draft = output.with_name(f".{output.stem}-{os.getpid()}.py")
    try:
        export_source(d, draft)
        error = check_module(draft, d, class_name(d))
        os.replace(draft, output)
    except ExportCheckError as exc:
        _fail(f"{exc}; nothing was written")
        return EXIT_FAILED
    finally:
        draft.unlink(missing_ok=True)
    print(f"wrote {output}: class {class_name(d)}, a torch.optim.Optimizer that needs torch "
          f"only (from {output.stem} import {class_name(d)}); it imports and equals the "
          f"float64 oracle over 5 steps (relative error {error:.1e})")
    return EXIT_OK


def _cmd_bench(args, design, values) -> int:
    from ..bench import bench

    designs = design  # the designs named on the command line, loaded (and checked) by main
    bench(designs, numel=args.numel, steps=args.steps, backend=args.backend, out=sys.stdout)
    return EXIT_OK


def _cmd_report(args, design, values) -> int:
    from .. import report

    out = Path(args.output or f"report-{design.name}")
    path = report.write_report(
        design, out, values=values, epochs=args.epochs, seeds=args.seeds,
        training=not args.no_training, progress=not args.quiet,
    )
    text = path.read_text()
    if "## Summary\n" in text:
        summary = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
        plain = re.sub(r"\*\*([^*]+)\*\*|`([^`]+)`", lambda m: m.group(1) or m.group(2),
                       summary.strip())
        print(plain.replace("\\*", "*").replace("\\|", "|"))
    print(f"wrote {path} (figures in {path.parent / 'figures'})")
    return EXIT_OK


COMMANDS: dict[str, Callable[..., int]] = {
    "list": _cmd_list, "show": _cmd_show, "plot": _cmd_plot, "check": _cmd_check,
    "export": _cmd_export, "bench": _cmd_bench, "report": _cmd_report,
}
DESIGN_COMMANDS = ("show", "plot", "check", "export", "report")


def _feature(name: str, what: str):
    """A public ctopt feature, or a clear error when this installation lacks it."""
    import ctopt

    try:
        return getattr(ctopt, name)
    except (ImportError, AttributeError) as exc:
        raise _Unavailable(f"{what} (ctopt.{name}) is not available: {exc}") from None
