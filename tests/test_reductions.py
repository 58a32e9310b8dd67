"""The group reductions' sum of squares (``ctopt.export.reductions.square_sum``) against exact
arithmetic: for any float tensor, dtype, shape and stride, within the bound that holds for every
order of summation of non-negative terms, (n + 1) unit roundoffs of the exact sum (Higham,
Accuracy and Stability of Numerical Algorithms, section 4.2); and the design's clip equals
torch's ``clip_grad_norm_`` on the same gradients."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.export.reductions import square_sum


def exact(x: torch.Tensor) -> Fraction:
    return sum((Fraction(float(v)) ** 2 for v in x.detach().double().flatten().tolist()),
               Fraction(0))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(n=st.integers(1, 3000), dtype=st.sampled_from([torch.float32, torch.float64,
                                                      torch.bfloat16, torch.float16]),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), layout=st.sampled_from(["flat", "matrix",
                                                                        "column", "sliced"]),
       seed=st.integers(0, 2**31 - 1))
def test_square_sum_is_within_the_summation_bound_of_the_exact_sum(n, dtype, scale, layout,
                                                                  seed):
    gen = torch.Generator().manual_seed(seed)
    base = (torch.randn(2 * n + 1, generator=gen, dtype=torch.float64) * scale).to(dtype)
    x = {"flat": base[:n], "matrix": base[: n - n % 3].view(3, -1) if n >= 3 else base[:n],
         "column": base[: 2 * n].view(n, 2)[:, 0], "sliced": base[1 : 2 * n : 2]}[layout]
    got = square_sum(x)
    assert got.dtype == torch.float64 and got.dim() == 0
    truth = exact(x)
    # float32 accumulation for the low-precision dtypes, the dtype's own above
    unit = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).eps / 2
    bound = (x.numel() + 1) * unit * float(truth) * 1.01  # + the float64 result's rounding
    assert abs(Fraction(float(got)) - truth) <= Fraction(bound) + Fraction(1, 10**300)


def test_a_dot_product_takes_the_contiguous_float_tensors():
    """The fast path is taken exactly where it applies (a spy on ``torch.dot``)."""
    seen = []
    dot = torch.dot
    try:
        torch.dot = lambda a, b: (seen.append(a.numel()), dot(a, b))[1]
        for x in (torch.ones(6), torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 3)[:, 0],
                  torch.ones(4, dtype=torch.bfloat16)):
            square_sum(x)
    finally:
        torch.dot = dot
    assert seen == [6, 6]


@pytest.mark.parametrize("backend", ["forloop", "foreach", "auto"])
def test_a_clipped_step_equals_torch_clip_grad_norm(backend):
    """δ-GClip with gamma and delta set so that its step is lr * min(1, gamma / ||g||) * g — the
    gradient clipped to norm gamma — equals torch.nn.utils.clip_grad_norm_ followed by SGD, on
    gradients large enough to be clipped, in float64. torch divides by ||g|| + 1e-6, which moves
    each parameter by at most lr * gamma * max|g| * 1e-6 / ||g||^2 (below 1e-11 here) from the
    exact clip: the tolerance."""
    torch.manual_seed(0)
    shapes = [(64, 33), (33,), (7, 5, 3), (1,)]
    ours = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    Clip = ctopt.to_torch(ctopt.zoo.get("dgclip"))
    opt = Clip(ours, lr=0.1, gamma=0.5, delta=0.0, backend=backend)
    sgd = torch.optim.SGD(ref, lr=0.1)
    for _ in range(3):
        grads = [torch.randn(s, dtype=torch.float64) * 10 for s in shapes]
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        total = math.sqrt(sum(float(g.square().sum()) for g in grads))
        assert total > 0.5  # clipped
        torch.nn.utils.clip_grad_norm_(ref, max_norm=0.5)
        sgd.step()
        opt.step()
        shift = 0.1 * 0.5 * max(float(g.abs().max()) for g in grads) * 1e-6 / total**2
        for p, q in zip(ours, ref, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-13, atol=2 * shift)
