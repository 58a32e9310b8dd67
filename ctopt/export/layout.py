"""The flat layout of the compiled path. Torch only — copied into standalone exports.

Per (param group, device, dtype) the compiled path keeps one :class:`FlatLayout`: one flat buffer
per state (``optimizer.state[p][key]`` are views into it), one for the ``step`` counters, and —
unless the optimizer's ``flatten_parameters`` is False or a parameter is not contiguous — one
for the parameters and one for their gradients: every parameter's ``.data`` and ``.grad`` become
views of those buffers (as DDP's ``gradient_as_bucket_view`` does), so a step over the whole
layout is one kernel call.

The layout is checked at every step (one identity and two pointer comparisons per parameter):

- a parameter that no longer points into the buffer (``model.to()``, ``p.data = ...``,
  ``load_state_dict(assign=True)``) makes the layout be rebuilt from the parameters as they are;
- a gradient that is not a view of the gradient buffer (a fresh ``p.grad = ...``, a backward
  after ``zero_grad(set_to_none=True)``, the view itself re-pointed by ``p.grad.data = ...``) is
  copied into it and ``p.grad`` re-pointed there;
- a gradient that carries a graph (``backward(create_graph=True)``) is left as it is: its
  parameter is updated on its own;
- a parameter without a gradient splits the layout into spans: each span is one call.

After ``zero_grad(set_to_none=True)`` the gradients are None, as in torch; a post-accumulate-grad
hook then moves each fresh gradient into the buffer as autograd produces it (one copy, in the
backward pass). ``zero_grad(set_to_none=False)`` zeroes the buffer in place (one ``fill``).

Example:
    >>> import torch
    >>> ps = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.zeros(3))]
    >>> for p in ps:
    ...     p.grad = torch.ones_like(p)
    >>> states = [{"step": torch.tensor(0.0), "m": torch.zeros_like(p)} for p in ps]
    >>> layout = FlatLayout(("m",), ps, states, flatten=True)
    >>> layout.theta.tolist(), ps[1].grad.data_ptr() == layout.grad[2:].data_ptr()
    ([1.0, 1.0, 0.0, 0.0, 0.0], True)
"""

from __future__ import annotations

import operator
import weakref
from itertools import chain

import torch

from .direct import HostVector
from .pages import flat_empty

__all__ = ["DIRECT_NUMEL", "FlatLayout", "flat_view", "same_marks", "state_marks"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_DATA_PTR, _GRAD = torch.Tensor.data_ptr, operator.attrgetter("grad")

#: without a flat parameter layout, tensors at least this large get their own kernel call
DIRECT_NUMEL = 1 << 20

#: a layout whose parameters were moved this many times, each within one step of the last
#: rebuild, stops flattening them (something re-points them every step, e.g. FSDP)
MAX_REBUILDS = 3


def flat_view(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """One 1-D view covering ``tensors`` when they lie back to back in one storage, else None.

    Example:
        >>> import torch
        >>> buffer = torch.arange(5.0)
        >>> flat_view([buffer[:2], buffer[2:]]).tolist(), flat_view([buffer[2:], buffer[:2]])
        ([0.0, 1.0, 2.0, 3.0, 4.0], None)
    """
    if not tensors or any(type(t) not in _PLAIN or not t.is_contiguous() or t.is_sparse
                          for t in tensors):  # a subclass (DTensor) has no storage to fuse
        return None
    first = tensors[0]
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage or t.storage_offset() != offset:
            return None
        offset += t.numel()
    total = offset - first.storage_offset()
    return first.detach().as_strided((total,), (1,), first.storage_offset())


def state_marks(state: dict) -> tuple | None:
    """Every key, state dict and state value of an optimizer's ``state``, in order: when two
    marks are the same objects one by one, nothing in it was replaced, added or removed.

    Example:
        >>> import torch
        >>> p = torch.zeros(1)
        >>> state = {p: {"step": torch.tensor(0.0)}}
        >>> before = state_marks(state)
        >>> state[p]["step"] = torch.tensor(0.0)
        >>> same_marks(before, state_marks(state))
        False
    """
    dicts = tuple(state.values())
    try:
        return (*state, *dicts, *chain.from_iterable(map(dict.values, dicts)))
    except TypeError:  # a state entry that is not a dict: nothing is known
        return None


def same_marks(a: tuple | None, b: tuple | None) -> bool:
    """Whether two :func:`state_marks` hold the same objects (None: unknown, never the same).

    Example:
        >>> a, b = (1.5, "x"), (float("1.5"), "x")
        >>> same_marks(a, a), same_marks(a, b), same_marks(None, None)
        (True, False, False)
    """
    return a is not None and b is not None and len(a) == len(b) and \
        all(map(operator.is_, a, b))


def _gatherable(p: torch.Tensor) -> bool:
    return p.numel() < DIRECT_NUMEL and p.is_contiguous()


def _fits(grad, p) -> bool:
    """Whether ``grad`` can be copied into ``p``'s slice of the gradient buffer (not one that
    carries a graph, from ``backward(create_graph=True)``: the user may differentiate it)."""
    return grad.layout == torch.strided and grad.dtype == p.dtype and grad.shape == p.shape \
        and grad.device == p.device and not grad.requires_grad


class FlatLayout:
    """Flat buffers of one (group, device, dtype); see the module docstring.

    ``params``/``states`` are the parameters that have state and their state dicts; the states
    (and, when ``flatten``, the parameters and gradients) are moved into the buffers.
    """

    def __init__(self, keys, params, states, flatten: bool, steps_on_device: bool = False):
        self.ids = tuple(id(p) for p in params)
        self.params = list(params)
        adopted = flat_view(params)  # laid out already (flat_parameters)
        self.flat_params = bool(flatten and all(p.is_contiguous() for p in params)) or \
            adopted is not None
        order = list(range(len(params)))
        if not self.flat_params:
            order.sort(key=lambda i: not _gatherable(params[i]))
        self.order = [params[i] for i in order]
        self.small = [] if self.flat_params else [p for p in self.order if _gatherable(p)]
        self.small_numel = sum(p.numel() for p in self.small)
        self.sizes = [p.numel() for p in self.order]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        p0 = params[0]
        # each state in its own dtype (float32 states and master copies of bf16 parameters)
        self.buffers = {key: flat_empty(total, states[order[0]][key].dtype, p0.device)
                        for key in keys}
        counts = torch.stack([torch.as_tensor(states[i]["step"]).reshape(()).float().cpu()
                              for i in order]).tolist()
        # on the device for capturable steps (see .capture), else on the host as in torch
        self.steps = torch.tensor(counts, dtype=torch.float32,
                                  device=p0.device if steps_on_device else None)
        #: the counters read and written from Python on the host (None on a device)
        self.counts = HostVector(self.steps) if self.steps.device.type == "cpu" else None
        #: the common step count as the host knows it (None: unknown or unequal; read back)
        self.host_step = int(counts[0]) if counts.count(counts[0]) == len(counts) else None
        #: the capturable step's device hyperparameters (a .capture.DeviceHyper), made on use
        self.device_hyper = None
        self.scratch = None
        self.rebuilds, self.rebuilt_at = 0, -2
        self.theta = self.grad = None
        #: the steady step's kernel call bound to these buffers (see ``CompiledRunner``): None
        #: until made, False where none can be
        self.bound = None
        if self.flat_params:  # first: the pages each old tensor frees serve the next copies
            self._flatten(adopted)
        for position, i in enumerate(order):
            state = states[i]
            a, b = self.offsets[position], self.offsets[position + 1]
            for key, buffer in self.buffers.items():
                view = buffer[a:b].view(params[i].shape)
                view.copy_(state[key])
                state[key] = view
            state["step"] = self.steps[position]
        self.ptrs = self._ptrs(states)
        #: the state dicts and their tensors, in order: an identity check of the layout's states
        self.owned_states = list(states)
        self.owned_tensors = [state[key] for state in states for key in (*self.buffers, "step")]
        self.signature = None
        #: the optimizer's :func:`state_marks` when :meth:`same_states` last held
        self.marks = None
        self.hooks: list = []

    # ----------------------------------------------------------------- the layout
    def _flatten(self, adopted) -> None:
        """Make the parameters and gradients views of two flat buffers (keeping their values)."""
        p0, total = self.order[0], self.offsets[-1]
        self.bound = None
        with torch.no_grad():  # gradients first: their old storage is freed before theta's
            # no list of the old gradients is kept: each is freed as soon as its .grad moves
            grad = flat_view([p.grad for p in self.order])
            fresh = grad is None
            if fresh:  # untouched pages, filled view by view below
                grad = flat_empty(total, p0.dtype, p0.device)
            self.grad = grad
            self.grad_views = [grad[a:b].view(p.shape) for p, a, b in
                               zip(self.order, self.offsets, self.offsets[1:], strict=False)]
            for p, view in zip(self.order, self.grad_views, strict=True):
                if p.grad is not None and p.grad is not view and _fits(p.grad, p):
                    if p.grad.data_ptr() != view.data_ptr() or not p.grad.is_contiguous():
                        view.copy_(p.grad)
                    p.grad = view  # the very view: the steady step checks identity
                elif fresh:
                    view.zero_()
            if adopted is None:
                adopted = flat_empty(total, p0.dtype, p0.device)
                for p, a, b in zip(self.order, self.offsets, self.offsets[1:], strict=False):
                    view = adopted[a:b].view(p.shape)
                    view.copy_(p.detach())
                    p.data = view
            self.theta = adopted
        self.theta_ptrs = tuple(p.data_ptr() for p in self.order)
        self.grad_ptrs = tuple(v.data_ptr() for v in self.grad_views)

    def _ptrs(self, states):
        return tuple(state[key].data_ptr() for state in states for key in (*self.buffers, "step"))

    def valid(self, params, states) -> bool:
        """Whether these are still the layout's parameters, with its state views."""
        return self.ids == tuple(id(p) for p in params) and self.ptrs == self._ptrs(states)

    def same_states(self, opt) -> bool:
        """Whether ``opt.state`` still holds this layout's state dicts and views (identity)."""
        if not all(map(operator.is_, map(opt.state.get, self.params), self.owned_states)):
            return False
        keys = (*self.buffers, "step")
        return all(map(operator.is_, [s[k] for s in self.owned_states for k in keys],
                       self.owned_tensors)) and self.states_home()

    def states_home(self) -> bool:
        """Whether each of the layout's state tensors still points into its buffer
        (``state[key].data = t`` keeps the tensor object but points it elsewhere)."""
        return tuple(map(_DATA_PTR, self.owned_tensors)) == self.ptrs

    def step_counts(self) -> list:
        """Each position's step counter now, as floats (``steps.tolist()``, read directly on
        the host)."""
        return self.steps.tolist() if self.counts is None else self.counts.read()

    def count_step(self, now: float | None = None) -> None:
        """Every counter + 1, as ``steps.add_(1)`` rounds it (written directly on the host);
        ``now``: the count every counter holds, as just read (:meth:`step_counts`), which
        spares reading them again."""
        if self.counts is None:
            self.steps.add_(1)
            return
        counts = [now + 1] * len(self.order) if now is not None else \
            [k + 1 for k in self.counts.read()]  # one counter per position
        if not self.counts.write(counts):
            self.steps.add_(1)

    def intact(self) -> bool:
        """Whether every parameter still points into the parameter buffer."""
        return tuple(map(_DATA_PTR, self.order)) == self.theta_ptrs

    def in_place(self, params) -> bool:
        """Whether ``params`` are the layout's parameters, in order, each pointing into the
        parameter buffer with its gradient the very view of the gradient buffer, still pointing
        there (``p.grad.data = t`` re-points the view itself): the steady step's check,
        identities and pointers only."""
        if len(params) != len(self.order) or not all(map(operator.is_, params, self.order)):
            return False
        grads = list(map(_GRAD, params))
        return all(map(operator.is_, grads, self.grad_views)) and \
            tuple(map(_DATA_PTR, grads)) == self.grad_ptrs and self.intact()

    def grad_view(self, i: int) -> torch.Tensor:
        """Position ``i``'s view of the gradient buffer (made again where ``view.data = t`` has
        re-pointed it elsewhere)."""
        view = self.grad_views[i]
        if view.data_ptr() != self.grad_ptrs[i] or view.shape != self.order[i].shape:
            a, b = self.offsets[i], self.offsets[i + 1]
            view = self.grad_views[i] = self.grad[a:b].view(self.order[i].shape)
        return view

    def rebuild(self, now: int) -> None:
        """Lay the (moved) parameters out again (``now`` counts steps); after ``MAX_REBUILDS``
        rebuilds in consecutive steps give up flattening."""
        self.rebuilds = self.rebuilds + 1 if now - self.rebuilt_at <= 1 else 1
        self.rebuilt_at = now
        if self.rebuilds > MAX_REBUILDS or not all(p.is_contiguous() for p in self.order) or \
                any(p.dtype != self.theta.dtype or p.device != self.theta.device
                    for p in self.order):
            self.flat_params, self.theta, self.grad = False, None, None
            self.small = [p for p in self.order if _gatherable(p)]
            self.small_numel = sum(p.numel() for p in self.small)
            self.remove_hooks()
            return
        self._flatten(None)

    def adopt_gradients(self, present) -> None:
        """Copy every present gradient that lies outside the buffer into it; re-point ``.grad``."""
        for i, p in enumerate(self.order):
            if not present[i]:
                continue
            grad = p.grad
            if grad is not self.grad_views[i] or grad.data_ptr() != self.grad_ptrs[i]:
                if not _fits(grad, p):
                    present[i] = None  # not fusable: the caller updates it on its own
                    continue
                view = self.grad_view(i)
                if grad.data_ptr() != self.grad_ptrs[i] or not grad.is_contiguous():
                    view.copy_(grad)
                p.grad = view

    def spans(self, present, ks):
        """Maximal runs ``(a, b, k)`` of layout positions with a gradient and the same step."""
        if all(present) and ks.count(ks[0]) == len(ks):  # the usual step: the whole layout
            return [(0, len(ks), ks[0])]
        out, start = [], None
        for i in range(len(self.order) + 1):
            if start is not None and (i == len(self.order) or not present[i] or ks[i] != ks[start]):
                out.append((start, i, ks[start]))
                start = None
            if i < len(self.order) and present[i] and start is None:
                start = i
        return out

    # ----------------------------------------------------------- zero_grad support
    def zero_grad(self, set_to_none: bool) -> None:
        """Zero the gradient buffer (``set_to_none=False``) or set the gradients to None and let
        a hook move the next backward's gradients into the buffer."""
        if not set_to_none:
            self.grad.zero_()
            for i, p in enumerate(self.order):
                if p.grad is None or p.grad.data_ptr() != self.grad_ptrs[i]:
                    p.grad = self.grad_view(i)
            return
        for p in self.order:
            p.grad = None
        if not self.hooks:
            me = weakref.ref(self)
            for i, p in enumerate(self.order):
                if hasattr(p, "register_post_accumulate_grad_hook"):
                    self.hooks.append(p.register_post_accumulate_grad_hook(_into_buffer(me, i)))

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def gather(self, params):
        """theta and g of the small parameters, gathered into scratch buffers (no flat
        parameters)."""
        if self.scratch is None:
            p0 = params[0]
            self.scratch = [torch.empty(self.small_numel, dtype=p0.dtype, device=p0.device)
                            for _ in range(2)]
        theta, grad = self.scratch
        torch.cat([p.detach().reshape(-1) for p in params], out=theta)
        torch.cat([p.grad.reshape(-1) for p in params], out=grad)
        return theta, grad


def _into_buffer(layout_ref, i: int):
    """The post-accumulate-grad hook of position ``i``: a fresh gradient moves into the buffer."""

    def hook(p: torch.Tensor) -> None:
        layout, grad = layout_ref(), p.grad
        if layout is None or not layout.flat_params or grad is None or \
                grad.data_ptr() == layout.grad_ptrs[i] or p.data_ptr() != layout.theta_ptrs[i] \
                or not _fits(grad, p):
            return
        view = layout.grad_view(i)
        enabled = torch.is_grad_enabled()  # on in a create_graph backward
        torch._C._set_grad_enabled(False)
        try:
            view.copy_(grad)
        finally:
            torch._C._set_grad_enabled(enabled)
        p.grad = view

    return hook
