"""``python -m ctopt``: the same command as the ``ctopt`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
