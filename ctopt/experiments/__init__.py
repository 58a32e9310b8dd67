"""Real-data experiments: ctopt's exported optimizers trained on small offline tasks.

- :class:`~ctopt.experiments.digits.DigitsTask` — a small CNN on scikit-learn's digits
  (validation accuracy);
- :class:`~ctopt.experiments.language.LanguageTask` — a character-level LSTM on the docstrings of
  the Python standard library, gathered at run time (validation perplexity);
- :func:`~ctopt.experiments.harness.compare` — lr sweep, seeds, mean ± std, Markdown tables;
- :func:`~ctopt.experiments.study.pole_zero_study` — AdamSSM's pole and zero on a task;
- :func:`~ctopt.experiments.edge.edge_run` — full-batch training on digits with the
  preconditioned sharpness measured (the adaptive edge of stability).

Run from the shell: ``python -m ctopt.experiments digits`` (``--big`` for bigger runs).

Example:
    >>> from ctopt.experiments import recommended
    >>> len(recommended("language"))
    6
"""

from __future__ import annotations

from .digits import DigitsTask
from .harness import Comparison, OptimizerSpec, RunCurves, compare, ctopt_factory, recommended
from .language import LanguageTask

__all__ = [
    "Comparison", "DigitsTask", "LanguageTask", "OptimizerSpec", "RunCurves", "compare",
    "ctopt_factory", "recommended",
]
