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
    against torch.optim's own implementation (fused and foreach, where torch has it): medians
    of ``steps`` steps taken in turn in one process, each after ``zero_grad()`` and a backward
    pass, as in a training loop (outside the timed step). Returns the rows it prints.

    Example:
        >>> import io, ctopt
        >>> rows = bench([ctopt.zoo.get("sgd")], numel=1000, steps=2, out=io.StringIO())
        >>> [row["path"] for row in rows]
        ['torch fused', 'torch foreach', 'ctopt auto']
    """
    import statistics
    import sys
    import types

    designs = list(designs)
    numel = check_count(numel, "numel", MAX_NUMEL)
    steps = check_count(steps, "steps", MAX_STEPS)
    for d in designs:
        if not isinstance(d, Design):
            raise DesignError(f"bench times designs; got {type(d).__name__}")

    import torch

    from .export import to_torch

    out = out or sys.stdout
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(numel, generator=gen) for _ in range(2)]
    start = torch.randn(numel, generator=gen)

    def backward(opt, param, i: int) -> None:
        """As a training loop between steps: ``zero_grad()``, then a backward pass makes
        ``param.grad`` (here ``grads[i % 2]``), outside the timed step."""
        opt.zero_grad()
        (param * grads[i % 2]).sum().backward()

    def variant(cls, **options):
        param = torch.nn.Parameter(start.clone())
        opt = cls([param], **options)
        backward(opt, param, 0)
        t0 = time.perf_counter()
        opt.step()  # the first step (ctopt's includes the compile, where it compiles)
        return types.SimpleNamespace(opt=opt, param=param, first=time.perf_counter() - t0,
                                     times=[])

    rows = []
    print(f"{'design':<12} {'path':<22} {'ms/step':>9} {'vs torch':>9}", file=out)
    for d in designs:
        variants = {f"ctopt {backend}": variant(to_torch(d), backend=backend)}
        if d.name in _TORCH_EQUIVALENT:
            cls_name, kwargs = _TORCH_EQUIVALENT[d.name]
            for kind in ("fused", "foreach"):
                try:
                    variants[f"torch {kind}"] = variant(
                        getattr(torch.optim, cls_name), lr=d.defaults["lr"], **kwargs,
                        **{kind: True})
                except (RuntimeError, TypeError):  # this torch has no such implementation
                    continue
        order = list(variants.values())
        for i in range(1, steps + 3):  # interleaved: each in turn, the first rotating
            for v in order[i % len(order):] + order[:i % len(order)]:
                backward(v.opt, v.param, i)
                t0 = time.perf_counter()
                v.opt.step()
                if i > 2:
                    v.times.append(time.perf_counter() - t0)
        ms = {label: 1e3 * statistics.median(v.times) for label, v in variants.items()}
        reference = min((m for label, m in ms.items() if label.startswith("torch")),
                        default=None)
        for label in sorted(variants, key=lambda label: label.startswith("ctopt")):
            first = variants[label].first
            row = {"design": d.name, "path": label, "ms": ms[label]}
            ratio, note = "", ""
            if label.startswith("ctopt"):
                row["first_step_s"] = first
                ratio = f"{ms[label] / reference:8.2f}x" if reference else ""
                note = f"   (first step incl. setup {first:.2f} s)"
            rows.append(row)
            print(f"{d.name:<12} {label:<22} {ms[label]:9.3f} {ratio:>9}{note}", file=out)
    print(f"{numel} float32 elements, median of {steps} steps taken in turn; each after "
          "zero_grad() and a backward pass, as in training; ratio against torch's fastest.",
          file=out)
    return rows
