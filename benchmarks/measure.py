"""What the step benchmarks measure with: the parameter lists, the streaming kernels that give
the roofline, peak resident memory, and interleaved timing of variants (see ``bench_step.py``).

Example:
    >>> import measure
    >>> shapes = measure.shapes_mixed(100_000, 16)
    >>> len(shapes), sum(int(torch.tensor(s).prod()) for s in shapes)
    (16, 100000)
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import models  # noqa: E402

from ctopt.export import pages  # noqa: E402


def shapes_mixed(total: int, count: int) -> list[tuple[int, ...]]:
    """A transformer-like mix: a few large matrices, many mid-size ones, small vectors."""
    shapes: list[tuple[int, ...]] = []
    d = 1
    while 12 * d * d * (count // 8) < total:
        d += 16
    d = max(d - 16, 16)
    while len(shapes) < count - 1:
        kind = len(shapes) % 8
        if kind in (0, 1, 2, 3):
            shapes.append((d, d))
        elif kind in (4, 5):
            shapes.append((d, 2 * d) if kind == 4 else (2 * d, d))
        else:
            shapes.append((d,))
    used = sum(int(torch.tensor(s).prod()) for s in shapes)
    shapes.append((max(total - used, 1),))
    return shapes


def make_params(shapes, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(device) * 0.1) for s in shapes]


def model_list(name: str, quick: bool, device: str = "cpu"):
    """The parameters of list ``name``, with gradients (``randn * 0.01``)."""
    if name == "one":
        ps = make_params([(1_500_000 if quick else 10_000_000,)], device=device)
    elif name == "mixed":
        ps = make_params(shapes_mixed(1_500_000 if quick else 10_000_000, 50 if quick else 200),
                         device=device)
    else:
        ps = [torch.nn.Parameter(p.detach().to(device)) for p in models.build(name, quick)]
    gen = torch.Generator().manual_seed(1)
    for p in ps:
        p.grad = (torch.randn(p.shape, generator=gen) * 0.01).to(device)
    return ps


LIST_TITLES = {"one": "one tensor", "transformer": "transformer encoder",
               "convnet": "convnet with batch norm", "mixer": "MLP-mixer-like",
               "mixed": "mixed tensors", "resnet": "ResNet-18-shaped", "gpt2": "GPT-2-small-shaped",
               "policy": "RL policy MLP", "mlp": "MNIST MLP", "smallconv": "convnet, width 16"}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stream_bandwidth(numel: int, device: str, pool=None, tag: str = "") -> dict:
    """Bandwidth of simple streaming kernels on ``numel`` float32 elements, each on buffers
    rotated over eight arrays (so a kernel finds its operands evicted, as a step does): copy,
    in-place add and in-place scale (read and write), and sum and dot (read only); ``tag``
    is appended to each kernel's name."""
    pool = pool or [torch.randn(numel, device=device) for _ in range(8)]
    kernels = {"copy": (lambda a, b: a.copy_(b), 8), "add_": (lambda a, b: a.add_(b), 12),
               "scale_": (lambda a, b: a.mul_(1.0000001), 8), "sum": (lambda a, b: a.sum(), 4),
               "dot": (lambda a, b: torch.dot(a, b), 8)}
    out = {}
    for turn, (name, (fn, width)) in enumerate(kernels.items()):
        a, b = pool[(2 * turn) % 8], pool[(2 * turn + 1) % 8]
        sync(device)
        t0 = time.perf_counter()
        fn(a, b)
        sync(device)
        out[name + tag] = width * a.numel() / (time.perf_counter() - t0)
    return out


def stream_pools(numel: int, device: str) -> dict:
    """The streaming kernels' buffers: eight arrays as torch allocates them and, where the flat
    layout's buffers get them (see ``ctopt.export.pages``), eight on huge pages (tag " hp")."""
    n = min(numel, 16_000_000)
    pools = {"": [torch.randn(n, device=device) for _ in range(8)]}
    if device == "cpu" and pages.HUGE_PAGES and n * 4 >= pages.MIN_BYTES:
        pools[" hp"] = [pages.flat_empty(n, torch.float32, torch.device(device)).normal_()
                        for _ in range(8)]
    return pools


READ_WRITE, READ_ONLY = ("copy", "add_", "scale_"), ("sum", "dot")


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_LIBC = _libc()
_M_MMAP_THRESHOLD = -3
#: blocks from this size on are mapped on their own (and unmapped when freed) while a step's
#: memory is measured, so that a freed temporary leaves the resident set and shows in its peak
MEASURE_MMAP_THRESHOLD = 128 << 10
#: ... and otherwise, while steps are timed: glibc's own ceiling, which its dynamic threshold
#: reaches in a running process once such blocks have been freed (a temporary is then taken
#: from the heap, as in a user's training loop, not mapped and faulted in at every step)
TIMING_MMAP_THRESHOLD = 32 << 20


_threshold = [None]  # the threshold set last (None: glibc's own, dynamic)


def allocator(threshold: int) -> int | None:
    """Set glibc's mmap threshold (``MEASURE_MMAP_THRESHOLD`` or ``TIMING_MMAP_THRESHOLD``);
    returns the one set before, to restore with this function."""
    before, _threshold[0] = _threshold[0], threshold
    if _LIBC is not None and threshold is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, threshold)
    return before


def timing_allocator() -> None:
    """Set glibc's allocator as a training process runs it (see ``TIMING_MMAP_THRESHOLD``)."""
    allocator(TIMING_MMAP_THRESHOLD)


def peak_rss_delta(fn) -> float | None:
    """Peak resident memory added while ``fn`` runs (Linux: reset VmHWM via clear_refs), with
    free heap memory returned to the system first and every large block mapped on its own
    while it runs (so temporaries show, and none is served from memory already resident)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    before = allocator(MEASURE_MMAP_THRESHOLD)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
        fn()
        return _status("VmHWM") - base
    except OSError:
        return None
    finally:
        allocator(before)


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return float(line.split()[1]) * 1024
    raise OSError(key)


class Variant:
    """One optimizer on its own copy of a parameter list, timed step by step (``tiny``: on as
    many tensors of one element each instead: the step's fixed cost on that many tensors)."""

    def __init__(self, label, build, list_name, quick, device, bytes_per_elem, tiny=0):
        self.label, self.device, self.bytes = label, device, bytes_per_elem
        before = allocator(MEASURE_MMAP_THRESHOLD)  # parameters and states mapped on their own
        try:
            self._setup(build, list_name, quick, device, tiny)
        finally:
            allocator(before)

    def _setup(self, build, list_name, quick, device, tiny) -> None:
        if tiny:
            self.ps = make_params([(1,)] * tiny, device=device)
            for p in self.ps:
                p.grad = torch.randn_like(p)
        else:
            self.ps = model_list(list_name, quick, device)
        self.numel = sum(p.numel() for p in self.ps)
        self.param_bytes = sum(p.numel() * p.element_size() for p in self.ps)
        t0 = time.perf_counter()
        self.opt, self.step = build(self.ps)
        self.first_peak = peak_rss_delta(self.step) if device == "cpu" else None
        sync(device)
        self.first = time.perf_counter() - t0
        self.step()
        self.times: list[float] = []
        self.state = sum(v.numel() * v.element_size() for s in self.opt.state.values()
                         for k, v in s.items() if isinstance(v, torch.Tensor) and k != "step")
        self.transient = peak_rss_delta(self.step) if device == "cpu" else None

    def tick(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - t0)

    def finish(self) -> Variant:
        del self.opt, self.step, self.ps
        return self

    @property
    def ms(self) -> float:
        return statistics.median(self.times) * 1e3


def interleaved(variants, reps: int, device: str, numel: int) -> dict:
    """Round-robin timing of ``variants`` with the streaming kernels (on both kinds of pages,
    :func:`stream_pools`); returns each kernel's bandwidth, its median over the rounds (the
    roofline: :func:`roof_bandwidths`)."""
    pools = stream_pools(numel, device)
    samples: dict = {}
    for r in range(reps):
        for tag, pool in pools.items():
            for name, value in stream_bandwidth(0, device, pool, tag).items():
                samples.setdefault(name, []).append(value)
        for i in range(len(variants)):  # each variant first in turn: no place is favoured
            variants[(r + i) % len(variants)].tick()
    del pools
    return {name: statistics.median(values) for name, values in samples.items()}


def roof_bandwidths(bandwidths: dict) -> tuple[float, float]:
    """The roofline bandwidths ``(read and write, read only)``: the best kernel of each kind,
    on either kind of pages."""
    def best(names):
        return max(b for n, b in bandwidths.items() if n.removesuffix(" hp") in names)

    return best(READ_WRITE), best(READ_ONLY)


def mb(x) -> str:
    return "n/a" if x is None else f"{x / 1e6:.0f}"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
