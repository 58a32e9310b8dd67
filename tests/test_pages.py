"""The flat host buffers on transparent huge pages (ctopt.export.pages): where they are advised,
that they are private memory freed with their tensor, and that an optimizer on them steps
exactly as on torch's own allocations."""

from __future__ import annotations

import ctypes
import gc
import io
import mmap
import os
import sys

import pytest
import torch

import ctopt
from ctopt.export import pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux") or not pages.HUGE_PAGES,
                           reason="transparent huge pages are a Linux feature")


def region_flags(address: int) -> list[str] | None:
    """The VmFlags of the mapping holding ``address`` in /proc/self/smaps (None: unmapped)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    return None


@linux
def test_large_buffer_has_its_whole_huge_pages_advised_and_its_own_color():
    whole = pages.MIN_BYTES // 4  # float32 elements in one huge page
    t = pages.flat_empty(whole + 1000, torch.float32, torch.device("cpu"))
    assert t.shape == (whole + 1000,) and t.dtype == torch.float32 and t.is_contiguous()
    color = t.data_ptr() % pages.PAGE_BYTES  # past the huge-page boundary, in whole lines
    assert color % 64 == 0 and color < pages.COLORS * pages.COLOR_BYTES
    end = t.data_ptr() - color + (color + 4 * t.numel()) // pages.PAGE_BYTES * pages.PAGE_BYTES
    assert "hg" in region_flags(t.data_ptr())  # MADV_HUGEPAGE on the whole huge pages
    assert "hg" in region_flags(end - 1)
    assert "hg" not in region_flags(end) and end < t[-1].data_ptr()  # the tail: small pages
    t.fill_(3.0)
    assert t[-1].item() == 3.0 and t.sum().item() == 3.0 * t.numel()
    colors = {pages.flat_empty(whole, torch.float32, "cpu").data_ptr() % pages.PAGE_BYTES
              for _ in range(pages.COLORS)}
    assert len(colors) == pages.COLORS  # each buffer of a layout starts at its own offset


@linux
def test_buffer_is_unmapped_with_its_last_view():
    t = pages.flat_empty(pages.MIN_BYTES // 8, torch.float64, "cpu")
    view = t[5:9].view(2, 2)
    address = t.data_ptr()
    del t
    gc.collect()
    assert region_flags(address) is not None  # the view keeps the mapping
    view.fill_(1.0)
    del view
    gc.collect()
    assert region_flags(address) is None


@linux
def test_buffer_is_private_across_fork():
    t = pages.flat_empty(pages.MIN_BYTES // 4, torch.float32, "cpu").zero_()
    pid = os.fork()
    if pid == 0:  # the child writes through the raw address only (no torch after fork)
        ctypes.c_float.from_address(t.data_ptr()).value = 5.0
        os._exit(0 if ctypes.c_float.from_address(t.data_ptr()).value == 5.0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t[0].item() == 0.0  # copied on write, as malloc's memory is


def test_small_other_device_and_switched_off_fall_back_to_torch_empty(monkeypatch):
    def no_mapping(*args, **kwargs):
        raise AssertionError("mapped")

    monkeypatch.setattr(mmap, "mmap", no_mapping)
    big = pages.MIN_BYTES // 4
    assert pages.flat_empty(1000, torch.float32, "cpu").shape == (1000,)
    assert pages.flat_empty(big, torch.float32, torch.device("meta")).device.type == "meta"
    monkeypatch.setattr(pages, "HUGE_PAGES", False)
    assert pages.flat_empty(big, torch.float32, "cpu").shape == (big,)


def test_refused_mapping_falls_back_to_torch_empty(monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(pages, "HUGE_PAGES", True)
    monkeypatch.setattr(mmap, "mmap", refused)
    assert pages.flat_empty(pages.MIN_BYTES, torch.float32, "cpu").numel() == pages.MIN_BYTES


def _run(huge: bool, monkeypatch, steps: int = 3, dtype=torch.float32, **kwargs):
    """Adam over two parameters of one huge page together, on the compiled path's flat
    layout."""
    monkeypatch.setattr(pages, "HUGE_PAGES", huge)
    gen = torch.Generator().manual_seed(0)
    n = pages.MIN_BYTES // (2 * dtype.itemsize) + 17
    ps = [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype)),
          torch.nn.Parameter(torch.randn(n - 5, 1, generator=gen).to(dtype))]
    opt = ctopt.to_torch(ctopt.zoo.get("adam"))(ps, lr=1e-2, backend="compiled", **kwargs)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        opt.step()
    return ps, opt


@linux
def test_optimizer_on_huge_pages_steps_bit_for_bit_as_on_torch_memory(monkeypatch):
    ps, opt = _run(True, monkeypatch)
    (layout,) = opt._runner.flat.values()
    plain_ps, plain_opt = _run(False, monkeypatch)
    for p, q in zip(ps, plain_ps, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg_sq"], plain_opt.state[q]["exp_avg_sq"])
    # parameters, gradients and states all live in advised mappings
    for t in (ps[0], ps[0].grad, opt.state[ps[1]]["exp_avg"], opt.state[ps[0]]["exp_avg_sq"]):
        assert "hg" in region_flags(t.data_ptr())
    assert "hg" not in region_flags(plain_ps[0].data_ptr())
    assert layout.flat_params and layout.theta.data_ptr() % 64 == 0
    # a checkpoint of it resumes on torch's memory, and the two stay equal
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    plain_opt.load_state_dict(torch.load(buffer))
    for p, q in zip(ps, plain_ps, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt.step()
    plain_opt.step()
    for p, q in zip(ps, plain_ps, strict=True):
        assert torch.equal(p, q)


def test_flat_parameters_lays_out_on_huge_pages(monkeypatch):
    model = torch.nn.Linear(1024, pages.MIN_BYTES // 4096 + 1)
    weight = model.weight.detach().clone()
    (flat,) = ctopt.export.flat_parameters(model)
    assert torch.equal(model.weight, weight) and torch.count_nonzero(model.weight.grad) == 0
    assert model.weight.data_ptr() == flat.data_ptr()
    if sys.platform.startswith("linux") and pages.HUGE_PAGES:
        assert "hg" in region_flags(flat.data_ptr())
        assert "hg" in region_flags(model.weight.grad.data_ptr())


@linux
def test_master_weights_of_bfloat16_parameters_on_huge_pages_equal_torch_memory(monkeypatch):
    ps, opt = _run(True, monkeypatch, dtype=torch.bfloat16, master_weights=True)
    plain_ps, plain_opt = _run(False, monkeypatch, dtype=torch.bfloat16, master_weights=True)
    for p, q in zip(ps, plain_ps, strict=True):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q)
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        assert torch.equal(opt.state[p]["exp_avg"], plain_opt.state[q]["exp_avg"])
    assert "hg" in region_flags(ps[0].data_ptr()) and "hg" in region_flags(ps[0].grad.data_ptr())
    assert "hg" in region_flags(opt.state[ps[0]]["exp_avg_sq"].data_ptr())
