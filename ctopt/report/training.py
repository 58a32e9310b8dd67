"""The report's training comparison: a design exported by ctopt against ``torch.optim.Adam`` on
scikit-learn's digits, through :mod:`ctopt.experiments`.

Example:
    >>> from ctopt.report.training import train_comparison
    >>> callable(train_comparison)
    True
"""

from __future__ import annotations

from collections.abc import Mapping

from ..design import Design

__all__ = ["train_comparison"]


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

    from ..experiments import DigitsTask, OptimizerSpec, compare
    from ..export import to_torch

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
