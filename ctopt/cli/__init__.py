"""The ``ctopt`` command: list, show, plot, check, export and benchmark designs, and write a full
report on one of them.

Every command that takes a design accepts the design's hyperparameters as options
(``ctopt check adam --beta2 0.99``); ``ctopt COMMAND NAME --help`` lists them with their domains.
``NAME`` is a zoo name (``ctopt list``) or a design file written by :func:`ctopt.save_design`.

Exit codes: 0 success; 1 a checked condition does not hold (``check``); 2 bad input (unknown
design, value outside its domain, bad option); 3 a feature or optional extra is not available;
4 no checked condition fails but at least one is undecided (``check``); 5 an internal error
(a bug in ctopt: one line on stderr, the traceback with CTOPT_TRACEBACK=1).

Example:
    >>> from ctopt.cli import main
    >>> main(["list"])  # doctest: +ELLIPSIS
    name...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import zoo
from ..bench import MAX_NUMEL, MAX_STEPS  # noqa: F401 - the limits of --numel, --steps
from ..errors import CtoptError, InternalError, UnsupportedError
from ..report import MAX_EPOCHS, MAX_SEEDS  # noqa: F401 - the limits of --epochs, --seeds
from ._common import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_UNDECIDED,
    EXIT_USAGE,
    _fail,
    _Unavailable,
)
from .arguments import (
    PLOT_KINDS,  # noqa: F401 - = ctopt.report.figures.KINDS
    _check_converted,
    _hyper_parser,
    _load_design,
    _parse_values,
    build_parser,
)
from .commands import COMMANDS as _COMMANDS
from .commands import DESIGN_COMMANDS as _DESIGN_COMMANDS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNAVAILABLE",
           "EXIT_UNDECIDED", "EXIT_INTERNAL"]


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ctopt`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Example:
        >>> main(["show", "sgd", "--lr", "-1"])  # doctest: +SKIP
        2
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # argparse already printed the message
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE if argv else EXIT_OK
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
    try:
        _check_converted(subparser, args)
        design, values = None, {}
        if args.command in _DESIGN_COMMANDS:
            if args.help:
                return _print_design_help(subparser, args.command, args.name)
            if args.name is None:
                subparser.error(f"a design NAME is required; valid names: {', '.join(zoo.names())}")
            design = _load_design(args.name)
            values = _parse_values(args.command, design, extra)
        elif extra:
            subparser.error(f"unrecognized argument(s): {' '.join(extra)}")
        if args.command == "bench":
            design = [_load_design(n) for n in args.designs or ["adam"]]
        return _COMMANDS[args.command](args, design, values)
    except SystemExit as exc:
        return int(exc.code or 0)
    except _Unavailable as exc:
        _fail(f"{exc}")
        return EXIT_UNAVAILABLE
    except UnsupportedError as exc:
        _fail(str(exc))
        return EXIT_UNAVAILABLE
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("ctopt"):
            _fail(f"this installation of ctopt lacks {exc.name}, which '{args.command}' needs")
        else:
            _fail(f"a required package is missing: {exc.name}. Install the extra that provides "
                  "it, e.g. pip install 'ctopt[dev]'")
        return EXIT_UNAVAILABLE
    except InternalError as exc:  # a self-check of ctopt's own result failed: a bug
        _fail(f"internal error in '{args.command}': {exc}. This is a bug in ctopt; please report "
              "it with the command line")
        return EXIT_INTERNAL
    except (CtoptError, OSError) as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # a last net: a bug in ctopt, reported without a traceback
        if os.environ.get("CTOPT_TRACEBACK"):
            raise
        _fail(f"internal error in '{args.command}': {type(exc).__name__}: {exc}. This is a bug "
              "in ctopt; please report it with the command line (CTOPT_TRACEBACK=1 shows the "
              "traceback)")
        return EXIT_INTERNAL


def _print_design_help(subparser: argparse.ArgumentParser, command: str, name: str | None) -> int:
    subparser.print_help()
    if name is None:
        return EXIT_OK
    try:
        design = _load_design(name)
    except CtoptError as exc:
        print()
        _fail(str(exc))
        return EXIT_USAGE
    print()
    help_text = _hyper_parser(command, design).format_help()
    print(help_text[help_text.index("hyperparameters of"):].rstrip())
    return EXIT_OK

