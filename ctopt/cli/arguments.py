"""The ``ctopt`` command's argument parser: the sub-commands and their options, the value types
that refuse bad input with a named error, and each design's hyperparameters as options.

Example:
    >>> from ctopt.cli.arguments import build_parser
    >>> build_parser().parse_args(["list"]).command
    'list'
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

from .. import zoo
from ..bench import MAX_NUMEL, MAX_STEPS
from ..design import Design, Hyperparameter
from ..errors import CtoptError
from ..report import MAX_EPOCHS, MAX_SEEDS

PLOT_KINDS = ("bode", "pole-zero", "root-locus", "region")  # = ctopt.report.figures.KINDS

_DESCRIPTION = """\
ctopt: an optimizer is a small dynamical system. Derive a design's transfer functions, prove
when it is stable, draw it, and compile it into a torch optimizer.

The main job:  ctopt report            (a Markdown report on AdamSSM in ./report-adamssm)
"""

_HYPER_HELP = (
    "Every hyperparameter of the design is an option: --NAME VALUE (e.g. --beta2 0.99); "
    "'ctopt {command} NAME --help' lists them with their allowed ranges."
)



# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ctopt`` command (without per-design hyperparameter options,
    which are added once the design is known).

    Example:
        >>> build_parser().parse_args(["plot", "adam", "--kind", "bode"]).kind
        'bode'
    """
    parser = argparse.ArgumentParser(
        prog="ctopt",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'ctopt COMMAND --help' for a command's options.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ctopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("list", help="List the zoo's designs.", description="List the zoo's designs.")

    def design_command(name: str, help_: str, *, default: str | None = None):
        description = textwrap.fill(help_, 90) + "\n\n" + textwrap.fill(
            _HYPER_HELP.format(command=name), 90
        )
        p = sub.add_parser(
            name, help=help_, description=description,
            add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
        nargs_help = "a zoo design (see 'ctopt list') or a design file (.json)"
        if default:
            nargs_help += f"; default {default}"
        p.add_argument("name", nargs="?", default=default, metavar="NAME", help=nargs_help)
        return p

    design_command("show", "Show a design: equations, transfer functions, stability conditions.")

    p = design_command("plot", "Draw a design: Bode, pole-zero, root locus or stability region.")
    p.add_argument("--kind", choices=PLOT_KINDS, default="bode", help="which plot (default bode)")
    p.add_argument("-o", "--output", metavar="FILE", type=_suffixed(IMAGE_SUFFIXES, ".png, .svg or .pdf (or .jpg)"),
                   help="image file (.png, .svg, .pdf); "
                   "default NAME-KIND.png")

    p = design_command("check", "Check which stability and validity conditions hold, with proofs.")
    p.epilog = ("Exit code 0 when every condition holds, 1 when one fails (or a computed "
                "spectral radius is >= 1), 4 when none fails but one is undecided.")
    p.add_argument("--curvature", type=_positive_float, default=None, metavar="H",
                   help="curvature h of the quadratic test loss h*theta**2/2 (for an adaptive "
                        "design, h/r with r its frozen preconditioner); default: report the "
                        "range of h where the closed loop is stable")
    p.add_argument("--frozen", action="append", default=[], metavar="NAME=VALUE",
                   type=_frozen_value, help="value of a frozen preconditioner factor of the "
                   "closed loop (e.g. r=0.01); repeatable")
    p.add_argument("--no-proof", action="store_true", help="print the verdicts only")

    p = design_command("export", "Write a standalone torch optimizer (needs torch, not ctopt).")
    p.epilog = ("The written module is imported and checked against the float64 oracle first; "
                "exit code 1 (and no file) when it does not import or differs.")
    p.add_argument("-o", "--output", metavar="FILE.py", type=_suffixed((".py",)),
                   help="default NAME_optimizer.py")

    p = sub.add_parser("bench", help="Time exported optimizers against torch.optim.",
                       description="Time one optimizer step of exported designs against "
                                   "torch.optim on this machine (medians, same process).")
    p.add_argument("designs", nargs="*", metavar="NAME", help="designs to time (default adam)")
    p.add_argument("--numel", type=_whole_number(MAX_NUMEL), default=1 << 22,
                   help="float32 elements in the parameter (default 4194304; backend auto "
                        "compiles from 1048576 on, and the first step includes the compile)")
    p.add_argument("--steps", type=_whole_number(MAX_STEPS), default=20, help="timed steps (default 20)")
    p.add_argument("--backend", default="auto",
                   choices=("auto", "forloop", "foreach", "compiled"), help="export backend")

    p = design_command("report", "Write a Markdown report on a design: equations, transfer "
                                 "functions, figures, stability proofs, the exported source and a "
                                 "training run against Adam on real data.", default="adamssm")
    p.add_argument("-o", "--output", metavar="DIR", type=_folder,
                   help="folder to write (default report-NAME)")
    p.add_argument("--epochs", type=_whole_number(MAX_EPOCHS), default=None,
                   help="training epochs of the comparison (default 10)")
    p.add_argument("--seeds", type=_whole_number(MAX_SEEDS), default=None,
                   help="seeds at the best learning rate (default 3)")
    p.add_argument("--no-training", action="store_true", help="skip the training comparison")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _wide(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=28, width=100)


def _number(text: str, allowed: str) -> float:
    """``text`` as a float64, refusing what is not a number or overflows to inf."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: {allowed}") from None
    if math.isinf(value) and text.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        raise argparse.ArgumentTypeError(f"{text!r} overflows float64 (becomes inf); allowed: "
                                         f"{allowed}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, "(0, inf)")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is outside the allowed range (0, inf)")
    return value


def _whole_number(high: int) -> Callable[[str], int]:
    """An argument type for whole numbers in ``[1, high]`` (``"1e3"`` is accepted)."""
    allowed = f"1, 2, ..., {high}"

    def convert(text: str) -> int:
        if len(text) > 40:
            raise argparse.ArgumentTypeError(f"a {len(text)}-character value is not a whole "
                                             f"number; allowed: {allowed}")
        try:
            value = int(text)
        except ValueError:
            number = _number(text, allowed)
            if not math.isfinite(number) or number != int(number):
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not a whole number; allowed: {allowed}") from None
            value = int(number)
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is outside the allowed range {allowed}")
        return value

    return convert


IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # = what report.save_plot writes


def _suffixed(suffixes: tuple[str, ...], shown: str | None = None) -> Callable[[str], str]:
    """An argument type for a file name ending in one of ``suffixes`` (``shown``: how the
    message lists them)."""
    def convert(text: str) -> str:
        if not text.strip() or "\0" in text:
            raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
        if Path(text).suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r} must end in "
                                             f"{shown or ', '.join(suffixes)}")
        if Path(text).is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
        return text

    return convert


def _folder(text: str) -> str:
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder name")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return text


_positive_int = _whole_number(10**9)  # kept for callers of the former name


def _frozen_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. r=0.01)")
    return name, _positive_float(value)


def _hyper_type(hyper: Hyperparameter) -> Callable[[str], float]:
    def convert(text: str) -> float:
        value = _number(text, f"{hyper.name} in {hyper.domain}")
        try:
            return hyper.check(value)
        except CtoptError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _hyper_parser(command: str, design: Design) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"ctopt {command} {design.name}", add_help=False, allow_abbrev=False,
        formatter_class=_wide,
    )
    group = p.add_argument_group(f"hyperparameters of {design.name}")
    for hyper in design.hyper:
        flags = [f"--{hyper.name}"]
        if "_" in hyper.name:
            flags.append(f"--{hyper.name.replace('_', '-')}")
        group.add_argument(
            *flags, dest=hyper.name, type=_hyper_type(hyper), default=None, metavar="X",
            help=f"{hyper.doc or hyper.name}: default {hyper.default:g}, allowed {hyper.domain}",
        )
    return p


def _load_design(name: str) -> Design:
    if name.endswith(".json") or "/" in name or Path(name).is_file():
        from ..serialize import load_design

        return load_design(name)
    return zoo.get(name)


def _parse_values(command: str, design: Design, extra: list[str]) -> dict[str, float]:
    hp = _hyper_parser(command, design)
    ns, rest = hp.parse_known_args(extra)
    if rest:
        flag = next((r for r in rest if r.startswith("-")), rest[0])
        valid = [f"--{hyper.name}" for hyper in design.hyper]
        close = difflib.get_close_matches(flag.split("=")[0], valid, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        hp.error(
            f"unrecognized argument(s): {' '.join(rest)}.{hint} "
            f"Hyperparameters of {design.name}: {', '.join(valid) or 'none'}"
        )
    _check_converted(hp, ns)
    return {k: v for k, v in vars(ns).items() if v is not None}


def _check_converted(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """argparse skips the type of ``--option=--`` and stores ``[]``: refuse it by name."""
    for action in parser._actions:  # noqa: SLF001
        value = getattr(ns, action.dest, None)
        if isinstance(action, argparse._AppendAction):  # noqa: SLF001
            value = next((v for v in value or () if isinstance(v, list)), None)
        if action.type is not None and action.nargs is None and isinstance(value, list):
            parser.error(f"argument {'/'.join(action.option_strings)}: expected one value, "
                         "got '--'")

