"""``ctopt bench``: one optimizer step of exported designs timed against torch.optim's own
implementations, medians in one process. The full suite, with roofline fractions and compile
times, is ``benchmarks/bench_step.py``.

Example:
    >>> from ctopt.bench import bench
    >>> callable(bench)
    True
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TextIO

from .design import Design
from .errors import DesignError
from .limits import check_count

__all__ = ["bench"]

#: Largest ``numel`` (float32 elements: 4 GiB per tensor) and ``steps`` that ``bench`` accepts.
MAX_NUMEL, MAX_STEPS = 1 << 30, 100_000


_TORCH_EQUIVALENT = {
    "sgd": ("SGD", {}),
    "heavy_ball": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "amsgrad": ("Adam", {"amsgrad": True}),
}


def bench(
    designs: Iterable[Design],
    *,
    numel: int = 1 << 22,
    steps: int = 20,
    backend: str = "auto",
    out: TextIO | None = None,
) -> list[dict[str, object]]:
    """Time one optimizer step of each exported design on a float32 tensor of ``numel`` elements
    against torch.optim's own implementation (foreach, and fused where torch has it), medians in
    one process. Returns the rows it prints.

    Example:
        >>> import ctopt
        >>> rows = bench([ctopt.zoo.get("sgd")], numel=1000, steps=2)  # doctest: +SKIP
    """
    import statistics
    import sys

    designs = list(designs)
    numel = check_count(numel, "numel", MAX_NUMEL)
    steps = check_count(steps, "steps", MAX_STEPS)
    for d in designs:
        if not isinstance(d, Design):
            raise DesignError(f"bench times designs; got {type(d).__name__}")

    import torch

    from .export import to_torch

    out = out or sys.stdout

    def median_ms(opt, param) -> float:
        times = []
        for i in range(steps + 3):
            param.grad = grads[i % len(grads)]
            t0 = time.perf_counter()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(numel, generator=gen) for _ in range(2)]
    rows = []
    print(f"{'design':<12} {'path':<22} {'ms/step':>9} {'vs torch':>9}", file=out)
    for d in designs:
        param = torch.nn.Parameter(torch.randn(numel, generator=gen))
        t0 = time.perf_counter()
        opt = to_torch(d)([param], backend=backend)
        param.grad = grads[0]
        opt.step()
        first = time.perf_counter() - t0
        mine = median_ms(opt, param)
        reference = None
        if d.name in _TORCH_EQUIVALENT:
            cls_name, kwargs = _TORCH_EQUIVALENT[d.name]
            cls = getattr(torch.optim, cls_name)
            for variant in ("fused", "foreach"):
                p = torch.nn.Parameter(param.detach().clone())
                try:
                    ref = cls([p], lr=d.defaults["lr"], **kwargs, **{variant: True})
                    ms = median_ms(ref, p)
                except (RuntimeError, TypeError):
                    continue
                rows.append({"design": d.name, "path": f"torch {variant}", "ms": ms})
                print(f"{d.name:<12} {'torch ' + variant:<22} {ms:9.3f} {'':>9}", file=out)
                reference = ms if reference is None else min(reference, ms)
        ratio = f"{mine / reference:8.2f}x" if reference else ""
        label = f"ctopt {backend}"
        rows.append({"design": d.name, "path": label, "ms": mine, "first_step_s": first})
        print(f"{d.name:<12} {label:<22} {mine:9.3f} {ratio:>9}   (first step incl. setup "
              f"{first:.2f} s)", file=out)
    print(f"{numel} float32 elements, median of {steps} steps; ratio against torch's fastest.",
          file=out)
    return rows
