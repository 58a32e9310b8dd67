"""A live check of the analysis on the user's own model: the preconditioned sharpness
``lambda_max(D**-1 H)`` during training against the design's critical sharpness.

:class:`SharpnessMonitor` wraps an optimizer (an exported ctopt optimizer, or ``torch.optim``'s
Adam, AdamW, RMSprop, Adagrad and SGD, each mapped to its zoo design) and a closure that returns
the loss (without calling ``backward``). Every ``every`` steps it reads ``D`` from the optimizer's
state exactly as the design defines it (:func:`~ctopt.preconditioner`: Adam's
``sqrt(v/(1 - beta2**k)) + eps``, AdaGrad's ``sqrt(sum) + eps``, ``D = 1`` for SGD) and estimates
the top eigenvalue of the symmetric form ``D**-1/2 H D**-1/2`` (same spectrum as ``D**-1 H``) by
Lanczos iteration on Hessian-vector products of the closure's loss (double backward through
``torch.autograd``). The cost of a measurement is one gradient with graph plus ``iters``
Hessian-vector products (about two gradients each).

Full-batch training sits at the threshold (the adaptive edge of stability, Cohen et al. 2022);
each measurement is flagged when it is within ``tol`` of it or above, the regime where Ma, Wu &
E report oscillations and spikes of adaptive methods. torch is imported only when a monitor is
built.

Example:
    >>> import torch, ctopt
    >>> _ = torch.manual_seed(0)
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> mon = ctopt.SharpnessMonitor(opt, lambda: (w**2 * torch.tensor([3.0, 1.0])).sum(),
    ...                              every=1, progress=False)
    >>> m = mon.measure()
    >>> round(m.sharpness, 4), round(m.critical, 4)   # H = diag(6, 2); 2/lr = 20
    (6.0, 20.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .design import Design, g, k
from .errors import CtoptError, HyperparameterError, UnsupportedError

__all__ = ["Measurement", "SharpnessMonitor", "design_of"]


@dataclass(frozen=True)
class Measurement:
    """One measurement: the optimizer step, ``lambda_max(D^-1 H)``, the critical sharpness, the
    loss and whether training sits at the threshold (``ratio >= 1 - tol``)."""

    step: int
    sharpness: float
    critical: float
    loss: float
    flag: bool

    @property
    def ratio(self) -> float:
        """``sharpness / critical``."""
        return self.sharpness / self.critical


# ------------------------------------------------------------------ optimizer -> design
def design_of(optimizer) -> tuple[Design, dict[str, float]]:
    """The design of ``optimizer`` and its hyperparameter values (one param group).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> d, v = design_of(torch.optim.Adam([w], lr=0.01))
        >>> d.name, v["lr"], v["beta1"]
        ('adam', 0.01, 0.9)
    """
    import torch

    from . import zoo

    groups = optimizer.param_groups
    design = getattr(type(optimizer), "design", None)
    if isinstance(design, Design):
        values = [type(optimizer)._group_values(gr, "") for gr in groups]
    else:
        name, extra = _torch_design(optimizer, torch)
        design = zoo.get(name, **extra) if extra else zoo.get(name)
        values = []
        for gr in groups:
            v = {n: gr[n] for n in design.hyperparameters if n in gr}
            if "betas" in gr:
                v["beta1"], v["beta2"] = gr["betas"]
            values.append({n: float(x) for n, x in v.items() if n in design.hyperparameters})
    if any(v != values[0] for v in values[1:]):
        raise UnsupportedError("SharpnessMonitor needs one set of hyperparameters for all "
                               f"param groups; the groups differ: {values}")
    return design, values[0]


def _torch_design(opt, torch) -> tuple[str, dict]:
    gr = opt.param_groups[0]
    if type(opt) is torch.optim.AdamW or (type(opt) is torch.optim.Adam
                                           and gr.get("decoupled_weight_decay", False)):
        if gr.get("amsgrad"):
            raise UnsupportedError("AdamW with amsgrad=True has no zoo design")
        return "adamw", {}
    if type(opt) is torch.optim.Adam:
        return ("amsgrad" if gr.get("amsgrad") else "adam"), {}
    if type(opt) is torch.optim.RMSprop:
        return "rmsprop", {"centered": bool(gr.get("centered", False))}
    if type(opt) is torch.optim.Adagrad:
        return "adagrad", {}
    if type(opt) is torch.optim.SGD:
        if gr.get("momentum", 0) == 0:
            return "sgd", {}
        return ("nesterov" if gr.get("nesterov") else "heavy_ball"), {}
    raise UnsupportedError(
        f"SharpnessMonitor knows exported ctopt optimizers and torch.optim Adam, AdamW, RMSprop, "
        f"Adagrad and SGD, not {type(opt).__name__}"
    )


# ----------------------------------------------------------------------- the monitor
class SharpnessMonitor:
    """Measure ``lambda_max(D^-1 H)`` every ``every`` steps of ``optimizer`` (see the module doc).

    Call :meth:`step` in place of ``optimizer.step()`` (after ``backward``), or :meth:`measure`
    at any time. ``history`` holds the :class:`Measurement` records; :meth:`plot` draws them with
    the predicted line. ``iters`` is the number of Lanczos steps (Hessian-vector products) per
    measurement; ``tol`` the band below the threshold that counts as "at the edge".

    Example:
        >>> import torch, ctopt
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = torch.optim.Adam([w], lr=0.01)
        >>> mon = ctopt.SharpnessMonitor(opt, lambda: (w**2).sum(), every=5, progress=False)
        >>> for _ in range(10):
        ...     opt.zero_grad(); (w**2).sum().backward(); mon.step()
        >>> [m.step for m in mon.history], round(mon.history[-1].critical, 3)
        ([5, 10], 3800.0)
    """

    def __init__(self, optimizer, closure: Callable[[], object], every: int = 10, *,
                 iters: int = 20, tol: float = 0.1, progress: bool = True,
                 total: int | None = None, seed: int = 0):
        if not isinstance(every, int) or every < 1:
            raise HyperparameterError(f"every must be an integer >= 1, not {every!r}")
        if not isinstance(iters, int) or iters < 1:
            raise HyperparameterError(f"iters must be an integer >= 1, not {iters!r}")
        if not 0 <= tol < 1:
            raise HyperparameterError(f"tol must be in [0, 1), not {tol!r}")
        from .analysis.preconditioners import preconditioner, switched_off
        from .analysis.sharpness import critical_sharpness

        self.optimizer, self.closure = optimizer, closure
        self.every, self.iters, self.tol, self.seed = every, iters, tol, seed
        self.design, self.values = design_of(optimizer)
        self.preconditioner = preconditioner(self.design)
        off = switched_off(self.design, {})
        on = {n: self.values[n] for n in off if self.values.get(n, 0) != 0}
        self.notes: list[str] = []
        try:
            self.threshold = critical_sharpness(self.design, **on)
        except CtoptError as exc:
            self.threshold = critical_sharpness(self.design)
            self.notes.append(f"critical sharpness taken with {sorted(on)} = 0: {exc}")
        self.critical = self.threshold.value(
            **{n: v for n, v in self.values.items() if n not in self.threshold.fixed})
        self.history: list[Measurement] = []
        self.steps = 0
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=f"{self.design.name} sharpness", leave=False)
        self._d_fn = self._compile_d()

    @property
    def cost(self) -> str:
        """What a measurement costs."""
        return (f"{self.iters} Hessian-vector products (each about two gradients) and one "
                f"gradient with graph per measurement, every {self.every} steps")

    # -- D from the optimizer's state
    def _compile_d(self):
        pre = self.preconditioner
        if not pre.adaptive:
            return None
        d = self.design
        names = {s.name for s in pre.D.free_symbols}
        states = [s for s in d.states if s.name in names]  # e.g. not RMSprop's momentum buffer
        syms = [sp.Symbol(s.name, real=True) for s in states] + [k, g]
        hyper = {h.symbol: self.values.get(h.name, h.default) for h in d.hyper}
        expr = pre.D.xreplace({s: sp.Float(v) for s, v in hyper.items()})
        return sp.lambdify(syms, expr, "numpy"), [s.key for s in states]

    def _diag(self, params):
        import torch

        if self._d_fn is None:
            return [torch.ones_like(p) for p in params]
        fn, keys = self._d_fn
        out = []
        for p in params:
            state = self.optimizer.state.get(p, {})
            if "step" not in state:
                raise UnsupportedError("SharpnessMonitor reads D from the optimizer's state: take an "
                                 "optimizer step before measuring")
            arrays = [state[key].detach().double().cpu().numpy() for key in keys]
            kval = float(state["step"])
            grad = (p.grad.detach().double().cpu().numpy() if p.grad is not None
                    else np.zeros(tuple(p.shape)))
            value = np.broadcast_to(np.asarray(fn(*arrays, kval, grad), dtype=float), p.shape)
            out.append(torch.as_tensor(np.array(value), dtype=p.dtype, device=p.device))
        return out

    # -- measuring
    def _params(self):
        return [p for gr in self.optimizer.param_groups for p in gr["params"] if p.requires_grad]

    def measure(self) -> Measurement:
        """One measurement now (it is appended to ``history``)."""
        import torch

        params = self._params()
        scale = [d.rsqrt() for d in self._diag(params)]
        with torch.enable_grad():
            loss = self.closure()
            grads = torch.autograd.grad(loss, params, create_graph=True)

        def operator(vs):
            hv = torch.autograd.grad(grads, params, [v * s for v, s in zip(vs, scale, strict=True)],
                                     retain_graph=True)
            return [h.detach() * s for h, s in zip(hv, scale, strict=True)]

        top = _lanczos(operator, params, self.iters, self.seed)
        m = Measurement(self.steps, top, self.critical, float(loss.detach()),
                        top >= (1 - self.tol) * self.critical)
        self.history.append(m)
        return m

    def step(self, closure=None):
        """``optimizer.step(closure)``, then a measurement every ``every`` steps; returns the
        optimizer's return value."""
        out = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.steps += 1
        if self.steps % self.every == 0:
            m = self.measure()
            if self._bar is not None:
                self._bar.set_postfix(ratio=f"{m.ratio:.3f}", at_edge=m.flag)
        if self._bar is not None:
            self._bar.update(1)
        return out

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()

    @property
    def at_edge(self) -> bool:
        """Whether the latest measurement sits at or above the threshold (within ``tol``)."""
        return bool(self.history and self.history[-1].flag)

    def plot(self, ax=None):
        """Sharpness against step with the predicted critical line (:func:`ctopt.plot.sharpness`);
        returns its :class:`ctopt.plot.Plot`.

        Example:
            >>> import matplotlib; matplotlib.use("Agg")
            >>> import torch, ctopt
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> mon = ctopt.SharpnessMonitor(torch.optim.SGD([w], lr=0.1), lambda: (w**2).sum(),
            ...                              progress=False)
            >>> _ = mon.measure()
            >>> len(mon.plot().lines)
            2
        """
        from .plot import sharpness

        return sharpness(self, ax=ax)

    def __repr__(self) -> str:
        return (f"SharpnessMonitor({self.design.name}, critical {self.critical:.6g}, "
                f"{len(self.history)} measurements; cost: {self.cost})")


def _lanczos(operator, like, iters: int, seed: int) -> float:
    """The largest eigenvalue of a symmetric operator on lists of tensors shaped like ``like``
    (Lanczos with full reorthogonalisation)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in like]

    def dot(a, b):
        return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b, strict=True))

    norm = dot(v, v) ** 0.5
    v = [x / norm for x in v]
    basis, alphas, betas = [v], [], []
    n = sum(p.numel() for p in like)
    for j in range(min(iters, n)):
        w = operator(basis[-1])
        alpha = dot(w, basis[-1])
        alphas.append(alpha)
        for q in basis:  # full reorthogonalisation
            c = dot(w, q)
            w = [x - c * y for x, y in zip(w, q, strict=True)]
        beta = dot(w, w) ** 0.5
        if beta < 1e-10 * max(1.0, abs(alpha)) or j == min(iters, n) - 1:
            break
        betas.append(beta)
        basis.append([x / beta for x in w])
    t = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1],
                                                                          -1)
    return float(np.linalg.eigvalsh(t)[-1])
