"""``python -m ctopt.experiments {digits,language,study} [--big] [--seeds N] [--out DIR]``.

``digits``/``language`` compare the six optimizers (lr sweep, then seeds) and write
``DIR/<task>.json``, ``DIR/<task>_curves.png`` and a Markdown table on stdout; ``study`` trains
AdamSSM with candidate (pole, zero) pairs on both tasks and writes ``DIR/pole_zero.json``.

Example:
    >>> STUDY_PAIRS[:2]
    ((0.9, 0.9), (0.9, 0.99))
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .digits import DigitsTask
from .harness import compare
from .language import LanguageTask
from .study import filter_check, pole_zero_study

#: (pole, zero) pairs of the default study; (0.9, 0.9) is Adam itself.
STUDY_PAIRS = ((0.9, 0.9), (0.9, 0.99), (0.5, 0.99), (0.99, 0.999), (0.99, 0.9), (0.5, 0.9))


def _task(name: str, big: bool):
    cls = DigitsTask if name == "digits" else LanguageTask
    return cls.big() if big else cls()


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Example:
        >>> main(["digits", "--help"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="python -m ctopt.experiments", description=__doc__)
    parser.add_argument("what", choices=("digits", "language", "study"))
    parser.add_argument("--big", action="store_true", help="bigger models and longer runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=".", help="folder for the JSON results and figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if args.what == "study":
        results = {}
        for name, lr in (("digits", 1e-2), ("language", 3e-2)):  # Adam's best in a first sweep
            runs = pole_zero_study(_task(name, args.big), STUDY_PAIRS, lr=lr, seeds=args.seeds,
                                   progress=not args.quiet)
            results[name] = {"lr": lr, "pairs": [
                {"pole": p, "zero": q, "finals": [r.final for r in rs],
                 "val_loss": [r.val_loss[-1] for r in rs], **filter_check(p, q)}
                for (p, q), rs in runs.items()]}
        (out / "pole_zero.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results, indent=1))
    else:
        task = _task(args.what, args.big)
        result = compare(task, seeds=args.seeds, progress=not args.quiet)
        result.save(out / f"{args.what}.json")
        try:
            from .figures import plot_curves

            plot_curves(result, out / f"{args.what}_curves.png")
        except ImportError:
            pass
        print(result.table())
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
