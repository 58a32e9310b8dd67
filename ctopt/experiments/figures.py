"""Figures for the experiments: loss curves of a :class:`~ctopt.experiments.harness.Comparison`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curves"]


def plot_curves(result, path: str | Path | None = None):
    """Train loss and validation metric against steps, mean over seeds with a ±std band, one
    line per optimizer at its chosen lr. Returns the matplotlib figure (saved if ``path``).

    Example:
        >>> from ctopt.experiments import Comparison, RunCurves
        >>> run = RunCurves([1, 2], [1.0, 0.5], [1.0, 0.6], [0.4, 0.5])
        >>> c = Comparison("toy", "acc", True, {"A": {0.1: 0.5}}, {"A": 0.1}, {"A": [run]})
        >>> len(plot_curves(c).axes)
        2
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for label, runs in result.runs.items():
        steps = np.array(runs[0].steps)
        for ax, key in zip(axes, ("train_loss", "val_metric"), strict=True):
            y = np.array([getattr(r, key) for r in runs], dtype=float)
            mean, std = y.mean(axis=0), y.std(axis=0)
            line, = ax.plot(steps, mean, label=f"{label} (lr {result.best_lr[label]:g})")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="step", ylabel="train loss", yscale="log", title=f"{result.task}: training")
    axes[1].set(xlabel="step", ylabel=result.metric, title=f"{result.task}: validation")
    if not result.higher_is_better:
        axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
