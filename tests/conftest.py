"""Shared test fixtures: headless plotting and the reference problems."""

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def _quadratic(n: int = 6, cond: float = 100.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.geomspace(1.0 / cond, 1.0, n) * 4.0
    Q = (q * eig) @ q.T
    b = rng.standard_normal(n)
    return (lambda x: Q @ x - b), rng.standard_normal(n)


def _logistic(n: int = 5, samples: int = 40, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, n))
    y = (X @ rng.standard_normal(n) + 0.3 * rng.standard_normal(samples) > 0).astype(float)

    def grad(w):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        return X.T @ (p - y) / samples

    return grad, 0.1 * rng.standard_normal(n)


PROBLEMS = {"quadratic": _quadratic, "logistic": _logistic}


@pytest.fixture(params=sorted(PROBLEMS))
def problem(request):
    """(grad_fn, x0) for an ill-conditioned quadratic and a logistic regression."""
    return PROBLEMS[request.param]()


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and are immune to a busy machine's contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
