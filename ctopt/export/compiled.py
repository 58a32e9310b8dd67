"""The compiled path and the flat parameter layout. Torch only — copied into standalone exports.

The generated ``_fused(theta, g, *states, coef)`` is compiled once per (device, dtype) with
``torch.compile(dynamic=True, fullgraph=True)`` (and then called directly, see :mod:`.direct`):
one fused elementwise kernel (C++/OpenMP on CPU, Triton on GPU) that reads theta, g and the
states once and writes them once. With master
weights (see :mod:`.master`) a low-precision bucket runs :func:`.master_update` instead: it reads
g, the float32 master copy and the float32 states, and writes them and theta. Everything per-step
(lr, betas, bias corrections, clip factors) arrives in the 1-D tensor ``coef``, so a scheduler
that changes lr or betas never recompiles.

States, parameters and gradients live in flat buffers per (param group, device, dtype) (see
:mod:`.layout`): a step over a group whose parameters all have a gradient is one kernel call.
With ``flatten_parameters = False`` on the optimizer (or non-contiguous parameters) only the
states are flat: the small tensors are gathered into one call, the large ones (>=
``DIRECT_NUMEL``) called one by one (the same compiled code; tensors of fewer than 2 elements run
eagerly).
"""

from __future__ import annotations

import functools
import shutil
import warnings

import torch

from .capture import DeviceHyper
from .direct import HostVector, Kernel
from .eager import Eager
from .layout import FlatLayout, same_marks
from .master import MASTER_KEY, master_update, unscale_grad
from .pages import flat_empty
from .scaling import scaled_update

__all__ = ["CompiledRunner", "flat_parameters"]


@functools.cache
def _compiler_present() -> bool:
    return hasattr(torch, "compile") and (shutil.which("c++") is not None or
                                          shutil.which("g++") is not None or
                                          torch.cuda.is_available())


class CompiledRunner:
    """Runs an exported optimizer's step through its fused kernel on the flat layout: the
    compiled one, or with ``eager`` the design's for-loop code on the flat buffers (see
    :mod:`.eager`) until :meth:`compile`."""

    def __init__(self, cls, eager: bool = False):
        self.cls = cls
        self.eager = eager
        self.fused = None
        self.failed = False
        self.succeeded = False
        self.flat: dict = {}
        self.steps = 0
        self.scaled = None
        self.scaled_ok = False
        self.masters: dict = {}
        self.masters_ok: set = set()

    def available(self) -> bool:
        """Whether the kernels can run here: the eager ones anywhere, the compiled ones where
        torch.compile can (a C++ compiler on CPU; Triton on CUDA)."""
        return not self.failed and (self.eager or _compiler_present())

    def can_compile(self) -> bool:
        return not self.failed and _compiler_present()

    def compile(self) -> None:
        """The compiled kernels from the next call on, instead of the eager ones; the flat
        layouts stay as they are (their next step compiles, once per class)."""
        if not self.eager:
            return
        self.eager = False
        self.fused = self.scaled = None
        self.masters.clear()
        self.masters_ok.clear()
        self.succeeded = self.scaled_ok = False
        for layout in self.flat.values():
            layout.bound = None

    def kernel(self):
        """The fused kernel: the compiled ``_fused``, shared by every optimizer of the class
        (compiled once per device and dtype), or with ``eager`` :class:`.Eager`."""
        if self.fused is None and self.eager:
            self.fused = Eager(self.cls._forloop)
        elif self.fused is None:
            fused = self.cls.__dict__.get("_compiled_fused")
            if fused is None:
                fused = Kernel(self.cls._fused)
                self.cls._compiled_fused = fused
            self.fused = fused
        return self.fused

    def scaled_kernel(self):
        """The compiled kernel with gradient scaling: ``(theta, g, *states, coef, grad_scale,
        found_inf)`` (see :func:`.scaled_update`), shared by every optimizer of the class."""
        if self.scaled is None:
            scaled = self.cls.__dict__.get("_compiled_scaled")
            if scaled is None:
                scaled = Kernel(scaled_update(self.cls))
                self.cls._compiled_scaled = scaled
            self.scaled = scaled
        return self.scaled

    def master_kernel(self, kind: str):
        """A compiled master-weight kernel, shared by every optimizer of the class: ``kind`` is
        "plain" (:func:`.master_update`), "scaled" (with gradient scaling), "scaled apart"
        (scaled, ``found_inf`` read as zero on the host, the gradient's write-back left to
        "unscale": :func:`.unscale_grad`)."""
        if kind not in self.masters:
            kernels = self.cls.__dict__.get("_compiled_masters")
            if kernels is None:
                kernels = self.cls._compiled_masters = {}
            if kind not in kernels:
                kernels[kind] = Kernel(unscale_grad if kind == "unscale" else master_update(
                    self.cls, kind != "plain", found_on_host=kind == "scaled apart"))
            self.masters[kind] = kernels[kind]
        return self.masters[kind]

    def run(self, opt, gi: int, items, states, coefficients, scaling=None) -> None:
        """Update the parameters ``items`` (with their ``states``) of group ``gi`` and advance
        their step counters; ``scaling`` is ``(grad_scale, found_inf)`` or None."""
        buckets: dict = {}
        for (_, p), state in zip(items, states, strict=True):
            if p.numel() > 0:
                buckets.setdefault((p.device, p.dtype), []).append((p, state))
            else:
                state["step"] += 1
        for (device, dtype), members in buckets.items():
            cache: dict = {}

            def coef(k, device=device, dtype=dtype, cache=cache):
                if k not in cache:
                    cache[k] = self._coef(coefficients(k), dtype, device)
                return cache[k]

            amp = None if scaling is None else tuple(t.to(device, non_blocking=True)
                                                     for t in scaling)
            self._run_bucket(opt, gi, device, dtype, members, coef, coefficients, amp)

    def steady(self, opt, gi: int, marks=None):
        """``(layout, k)`` when group ``gi``'s step is the usual one: its parameters, all with a
        gradient in the flat buffer, are exactly one intact flat layout's, at one step count
        ``k - 1``; else None (the general path then checks and repairs everything). ``marks``:
        the optimizer's :func:`.state_marks` now (when they equal those of the layout's last
        check, its states need no look)."""
        params = opt.param_groups[gi]["params"]
        if not params or self.failed:
            return None
        p0 = params[0]
        layout = self.flat.get((gi, p0.device, p0.dtype))
        if layout is None or not layout.flat_params or \
                not (self.masters_ok if MASTER_KEY in layout.buffers else self.succeeded) or \
                layout.signature != (id(params), len(params), len(opt.state)) or \
                not layout.in_place(params):
            return None
        if not same_marks(marks, layout.marks):
            if not layout.same_states(opt):
                return None
            layout.marks = marks
        elif not layout.states_home():
            return None
        if not opt.capturable or layout.host_step is None:
            ks = layout.step_counts()  # free on the host; capturable steps read it back once
            if ks.count(ks[0]) != len(ks):
                return None
            layout.host_step = int(ks[0])
        self.steps += 1
        return layout, layout.host_step + 1

    def run_steady(self, layout, coefficients, device_values=None, scaling=None,
                   now=None) -> None:
        """The usual step over a :meth:`steady` layout: one kernel call, step counters + 1.
        ``device_values`` (capturable steps): ``(values, gsign)``, from which the kernel's
        coefficients are computed on the device (see :mod:`.capture`); ``scaling``:
        ``(grad_scale, found_inf)`` for the kernel (a capturable step counts a skipped step
        out on the device; otherwise the optimizer undoes the count as in :meth:`run`);
        ``now``: every counter's value, as just read (see :meth:`.FlatLayout.count_step`)."""
        if device_values is None and scaling is None and layout.bound is not False and \
                self._run_bound(layout, coefficients):
            layout.count_step(now)
            layout.host_step += 1
            return
        theta = layout.theta
        if device_values is None:
            coef = self._coef(coefficients, theta.dtype, theta.device)
        else:
            if layout.device_hyper is None:
                layout.device_hyper = DeviceHyper()
            coef = layout.device_hyper.coefficients(self.cls, *device_values, layout.steps,
                                                    theta.dtype)
        master = MASTER_KEY in layout.buffers
        keys = (MASTER_KEY, *self.cls.state_keys) if master else self.cls.state_keys
        amp = None if scaling is None else tuple(t.to(theta.device, non_blocking=True)
                                                 for t in scaling)
        self._call(theta, layout.grad, [layout.buffers[key] for key in keys], coef, amp, master)
        if amp is not None and device_values is not None:
            layout.steps.add_((amp[1] == 0).to(layout.steps.dtype))
        else:
            layout.steps.add_(1)
        layout.host_step += 1  # with a capturable skipped step: the steps the host ran

    def _run_bound(self, layout, coefficients) -> bool:
        """The steady step's kernel call on the host, bound to the layout's buffers once (see
        :meth:`.Kernel.bind`), its coefficients written into the bound ``coef`` in place;
        False (nothing written) where there is none."""
        if layout.bound is None:
            theta = layout.theta
            if theta.device.type != "cpu" or MASTER_KEY in layout.buffers or self.eager:
                layout.bound = False
                return False
            if torch.compiler.is_compiling():
                return False
            coef = HostVector(_coef_tensor(coefficients, theta.dtype, theta.device))
            states = [_plain(layout.buffers[key]) for key in self.cls.state_keys]
            call = self.kernel().bind(_plain(theta), _plain(layout.grad), *states, coef.tensor)
            layout.bound = False if call is None else (call, coef)
            if call is None:
                return False
        call, coef = layout.bound
        if not coef.write(coefficients):
            return False
        try:
            call()
        except AssertionError:  # the generated code's size check, before any write
            layout.bound = False
            return False
        return True

    def _state_owners(self, opt, gi, device, dtype):
        params = [p for p in opt.param_groups[gi]["params"]
                  if p.dtype == dtype and p.device == device and p.numel() > 0 and opt.state.get(p)]
        return params, [opt.state[p] for p in params]

    def _run_bucket(self, opt, gi, device, dtype, members, coef, coefficients, amp) -> None:
        master = opt._keeps_master(members[0][0])
        keys = (MASTER_KEY, *self.cls.state_keys) if master else self.cls.state_keys
        layout = self.layout(opt, gi, device, dtype, keys)
        done = set()
        if layout.flat_params:
            done = self._run_flat(layout, keys, {id(p) for p, _ in members}, coef, amp, master)
            if len(done) == len(members):  # the usual step: one call updated them all
                return
        elif len(members) > 1 and len(members) == len(layout.ids) and \
                {id(p) for p, _ in members} == set(layout.ids) and amp is None and not master:
            ks = layout.steps.tolist()
            if ks.count(ks[0]) == len(ks):
                done = self._run_gathered(layout, keys, coef(int(ks[0]) + 1))
        layout.host_step = None  # counters stepped one by one: read them back at the next step
        for p, state in members:
            if id(p) in done:
                continue
            k = int(state["step"]) + 1
            state["step"] += 1
            olds = [state[key] for key in keys]
            if p.numel() >= 2 and p.is_contiguous() and p.grad.is_contiguous() and \
                    all(s.is_contiguous() for s in olds):
                views = [s.view(-1) for s in olds]
                if self._call(p.detach().view(-1), p.grad.view(-1), views, coef(k), amp, master):
                    continue
            if master:
                master_update(self.cls, amp is not None)(p.detach(), p.grad, *olds, coef(k),
                                                         *(amp or ()))
            elif amp is None:
                out = self.cls._elementwise(p, p.grad, *olds, *coefficients(k))
                p.copy_(out[0])
                for old, new in zip(olds, out[1:], strict=False):
                    old.copy_(new)
            else:
                scaled_update(self.cls)(p.detach(), p.grad, *olds, coef(k), *amp)

    def layout(self, opt, gi, device, dtype, keys) -> FlatLayout:
        """The flat layout (of the states ``keys``) of group ``gi`` on (device, dtype), built or
        repaired as needed."""
        layout = self.flat.get((gi, device, dtype))
        self.steps += 1
        params = opt.param_groups[gi]["params"]
        signature = (id(params), len(params), len(opt.state))
        if layout is not None and layout.signature == signature and layout.same_states(opt):
            if layout.flat_params and not layout.intact():  # the common case: nothing changed
                layout.rebuild(self.steps)
            return layout
        owners, owner_states = self._state_owners(opt, gi, device, dtype)
        if layout is None or not layout.valid(owners, owner_states):
            if layout is not None:
                layout.remove_hooks()
            layout = FlatLayout(keys, owners, owner_states,
                                flatten=getattr(opt, "flatten_parameters", True),
                                steps_on_device=getattr(opt, "capturable", False))
            for key, other in list(self.flat.items()):  # e.g. the layout before model.to(dtype)
                if key[0] == gi and other.flat_params and not other.intact():
                    other.remove_hooks()
                    del self.flat[key]
            self.flat[(gi, device, dtype)] = layout
        elif layout.flat_params and not layout.intact():
            layout.rebuild(self.steps)
        layout.signature = signature
        return layout

    def _run_flat(self, layout, keys, member_ids, coef, amp=None, master=False) -> set:
        """One kernel call per span of parameters with a gradient (the whole layout when every
        parameter has one); returns the ids of the parameters updated."""
        present = [id(p) in member_ids for p in layout.order]
        layout.adopt_gradients(present)
        if layout.host_step is not None and layout.steps.device.type != "cpu":
            ks = [float(layout.host_step)] * len(present)  # capturable: nothing read back
        else:
            ks = layout.steps.tolist()
        done: set = set()
        for a, b, k in layout.spans(present, ks):
            lo, hi = layout.offsets[a], layout.offsets[b]
            if hi - lo < 2:
                continue
            states = [layout.buffers[key][lo:hi] for key in keys]
            if not self._call(layout.theta[lo:hi], layout.grad[lo:hi], states, coef(int(k) + 1),
                              amp, master):
                break
            layout.steps[a:b].add_(1)
            done.update(map(id, layout.order[a:b]))
        everyone = layout.host_step is not None and len(done) == len(layout.order)
        layout.host_step = layout.host_step + 1 if everyone else None
        return done

    def forget_steps(self) -> None:
        """The step counters were changed outside the kernels (a skipped step undone): the
        host's counts are read back at the next step."""
        for layout in self.flat.values():
            layout.host_step = None

    def _run_gathered(self, layout, keys, coef) -> set:
        """Parameters not laid out flat: the small ones in one call on gathered copies of theta
        and g, scattered back; returns their ids (the large ones are left to the caller)."""
        if len(layout.small) < 2:
            return set()
        theta, grad = layout.gather(layout.small)
        flats = [layout.buffers[key][:layout.small_numel] for key in keys]
        if not self._call(theta, grad, flats, coef):
            return set()
        views = [p.detach().view(-1) for p in layout.small]
        torch._foreach_copy_(views, list(theta.split([p.numel() for p in layout.small])))
        layout.steps[:len(layout.small)].add_(1)
        return {id(p) for p in layout.small}

    def zero_grad(self, set_to_none: bool, skip=frozenset()) -> set:
        """Zero the gradients of the flat layouts (see :class:`FlatLayout`) that hold none of the
        parameters ``skip`` (ids); returns the ids of the parameters handled."""
        done: set = set()
        for layout in self.flat.values():
            if layout.flat_params and layout.intact() and skip.isdisjoint(layout.ids):
                layout.zero_grad(set_to_none)
                done.update(layout.ids)
        return done

    def _call(self, theta, grad, states, coef, amp=None, master=False) -> bool:
        """Run the fused kernel (the scaled one when ``amp`` is ``(grad_scale, found_inf)``; the
        master-weight one, with the master copy first in ``states``, when ``master``); on a
        first-call compile failure warn once and return False."""
        if self.failed:
            return False
        if self.eager:  # the for-loop code, on the host's coefficients (never amp or master)
            self.kernel()(theta, grad, *states, coef)
            self.succeeded = True
            return True
        theta, grad, states = _plain(theta), _plain(grad), [_plain(s) for s in states]
        if master:
            return self._call_master(theta, grad, states, coef, amp)
        kernel, extra = (self.kernel(), ()) if amp is None else (self.scaled_kernel(), amp)
        if self.succeeded and (amp is None or self.scaled_ok):
            kernel(theta, grad, *states, coef, *extra)
            return True
        if not self._first_call(lambda: kernel(theta, grad, *states, coef, *extra)):
            return False
        self.succeeded = True
        self.scaled_ok = self.scaled_ok or amp is not None
        return True

    def _first_call(self, run) -> bool:
        """A kernel's first call (``run()``, which compiles it); on a failure warn once and
        return False: the optimizer then falls back to eager code."""
        try:
            run()
        except Exception as error:  # no C++ compiler, unsupported platform, ...
            self.failed = True
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); the "
                          "optimizer falls back to eager code", RuntimeWarning, stacklevel=4)
            return False
        return True

    def _call_master(self, theta, grad, states, coef, amp) -> bool:
        # on the host found_inf costs nothing to read: a skipped step writes nothing, and the
        # kernel of the others chooses nothing per element; its fifth output stream (the
        # unscaled gradient) costs more than a pass of its own (see .unscale_grad)
        kind = "plain" if amp is None else "scaled apart" if theta.device.type == "cpu" \
            else "scaled"
        if kind == "scaled apart" and float(amp[1]) != 0:
            return True  # the step counters are moved back as for any skipped scaled step
        args = (amp[0],) if kind == "scaled apart" else amp or ()
        kernel = self.master_kernel(kind)
        unscale = self.master_kernel("unscale") if kind == "scaled apart" else None
        if kind in self.masters_ok:
            kernel(theta, grad, *states, coef, *args)
        else:
            def first():
                if unscale is not None:  # compiled before anything is written
                    unscale(grad[:2].clone(), *amp)
                kernel(theta, grad, *states, coef, *args)

            if not self._first_call(first):
                return False
            self.masters_ok.add(kind)
        if unscale is not None:
            unscale(grad, *amp)
        return True

    def _coef(self, coefficients, dtype: torch.dtype, device):
        """A kernel's ``coef``: the coefficients as the design's ``_scalars`` gives them for
        the eager kernel (its for-loop code reads Python numbers), else :func:`_coef_tensor`."""
        return tuple(coefficients) if self.eager else _coef_tensor(coefficients, dtype, device)


def _coef_tensor(coefficients, dtype: torch.dtype, device) -> torch.Tensor:
    """The kernel's 1-D ``coef`` on ``device``: float32 for low-precision tensors (computed in
    float32 inside the kernel), else the tensors' own dtype.

    Example:
        >>> _coef_tensor((0.5, 2), torch.bfloat16, "cpu").dtype
        torch.float32
    """
    cdtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    return torch.tensor([float(c) for c in coefficients], dtype=cdtype).to(device,
                                                                          non_blocking=True)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor that is not a view (same storage, offset, sizes and strides): the
    compiler guards on how a view relates to its base, so views of different spans of a buffer
    would each recompile the kernel; plain tensors share one compiled kernel.

    Example:
        >>> import torch
        >>> base = torch.zeros(6)
        >>> t = _plain(base[2:5])
        >>> t._base is None, t.data_ptr() == base[2:].data_ptr(), t.shape
        (True, True, torch.Size([3]))
    """
    if t._base is None:
        return t
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


def flat_parameters(params) -> list[torch.Tensor]:
    """Lay parameters (a module or an iterable) and their gradients out as views of one flat
    buffer per (device, dtype), so the compiled path updates a whole group in one kernel call
    (host buffers on huge pages where that applies: see :mod:`.pages`).

    Gradients are allocated (zeros) as views too; keep them by calling the exported optimizer's
    ``zero_grad()`` (it zeroes such gradients in place instead of setting them to None). Returns
    the flat parameter buffers.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> [b.numel() for b in flat_parameters(model)]
        [8]
        >>> model.weight.grad.shape
        torch.Size([2, 3])
    """
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    groups: dict = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    out = []
    with torch.no_grad():
        for (device, dtype), members in groups.items():
            total = sum(p.numel() for p in members)
            flat = flat_empty(total, dtype, device)
            grads = flat_empty(total, dtype, device).zero_()
            offset = 0
            for p in members:
                n = p.numel()
                flat[offset:offset + n].copy_(p.detach().reshape(-1))
                p.data = flat[offset:offset + n].view(p.shape)
                p.grad = grads[offset:offset + n].view(p.shape)
                p._ctopt_flat_grad = grads
                offset += n
            out.append(flat)
    return out
