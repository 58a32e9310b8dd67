"""Compare optimizers on a task: a short learning-rate sweep, then several seeds at the best rate.

Every optimizer is a zoo design exported by ctopt (``ctopt.to_torch``) unless another factory is
given. A task (see :mod:`ctopt.experiments.digits` and :mod:`ctopt.experiments.language`) trains
one model with one optimizer and one seed and returns its curves.

Example:
    >>> [s.label for s in recommended("digits")][:3]
    ['SGD momentum', 'Adam', 'AdamW']
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Comparison", "OptimizerSpec", "RunCurves", "compare", "ctopt_factory", "recommended"]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer to compare: a zoo design, its fixed hyperparameters and the lrs to sweep."""

    label: str
    design: str
    values: Mapping[str, float] = field(default_factory=dict)
    lrs: Sequence[float] = (1e-3,)


@dataclass
class RunCurves:
    """One training run: ``steps[i]`` optimizer steps done at evaluation ``i``, the mean train loss
    since the previous evaluation, and the validation loss and metric there."""

    steps: list[int]
    train_loss: list[float]
    val_loss: list[float]
    val_metric: list[float]

    @property
    def final(self) -> float:
        return self.val_metric[-1]


def recommended(task: str) -> list[OptimizerSpec]:
    """Each optimizer at its authors' recommended settings, with a short lr sweep (3 or 4 points)
    (``task`` is ``'digits'`` or ``'language'``; AdaBelief's eps follows its README: 1e-8 for
    CNNs, 1e-16 for LSTMs).

    Example:
        >>> [spec.label for spec in recommended("digits")][:3]
        ['SGD momentum', 'Adam', 'AdamW']
    """
    adaptive = (1e-3, 3e-3, 1e-2, 3e-2) if task == "digits" else (3e-3, 1e-2, 3e-2, 1e-1)
    sgd = (0.03, 0.1, 0.3) if task == "digits" else (1.0, 3.0, 10.0)
    adan = tuple(3 * lr for lr in adaptive)  # Adan tolerates a larger peak lr (its README)
    belief_eps = 1e-8 if task == "digits" else 1e-16
    return [
        OptimizerSpec("SGD momentum", "heavy_ball", {"momentum": 0.9}, sgd),
        OptimizerSpec("Adam", "adam", {}, adaptive),
        OptimizerSpec("AdamW", "adamw", {"weight_decay": 1e-2}, adaptive),
        OptimizerSpec("AdaBelief", "adabelief", {"eps": belief_eps}, adaptive),
        OptimizerSpec("AdamSSM", "adamssm", {}, adaptive),
        OptimizerSpec("Adan", "adan", {"weight_decay": 0.02}, adan),
    ]


def ctopt_factory(spec: OptimizerSpec) -> Callable:
    """``make(params, lr)`` building ctopt's exported optimizer for ``spec``.

    Example:
        >>> import torch
        >>> make = ctopt_factory(OptimizerSpec("AdamW", "adamw", {"weight_decay": 0.1}))
        >>> opt = make([torch.zeros(2, requires_grad=True)], 1e-3)
        >>> opt.param_groups[0]["weight_decay"]
        0.1
    """
    import ctopt

    cls = ctopt.to_torch(ctopt.zoo.get(spec.design))
    return lambda params, lr: cls(params, lr=lr, **dict(spec.values))


@dataclass
class Comparison:
    """Results of :func:`compare`: per optimizer label, the sweep (lr -> seed-0 metric), the
    chosen lr and the runs (one per seed) at that lr."""

    task: str
    metric: str
    higher_is_better: bool
    sweep: dict[str, dict[float, float]]
    best_lr: dict[str, float]
    runs: dict[str, list[RunCurves]]

    def summary(self) -> dict[str, tuple[float, float]]:
        """``label -> (mean, std)`` of the final validation metric over seeds."""
        out = {}
        for label, runs in self.runs.items():
            finals = np.array([r.final for r in runs], dtype=float)
            out[label] = (float(finals.mean()), float(finals.std(ddof=1)) if len(finals) > 1 else 0.0)
        return out

    def table(self) -> str:
        """A Markdown table: optimizer, chosen lr, swept metrics, mean +- std over seeds."""
        head = f"| optimizer | lr sweep (seed 0 {self.metric}) | chosen lr | {self.metric}, mean ± std |"
        rows = [head, "|---|---|---|---|"]
        for label, (mean, std) in self.summary().items():
            sweep = ", ".join(f"{lr:g}: {m:.4g}" for lr, m in sorted(self.sweep[label].items()))
            n = len(self.runs[label])
            rows.append(f"| {label} | {sweep} | {self.best_lr[label]:g} | {mean:.4g} ± {std:.2g} (n={n}) |")
        return "\n".join(rows)

    def save(self, path: str | Path) -> None:
        """Write the comparison as JSON."""
        data = asdict(self)
        data["sweep"] = {k: {str(lr): m for lr, m in v.items()} for k, v in self.sweep.items()}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        """Read a comparison written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        data["sweep"] = {k: {float(lr): m for lr, m in v.items()} for k, v in data["sweep"].items()}
        data["runs"] = {k: [RunCurves(**r) for r in v] for k, v in data["runs"].items()}
        return cls(**data)


def compare(task, specs: Sequence[OptimizerSpec] | None = None, *, seeds: int = 3,
            factory: Callable[[OptimizerSpec], Callable] = ctopt_factory,
            progress: bool = True) -> Comparison:
    """Sweep each spec's lrs with seed 0, pick the best by the final validation metric (a
    diverged run counts as worst), then train seeds ``1 .. seeds-1`` at that lr.

    ``task`` has ``name``, ``metric``, ``higher_is_better`` and ``train(make, lr, seed)``
    returning :class:`RunCurves`; ``factory(spec)`` returns ``make(params, lr)``.

    Example:
        >>> class Toy:  # the metric peaks at lr = 0.01
        ...     name, metric, higher_is_better = "toy", "score", True
        ...     def train(self, make, lr, seed):
        ...         return RunCurves([1], [1.0], [1.0], [-abs(lr - 0.01) + seed])
        >>> r = compare(Toy(), [OptimizerSpec("X", "sgd", {}, (0.1, 0.01))], seeds=2,
        ...             factory=lambda spec: None, progress=False)
        >>> r.best_lr, [run.final for run in r.runs["X"]]
        ({'X': 0.01}, [0.0, 1.0])
    """
    from tqdm.auto import tqdm

    specs = list(specs) if specs is not None else recommended(task.name)
    total = sum(len(s.lrs) + seeds - 1 for s in specs)
    bar = tqdm(total=total, desc=task.name, disable=not progress, unit="run")
    sign = 1.0 if task.higher_is_better else -1.0
    sweep, best, runs = {}, {}, {}
    for spec in specs:
        make = factory(spec)
        trials = {}
        for lr in spec.lrs:
            bar.set_postfix_str(f"{spec.label} lr={lr:g}")
            trials[lr] = task.train(make, lr, 0)
            bar.update()
        score = {lr: sign * r.final if math.isfinite(r.final) else -math.inf for lr, r in trials.items()}
        lr_best = max(score, key=score.get)
        done = [trials[lr_best]]
        for seed in range(1, seeds):
            bar.set_postfix_str(f"{spec.label} seed={seed}")
            done.append(task.train(make, lr_best, seed))
            bar.update()
        sweep[spec.label] = {lr: r.final for lr, r in trials.items()}
        best[spec.label] = lr_best
        runs[spec.label] = done
    bar.close()
    return Comparison(task.name, task.metric, task.higher_is_better, sweep, best, runs)
