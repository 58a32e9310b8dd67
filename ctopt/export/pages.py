"""The flat buffers' memory: on the host, transparent huge pages. Torch only — copied into
standalone exports.

A step streams its flat buffers (parameters, gradients, states) from memory once. On 4 KiB
pages such a stream takes a TLB miss every 4 KiB — a page walk, which in a virtual machine
walks two page tables — and the hardware prefetcher stops at every page boundary. Where the
kernel leaves transparent huge pages to the program (``madvise`` mode, the default of many
Linux distributions), torch's tensors get none. :func:`flat_empty` allocates a large host
buffer as anonymous private memory, its whole huge pages advised ``MADV_HUGEPAGE``: the step
then runs 4–13 % faster on the larger model lists of ``benchmarks/bench_step.py``, for a
slower first write of the buffers (measured in ``docs/performance.md``). Everywhere else —
another device, a buffer under one huge page (:data:`MIN_BYTES`), no ``MADV_HUGEPAGE`` (not
Linux), or :data:`HUGE_PAGES` set False — it is ``torch.empty``.

On huge pages a buffer's physical address repeats its virtual one in the low 21 bits, so
buffers aligned alike would have a step's streams (theta, g and each state at the same index)
map to the same cache sets; each buffer therefore starts a different number of cache lines
(:data:`COLOR_BYTES` times its number, modulo :data:`COLORS`) past its first huge-page
boundary.

The buffer is an ordinary tensor (``torch.frombuffer`` over the mapping, which it keeps alive
and unmaps when its storage is freed); it is private memory, copied on write after ``fork``,
as ``malloc``'s is.

Example:
    >>> import torch
    >>> t = flat_empty(1 << 22, torch.float32, torch.device("cpu"))  # 16 MiB
    >>> t.shape, t.dtype, t.data_ptr() % 64
    (torch.Size([4194304]), torch.float32, 0)
"""

from __future__ import annotations

import itertools
import mmap

import torch

__all__ = ["COLORS", "COLOR_BYTES", "HUGE_PAGES", "MIN_BYTES", "PAGE_BYTES", "flat_empty"]

#: use huge pages for the flat host buffers (set False to allocate them as torch does)
HUGE_PAGES = hasattr(mmap, "MADV_HUGEPAGE")


def _page_bytes() -> int:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2 << 20


#: the huge-page size (2 MiB on x86-64)
PAGE_BYTES = _page_bytes()
#: the smallest buffer put on huge pages: one whole huge page
MIN_BYTES = PAGE_BYTES
#: the step between buffers' starts: 37 cache lines (coprime with the lines of a 4 KiB page)
COLOR_BYTES = 37 * 64
#: the number of distinct starts
COLORS = 16
_buffers = itertools.count()  # buffers made so far: the next one's color


def flat_empty(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialized flat buffer of ``numel`` elements, on huge pages where that applies (see
    the module docstring); else ``torch.empty(numel, dtype=dtype, device=device)``.

    Example:
        >>> import torch
        >>> flat_empty(3, torch.float64, torch.device("cpu")).shape  # small: torch.empty
        torch.Size([3])
    """
    nbytes = numel * dtype.itemsize
    if not HUGE_PAGES or nbytes < MIN_BYTES or torch.device(device).type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    color = next(_buffers) % COLORS * COLOR_BYTES
    try:
        mapping = mmap.mmap(-1, nbytes + color + PAGE_BYTES,
                            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = torch.frombuffer(mapping, dtype=torch.uint8, count=1).data_ptr()
        skip = -base % PAGE_BYTES  # to the first huge-page boundary: the pages before stay unused
        # whole huge pages only: the buffer's tail stays on small pages, so that no partly used
        # huge page is resident
        mapping.madvise(mmap.MADV_HUGEPAGE, skip, (color + nbytes) // PAGE_BYTES * PAGE_BYTES)
    except (OSError, ValueError):  # no memory for the mapping, or advice refused: as torch does
        return torch.empty(numel, dtype=dtype, device=device)
    return torch.frombuffer(mapping, dtype=dtype, count=numel, offset=skip + color)
