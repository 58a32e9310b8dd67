"""The adaptive edge of stability, reproduced: full-batch training on scikit-learn's digits with
the preconditioned sharpness measured by :class:`~ctopt.SharpnessMonitor`.

Two architectures on the 1797 8x8 digits (inputs scaled to [0, 1], one-hot targets, mean squared
error): ``"mlp"`` (64-64-10, tanh) and ``"mlp2"`` (64-32-32-10, tanh). The optimizer is torch's
Adam, or an exported ctopt design (AdamSSM, Adan, or the user design :func:`qhadam`). A run
returns the monitor's history and its time; :func:`late_ratios` summarises the late phase.

Example:
    >>> run = edge_run("adam", lr=0.01, steps=20, every=10, samples=200)
    >>> [m.step for m in run.history]
    [10, 20]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sympy as sp

from ..design import Design, DesignBuilder, g, k, theta

__all__ = ["EdgeRun", "edge_run", "late_ratios", "qhadam"]

ARCHITECTURES = {"mlp": (64, 64, 10), "mlp2": (64, 32, 32, 10)}


def qhadam() -> Design:
    """A user design (not in the zoo): quasi-hyperbolic Adam, whose step mixes the raw gradient
    and the bias-corrected momentum, ``u = (1 - nu)*g + nu*m_hat``, over ``D = sqrt(v_hat) + eps``.

    Example:
        >>> import ctopt
        >>> ctopt.critical_sharpness(qhadam()).kind
        'proven'
    """
    from ..zoo._common import ema, epsilon, learning_rate

    b = DesignBuilder("qhadam", doc="Quasi-hyperbolic Adam: a gradient/momentum mix.")
    lr = learning_rate(b, 1e-3)
    beta1 = ema(b, "beta1", 0.9, "first-moment EMA coefficient")
    beta2 = ema(b, "beta2", 0.999, "second-moment EMA coefficient")
    nu = ema(b, "nu", 0.7, "weight of the momentum in the step")
    eps = epsilon(b, 1e-8)
    m, v = b.state("m", torch_name="exp_avg"), b.state("v", torch_name="exp_avg_sq")
    b.assign(m, beta1 * m + (1 - beta1) * g)
    b.assign(v, beta2 * v + (1 - beta2) * g**2)
    m_hat = b.let("m_hat", m / (1 - beta1**k))
    v_hat = b.let("v_hat", v / (1 - beta2**k))
    b.update(theta - lr * ((1 - nu) * g + nu * m_hat) / (sp.sqrt(v_hat) + eps))
    return b.build()


@dataclass
class EdgeRun:
    """One training run: its settings, the monitor's history, the critical sharpness (and how
    it was derived) and the wall time in seconds."""

    optimizer: str
    arch: str
    hyper: dict
    batch: int | None
    history: list = field(default_factory=list)
    critical: float = 0.0
    kind: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"optimizer": self.optimizer, "arch": self.arch, "hyper": self.hyper,
                "batch": self.batch, "critical": self.critical, "kind": self.kind,
                "seconds": round(self.seconds, 2),
                "history": [[m.step, m.sharpness, m.loss] for m in self.history]}


def _data(samples: int | None):
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    if samples is not None:
        x, y = x[:samples], y[:samples]
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.nn.functional.one_hot(torch.tensor(y), 10).float()
    return xt, yt


def _model(arch: str, seed: int):
    import torch

    torch.manual_seed(seed)
    sizes = ARCHITECTURES[arch]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def _optimizer(name: str, params, hyper: dict):
    import torch

    import ctopt

    if name == "adam":
        return torch.optim.Adam(params, **hyper)
    design = qhadam() if name == "qhadam" else ctopt.zoo.get(name)
    return ctopt.to_torch(design)(params, **hyper)


def edge_run(optimizer: str = "adam", *, lr: float = 0.01, arch: str = "mlp", steps: int = 2000,
             every: int = 50, batch: int | None = None, samples: int | None = 1000,
             seed: int = 0, iters: int = 20, threads: int | None = 1,
             **hyper: float) -> EdgeRun:
    """Train on digits with ``optimizer`` (``"adam"`` is torch's; others are ctopt designs),
    full batch unless ``batch`` is given, measuring the preconditioned sharpness (on the full
    training set) every ``every`` steps. ``threads``: torch's intra-op threads during the run
    (default 1: these networks are small, and more threads only contend on a busy machine;
    ``None`` keeps torch's setting).

    Example:
        >>> run = edge_run("adam", lr=0.01, steps=10, every=5, samples=100)
        >>> run.critical, run.kind
        (3800.0, 'proven')
    """
    import torch

    from ..monitor import SharpnessMonitor

    x, y = _data(samples)
    model = _model(arch, seed)
    opt = _optimizer(optimizer, model.parameters(), {"lr": lr, **hyper})

    def full_loss():
        return torch.nn.functional.mse_loss(model(x), y)

    mon = SharpnessMonitor(opt, full_loss, every=every, iters=iters, progress=False, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        for _ in range(steps):
            if batch is None:
                xb, yb = x, y
            else:
                idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
                xb, yb = x[idx], y[idx]
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xb), yb).backward()
            mon.step()
    finally:
        torch.set_num_threads(before)
    run = EdgeRun(optimizer, arch, {"lr": lr, **hyper}, batch, list(mon.history), mon.critical,
                  mon.threshold.kind, time.perf_counter() - start)
    return run


def late_ratios(run: EdgeRun, start: int) -> tuple[float, float, float]:
    """``(min, median, max)`` of sharpness / critical over the measurements from step ``start``.

    Example:
        >>> from ctopt.monitor import Measurement
        >>> r = EdgeRun("adam", "mlp", {}, None, [Measurement(s, 9.0 + s, 10.0, 0.0, True)
        ...                                       for s in (1, 2, 3)], 10.0)
        >>> late_ratios(r, 2)
        (1.1, 1.15, 1.2)
    """
    import numpy as np

    r = np.array([m.sharpness / run.critical for m in run.history if m.step >= start])
    return float(r.min()), float(np.median(r)), float(r.max())
