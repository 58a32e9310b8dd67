"""Exit codes, the command-line errors and the one-line error report shared by the ``ctopt``
command's modules.

Example:
    >>> from ctopt.cli._common import EXIT_OK, EXIT_USAGE
    >>> EXIT_OK, EXIT_USAGE
    (0, 2)
"""

from __future__ import annotations

import sys
import textwrap

from ..errors import OptionError, UnsupportedError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_UNDECIDED = 4
EXIT_INTERNAL = 5


class _Unavailable(UnsupportedError):
    """A feature this command needs is missing from the installation."""


class _BadInput(OptionError):
    """Bad command-line input found after parsing."""


def _fail(message: str) -> None:
    wrapped = textwrap.fill(message, width=100, subsequent_indent="  ", break_long_words=False,
                            break_on_hyphens=False)
    print(f"ctopt: error: {wrapped}", file=sys.stderr)
