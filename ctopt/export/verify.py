"""Check exported code against the float64 oracle: run an exported optimizer on a small test
problem, run the oracle (:mod:`ctopt.oracle`) on the same problem, and measure how far apart the
trajectories are. :func:`check_module` does this for a written standalone module (what
``ctopt export`` runs before it reports success).

The test problem is two tensors (shapes ``(3,)`` and ``(2, 2)``, so the foreach path sees a list
and group reductions span both) in float64, with the gradient ``H x + sin(3 x) - 1/2`` of a
fixed positive definite ``H``.

Example:
    >>> import ctopt
    >>> d = ctopt.zoo.get("adam")
    >>> error = trajectory_error(run_exported(ctopt.to_torch(d), 5), run_oracle(d, 5))
    >>> error <= 1e-12
    True
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import numpy as np

from ..design import Design
from ..errors import CtoptError

__all__ = ["ExportCheckError", "check_module", "run_exported", "run_oracle", "step_error",
           "trajectory_error"]

SHAPES = ((3,), (2, 2))
#: The largest relative error (per step, against the step's largest oracle entry) accepted.
TOLERANCE = 1e-12


class ExportCheckError(CtoptError, RuntimeError):
    """Exported code that does not import, or does not compute what the design says."""


def _problem():
    n = sum(int(np.prod(s)) for s in SHAPES)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n))
    hess = a @ a.T / n + np.eye(n)
    x0 = rng.standard_normal(n)
    return (lambda x: hess @ x + np.sin(3 * x) - 0.5), x0


def run_oracle(design: Design, steps: int, maximize: bool = False, **values: float) -> np.ndarray:
    """The oracle's trajectory on the test problem, shape ``(steps + 1, 7)``.

    Example:
        >>> import ctopt
        >>> run_oracle(ctopt.zoo.get("sgd"), 2).shape
        (3, 7)
    """
    from ..oracle import simulate

    grad_fn, x0 = _problem()
    with np.errstate(all="ignore"):
        return simulate(design, grad_fn, x0, steps, maximize=maximize, **values)


def run_exported(cls: type, steps: int, maximize: bool = False, **options) -> np.ndarray:
    """The trajectory of the exported optimizer class ``cls`` on the test problem (float64);
    ``options`` go to its constructor (hyperparameters, ``backend``...).

    Example:
        >>> import ctopt
        >>> run_exported(ctopt.to_torch(ctopt.zoo.get("sgd")), 2, backend="foreach").shape
        (3, 7)
    """
    return _run(cls, steps, maximize, None, options)


def step_error(cls: type, design: Design, steps: int, maximize: bool = False,
               **options) -> float:
    """The largest relative difference between one step of the exported optimizer and one
    oracle step (:func:`ctopt.oracle.step`) from the same parameter and states, over ``steps``
    steps of the test problem: the code's own error, free of the amplification a trajectory
    comparison adds where the design's map is ill-conditioned. Measured like
    :func:`trajectory_error` (parameter and states of each step as one row).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.get("adam")
        >>> step_error(ctopt.to_torch(d), d, 5, backend="foreach") <= 1e-15
        True
    """
    rows: tuple[list, list] = ([], [])
    _run(cls, steps, maximize, (design, rows), options)
    return trajectory_error(np.array(rows[0]), np.array(rows[1]))


def _run(cls, steps, maximize, compare, options) -> np.ndarray:
    import torch

    from ..oracle import init_state, step

    grad_fn, x0 = _problem()

    def split(x):
        out, i = [], 0
        for shape in SHAPES:
            n = int(np.prod(shape))
            out.append(torch.tensor(x[i:i + n], dtype=torch.float64).reshape(shape))
            i += n
        return out

    params = [torch.nn.Parameter(t) for t in split(x0)]
    opt = cls(params, maximize=maximize, **options)
    traj = [x0]
    def flat() -> tuple[np.ndarray, dict]:
        x = np.concatenate([p.detach().reshape(-1).numpy().copy() for p in params])
        if not opt.state:
            return x, init_state(compare[0], x.size)
        return x, {name: np.concatenate([opt.state[p][key].reshape(-1).numpy() for p in params])
                   for name, key in zip(cls.state_names, cls.state_keys, strict=True)}

    for i in range(steps):
        x = np.concatenate([p.detach().reshape(-1).numpy() for p in params])
        with np.errstate(all="ignore"):
            grad = grad_fn(x)
            grads = split(grad)
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr
        if compare is not None:
            x, states = flat()
            with np.errstate(all="ignore"):
                want = step(compare[0], x, -grad if maximize else grad, states, i + 1)
        opt.step()
        traj.append(np.concatenate([p.detach().reshape(-1).numpy().copy() for p in params]))
        if compare is not None:
            got = flat()
            compare[1][0].append(np.concatenate([got[0], *got[1].values()]))
            compare[1][1].append(np.concatenate([want[0], *want[1].values()]))
    return np.array(traj)


def trajectory_error(ours: np.ndarray, oracle: np.ndarray) -> float:
    """The largest relative difference of two trajectories: per step, the largest entry
    difference over the oracle's largest entry. Steps are compared up to the first one holding
    a NaN or an infinity, which must be the same step with the same non-finite entries in both
    (``inf`` otherwise); later steps are not compared, since fused operations (``lerp``,
    ``addcdiv``) and the oracle's expression tree may give different non-finite values from
    then on.

    Example:
        >>> import numpy as np
        >>> trajectory_error(np.array([[1.0, 1.0]]), np.array([[2.0, 1.0]]))
        0.5
        >>> trajectory_error(np.array([[1.0, np.nan]]), np.array([[1.0, 0.0]]))
        inf
    """
    ours, oracle = np.asarray(ours, dtype=np.float64), np.asarray(oracle, dtype=np.float64)
    if ours.shape != oracle.shape:
        return float("inf")
    worst = 0.0
    for a, b in zip(ours, oracle, strict=True):
        finite = np.isfinite(b)
        if not np.array_equal(np.isfinite(a), finite):
            return float("inf")
        if finite.any():
            diff = float(np.max(np.abs(a[finite] - b[finite])))
            scale = float(np.max(np.abs(b[finite])))
            worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf))
        if not finite.all():
            break
    return worst


def load_module(path: str | Path):
    """Import the module at ``path`` under a fresh private name (not left in ``sys.modules``; the
    runtime package a standalone module loads is shared by every standalone module of the same
    runtime, and stays)."""
    name = f"_ctopt_exported_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def check_module(path: str | Path, design: Design, class_name: str, steps: int = 5,
                 backends: tuple[str, ...] = ("forloop", "foreach")) -> float:
    """Import the standalone module at ``path`` and check that its class ``class_name`` equals
    the oracle for ``steps`` steps on each backend; returns the largest relative error or raises
    :class:`ExportCheckError` saying what failed.

    Example:
        >>> import ctopt, tempfile, os
        >>> d = ctopt.zoo.get("adam")
        >>> path = os.path.join(tempfile.mkdtemp(), "adam_opt.py")
        >>> _ = ctopt.export_source(d, path)
        >>> check_module(path, d, "Adam") <= 1e-12
        True
    """
    try:
        module = load_module(path)
        cls = getattr(module, class_name)
    except Exception as exc:  # any failure of the written text is the exporter's failure
        raise ExportCheckError(f"the exported module {str(path)!r} does not import "
                               f"({type(exc).__name__}: {exc})") from exc
    reference = run_oracle(design, steps)
    worst = 0.0
    for backend in backends:
        try:
            ours = run_exported(cls, steps, backend=backend)
        except Exception as exc:
            raise ExportCheckError(f"the exported optimizer fails on the {backend} path "
                                   f"({type(exc).__name__}: {exc})") from exc
        error = trajectory_error(ours, reference)
        if not error <= TOLERANCE:
            raise ExportCheckError(
                f"the exported optimizer's {backend} path differs from the oracle over {steps} "
                f"steps: relative error {error:.3g} > {TOLERANCE:g}")
        worst = max(worst, error)
    return worst
