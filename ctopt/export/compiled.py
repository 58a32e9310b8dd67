"""The compiled path and the flat parameter layout. Torch only — copied into standalone exports.

The generated ``_fused(theta, g, *states, coef)`` is compiled once per (device, dtype) with
``torch.compile(dynamic=True, fullgraph=True)``: one fused elementwise kernel (C++/OpenMP on CPU,
Triton on GPU) that reads theta, g and the states once and writes them once. Everything per-step
(lr, betas, bias corrections, clip factors) arrives in the 1-D tensor ``coef``, so a scheduler
that changes lr or betas never recompiles.

States live in one flat buffer per (param group, device, dtype, state); each parameter's state is
a view into it. When the parameters and gradients are themselves views of one flat buffer (see
:func:`flat_parameters`), a whole group is one kernel call; otherwise the kernel is called once per
tensor (the same compiled code; tensors of fewer than 2 elements run eagerly).
"""

from __future__ import annotations

import shutil
import warnings

import torch

__all__ = ["CompiledRunner", "flat_parameters"]


def _flat_view(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """One 1-D view covering ``tensors`` when they lie back to back in one storage, else None."""
    first = tensors[0]
    if not all(t.is_contiguous() for t in tensors):
        return None
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage or t.storage_offset() != offset:
            return None
        offset += t.numel()
    total = offset - first.storage_offset()
    return first.detach().as_strided((total,), (1,), first.storage_offset())


#: tensors at least this large get their own kernel call when parameters are not flat
DIRECT_NUMEL = 1 << 20


def _gatherable(p: torch.Tensor) -> bool:
    return p.numel() < DIRECT_NUMEL and p.is_contiguous()


class _FlatState:
    """Flat buffers of one (group, device, dtype): every state, and the ``step`` counters, of the
    parameters that have state; ``optimizer.state[p]`` holds views into them.

    When the parameters are not themselves flat, small tensors are placed first so that they form
    one contiguous span: their theta and g are gathered into scratch buffers and updated in one
    kernel call; large tensors (>= ``DIRECT_NUMEL``) are called one by one, in place.
    """

    def __init__(self, keys, params, states):
        self.ids = tuple(id(p) for p in params)
        self.flat_params = _flat_view(params) is not None and \
            all(p.grad is not None for p in params) and \
            _flat_view([p.grad for p in params]) is not None
        order = list(range(len(params)))
        if not self.flat_params:
            order.sort(key=lambda i: not _gatherable(params[i]))
        self.order = [params[i] for i in order]
        self.small = [p for p in self.order if _gatherable(p)] if not self.flat_params else []
        self.small_numel = sum(p.numel() for p in self.small)
        total = sum(p.numel() for p in params)
        p0 = params[0]
        self.buffers = {key: torch.empty(total, dtype=p0.dtype, device=p0.device) for key in keys}
        self.steps = torch.tensor([float(states[i]["step"]) for i in order], dtype=torch.float32)
        self.scratch = None
        offset = 0
        for position, i in enumerate(order):
            p, state = params[i], states[i]
            n = p.numel()
            for key, buffer in self.buffers.items():
                view = buffer[offset:offset + n].view(p.shape)
                view.copy_(state[key])
                state[key] = view
            state["step"] = self.steps[position]
            offset += n
        self.ptrs = self._ptrs(states)
        self.checked: tuple = ()

    def _ptrs(self, states):
        return tuple(state[key].data_ptr() for state in states for key in (*self.buffers, "step"))

    def valid(self, params, states) -> bool:
        return self.ids == tuple(id(p) for p in params) and self.ptrs == self._ptrs(states)

    def flat_views(self, params):
        """Views covering all parameters and all gradients when both are still laid out flat
        (verified once per change of their addresses)."""
        grads = [p.grad for p in params]
        signature = tuple(p.data_ptr() for p in params) + tuple(g.data_ptr() for g in grads)
        if signature == self.checked:
            return self.views
        theta, grad = _flat_view(params), _flat_view(grads)
        if theta is None or grad is None:
            return None
        self.checked, self.views = signature, (theta, grad)
        return theta, grad

    def gather(self, params):
        """theta and g of the small parameters, gathered into scratch buffers."""
        if self.scratch is None:
            p0 = params[0]
            self.scratch = [torch.empty(self.small_numel, dtype=p0.dtype, device=p0.device)
                            for _ in range(2)]
        theta, grad = self.scratch
        torch.cat([p.detach().reshape(-1) for p in params], out=theta)
        torch.cat([p.grad.reshape(-1) for p in params], out=grad)
        return theta, grad


class CompiledRunner:
    """Runs an exported optimizer's step through its compiled fused kernel."""

    def __init__(self, cls):
        self.cls = cls
        self.fused = None
        self.failed = False
        self.succeeded = False
        self.flat: dict = {}

    def available(self) -> bool:
        """Whether torch.compile can run here (a C++ compiler on CPU; Triton on CUDA)."""
        if self.failed or not hasattr(torch, "compile"):
            return False
        return shutil.which("c++") is not None or shutil.which("g++") is not None or \
            torch.cuda.is_available()

    def kernel(self):
        """The compiled ``_fused``, shared by every optimizer of the class (compiled once per
        device and dtype)."""
        if self.fused is None:
            fused = self.cls.__dict__.get("_compiled_fused")
            if fused is None:
                fused = torch.compile(self.cls._fused, dynamic=True, fullgraph=True)
                self.cls._compiled_fused = fused
            self.fused = fused
        return self.fused

    def run(self, opt, gi: int, items, states, coefficients) -> None:
        """Update the parameters ``items`` (with their ``states``) of group ``gi`` and advance
        their step counters."""
        buckets: dict = {}
        for (_, p), state in zip(items, states, strict=True):
            if p.numel() > 0:
                buckets.setdefault((p.device, p.dtype), []).append((p, state))
            else:
                state["step"] += 1
        for (device, dtype), members in buckets.items():
            cdtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
            cache: dict = {}

            def coef(k, device=device, cdtype=cdtype, cache=cache):
                if k not in cache:
                    values = [float(c) for c in coefficients(k)]
                    cache[k] = torch.tensor(values, dtype=cdtype).to(device, non_blocking=True)
                return cache[k]

            self._run_bucket(opt, gi, device, dtype, members, coef, coefficients)

    def _state_owners(self, opt, gi, device, dtype):
        params = [p for p in opt.param_groups[gi]["params"]
                  if p.dtype == dtype and p.device == device and p.numel() > 0 and opt.state.get(p)]
        return params, [opt.state[p] for p in params]

    def _run_bucket(self, opt, gi, device, dtype, members, coef, coefficients) -> None:
        keys = self.cls.state_keys
        owners, owner_states = self._state_owners(opt, gi, device, dtype)
        record = self.flat.get((gi, device, dtype))
        if record is None or not record.valid(owners, owner_states):
            record = _FlatState(keys, owners, owner_states)
            self.flat[(gi, device, dtype)] = record
        whole = len(members) > 1 and len(members) == len(record.ids) and \
            {id(p) for p, _ in members} == set(record.ids)
        if whole:
            ks = record.steps.tolist()
            whole = ks.count(ks[0]) == len(ks)
        if whole and self._run_whole(record, keys, coef(int(ks[0]) + 1)):
            record.steps.add_(1)
            return
        done = set(record.done) if whole else set()
        for p, state in members:
            k = int(state["step"]) + 1
            state["step"] += 1
            if id(p) in done:
                continue
            olds = [state[key] for key in keys]
            if p.numel() >= 2 and p.is_contiguous() and p.grad.is_contiguous() and \
                    all(s.is_contiguous() for s in olds):
                views = [s.view(-1) for s in olds]
                if self._call(p.detach().view(-1), p.grad.view(-1), views, coef(k)):
                    continue
            out = self.cls._elementwise(p, p.grad, *olds, *coefficients(k))
            p.copy_(out[0])
            for old, new in zip(olds, out[1:], strict=False):
                old.copy_(new)

    def _run_whole(self, record, keys, coef) -> bool:
        """All parameters of the record at one step: one call on flat spans when the parameters
        are flat (returns True); otherwise the small ones in one gathered call (``record.done``
        lists them) and False, leaving the large ones to the caller."""
        record.done = ()
        if record.flat_params:
            views = record.flat_views(record.order)
            if views is not None:
                flats = [record.buffers[key] for key in keys]
                return self._call(*views, flats, coef)
            return False
        if len(record.small) > 1:
            theta, grad = record.gather(record.small)
            flats = [record.buffers[key][:record.small_numel] for key in keys]
            if self._call(theta, grad, flats, coef):
                views = [p.detach().view(-1) for p in record.small]
                torch._foreach_copy_(views, list(theta.split([p.numel() for p in record.small])))
                record.done = tuple(id(p) for p in record.small)
        return False

    def _call(self, theta, grad, states, coef) -> bool:
        """Run the fused kernel; on a first-call compile failure warn once and return False."""
        if self.failed:
            return False
        if self.succeeded:
            self.kernel()(theta, grad, *states, coef)
            return True
        try:
            self.kernel()(theta, grad, *states, coef)
        except Exception as error:  # no C++ compiler, unsupported platform, ...
            self.failed = True
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); the "
                          "optimizer falls back to eager code", RuntimeWarning, stacklevel=3)
            return False
        self.succeeded = True
        return True


def flat_parameters(params) -> list[torch.Tensor]:
    """Lay parameters (a module or an iterable) and their gradients out as views of one flat
    buffer per (device, dtype), so the compiled path updates a whole group in one kernel call.

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
            flat = torch.empty(total, dtype=dtype, device=device)
            grads = torch.zeros(total, dtype=dtype, device=device)
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
