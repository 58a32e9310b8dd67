"""The runtime of every exported optimizer: a ``torch.optim.Optimizer`` base class that runs the
generated code. Torch only — this file is copied verbatim into standalone exports.

A generated subclass provides, as class attributes: ``hyperparameters`` (:class:`Hyper`),
``beta_names``, ``state_names``/``state_keys`` (torch state-dict names), ``reduction_names`` and
the generated static methods ``_state_init(h)``, ``_scalars(h, k, gsign, red)`` (the per-step
scalar part, float64), ``_elementwise(theta, g, *states, *coefficients)`` (torch operators),
``_forloop(theta, g, *states, *coefficients)`` (in place, one tensor),
``_foreach(thetas, grads, *state_lists, *coefficients)`` (in place), ``_fused(theta, g, *states,
coef)`` (in place; what the compiled path compiles) and ``_reduce_<name>(theta, g, h, gsign)``.

Behaviour, in torch's terms:

- ``step`` is a float32 0-d tensor per parameter, ``k = step + 1`` in the design's equations; a
  parameter whose ``grad`` is None is untouched and gets no state.
- A step is transactional: every per-step number (the scalar part at each step count, cast to
  the parameter dtype), every new state's initial value and every gradient is computed and
  checked before the first write; an error leaves parameters, state and groups bit-identical.
- Hyperparameters may be 0-d tensors, kept in the group and read at every step (live, as in
  torch). Complex parameters are optimized as ``torch.view_as_real`` (as torch does). A sparse
  gradient is accepted when, at the group's values, a zero gradient changes neither theta nor a
  state (e.g. SGD, Adagrad without weight decay): it is then the same as its dense form.
- Group reductions (e.g. the gradient L2 norm) are taken over the group's parameters that have a
  gradient, in float64.
- Hyperparameters are validated in the constructor, in ``add_param_group``, in
  ``load_state_dict`` and — because a ``param_group`` dict can be edited freely — at the start of
  every ``step``; an invalid value raises :class:`HyperparameterError` before anything changes.
- ``nonfinite``: ``"propagate"`` (torch's behaviour: NaN/Inf flow into the state),
  ``"skip"`` (the whole step is skipped; parameters and every state stay bit-identical and
  ``state_dict()["skipped_steps"]`` counts it) or ``"raise"`` (:class:`NonFiniteGradientError`
  naming the parameter; nothing changes).
- ``master_weights=True``: bfloat16/float16 parameters are stepped on float32 master copies kept
  in their state (``"master_param"``), with float32 states, and written back rounded (see
  :mod:`.master`).
- ``capturable=True``: the compiled path keeps the step counters on the parameters' device and
  computes the per-step numbers there, so the usual step can be captured in a CUDA graph (see
  :mod:`.capture`).
"""

from __future__ import annotations

import math  # noqa: F401  (the generated code's namespace)
from typing import NamedTuple

import torch

from .backends import (  # noqa: F401
    AUTO_COMPILE_AFTER_STEPS,
    AUTO_COMPILE_MIN_NUMEL,
    BACKENDS,
    FLAT_PATHS,
    Backends,
)
from .capture import check_capturable
from .checkpoint import Checkpoints
from .errors import HyperparameterError, UnsupportedError
from .groups import GroupValidation
from .layout import state_marks
from .listened import listened_step
from .master import MASTER_KEY, MasterWeights
from .reductions import NonFiniteGradientError, Reductions  # noqa: F401
from .scaling import GradScaling
from .usual import remember
from .values import Hyper, check_unique, fits, real_view  # noqa: F401

NONFINITE = ("propagate", "skip", "raise")


class _Work(NamedTuple):
    """One parameter in a step: its index in the group, the parameter, and the real tensors the
    step reads and writes (``view_as_real`` of complex ones; a sparse gradient made dense)."""

    j: int
    p: torch.Tensor
    theta: torch.Tensor
    grad: torch.Tensor


def _items(group: dict) -> list[_Work]:
    """The parameters of ``group`` that have a gradient, as the step reads them."""
    items = []
    for j, p in enumerate(group["params"]):
        if p.grad is None:
            continue
        grad = p.grad
        if grad.is_sparse:
            grad = grad.coalesce().to_dense()
        items.append(_Work(j, p, real_view(p), real_view(grad)))
    return items


def _step_counts(state: dict, items) -> list[int]:
    """``k = step + 1`` of each item's state, 0 where it has none yet (one host read)."""
    get = state.get
    steps = [s["step"] if s else None for s in map(get, (it.p for it in items))]
    known = [s for s in steps if s is not None]
    try:
        counts = iter(torch.stack(known).tolist()) if known else iter(())
    except RuntimeError:  # steps on different devices
        counts = iter([float(s) for s in known])
    return [0 if s is None else int(next(counts)) + 1 for s in steps]


class GeneratedOptimizer(GroupValidation, Reductions, GradScaling, MasterWeights, Backends,
                         Checkpoints, torch.optim.Optimizer):
    """Base class of exported optimizers (see the module docstring for the protocol)."""

    design_name = ""
    hyperparameters: tuple[Hyper, ...] = ()
    beta_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()
    reduction_names: tuple[str, ...] = ()
    #: torch.optim options this design stands for (e.g. ``amsgrad=True`` for 'amsgrad'); a
    #: checkpoint holding another value of them is refused
    implied_options: dict = {}

    #: optional check of a group's values against the design's filter conditions, set by
    #: ``ctopt.to_torch(check=True)``; called as ``value_guard(values, where)``
    value_guard = None

    def __init__(self, params, hyper: dict, *, betas=None, maximize: bool = False,
                 backend: str = "auto", nonfinite: str = "propagate", reduction_group=None,
                 master_weights: bool = False, capturable: bool = False):
        if backend not in BACKENDS:
            raise UnsupportedError(f"backend {backend!r} is not one of {BACKENDS}")
        if nonfinite not in NONFINITE:
            raise UnsupportedError(f"nonfinite={nonfinite!r} is not one of {NONFINITE}")
        if not isinstance(maximize, bool):
            raise HyperparameterError(f"maximize={maximize!r} must be True or False")
        if not isinstance(master_weights, bool):
            raise HyperparameterError(f"master_weights={master_weights!r} must be True or False")
        check_capturable(type(self), capturable, backend)
        hyper = dict(hyper)
        if betas is not None:
            hyper = self._merge_betas(hyper, betas, strict=True)
        defaults = self._normalize(hyper, where="")
        defaults["maximize"] = maximize
        self.backend = backend
        self.nonfinite = nonfinite
        self.master_weights = master_weights
        self.capturable = capturable
        self.skipped_steps = 0
        self.reduction_group = reduction_group
        self._runner = None
        self._usual = None  # the usual step, remembered (see .usual)
        self._probes: dict = {}
        self._pending_skips: list = []
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ the step
    @listened_step
    def step(self, closure=None):
        """One optimization step (``closure`` re-evaluates the loss, as in torch). Everything
        the step needs is computed and checked before anything is written."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            with torch.no_grad():
                self._step()
            return loss
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # torch.no_grad(), without its Python layers
        try:
            usual, self._usual = self._usual, None
            if usual is not None and usual(self):
                self._usual = usual
            else:
                self._usual = remember(self, self._step())
        finally:
            torch._C._set_grad_enabled(enabled)
        return loss

    def _step(self) -> list | None:
        """The step; returns its plans (see :func:`.remember`), None where it ended early (a
        step skipped on the host, a non-finite check)."""
        self._settle_skips()
        scaling = self._scaling_inputs()
        plans, steady = [], self._steady_layouts(scaling)
        for i, group in enumerate(self.param_groups):
            values = self._step_values(i, group)
            # the usual step (steady): nothing to check per parameter
            plans.append((group, values, _items(group) if steady[i] is None else steady[i]))
        if scaling is not None and not self._scales_in_kernel(plans):
            plans = [(group, values, _items(group) if isinstance(items, tuple) else items)
                     for group, values, items in plans]
            if self._unscale_on_host(plans, *scaling):
                return None
            scaling = None
        if self.nonfinite != "propagate" and self._nonfinite(plans):
            return None
        prepared = [self._prepare_steady(gi, group, values, *items)
                    if isinstance(items, tuple) else self._prepare(gi, group, values, items)
                    for gi, (group, values, items) in enumerate(plans)]
        for gi, ((group, values, items), ready) in enumerate(zip(plans, prepared, strict=True)):
            if isinstance(items, tuple):
                device = (values, -1.0 if group.get("maximize", False) else 1.0) \
                    if self.capturable else None
                layout = items[0]
                self._compiled_runner().run_steady(layout, ready, device, scaling)
                if scaling is not None and not self.capturable:
                    self._defer_skip(scaling[1], [layout.steps])
            elif items:
                self._commit(gi, group, items, *ready, scaling=scaling)
        return plans  # scaled too: in the kernel (the host's way made the plans per tensor)

    def _steady_layouts(self, scaling) -> list:
        """Per group, the compiled runner's ``(layout, k)`` when its step is the usual one (see
        :meth:`CompiledRunner.steady`), else None."""
        if (scaling is not None and self.reduction_names) or self.nonfinite != "propagate" or \
                self._runner is None or self._resolve_backend() not in FLAT_PATHS:
            return [None] * len(self.param_groups)
        marks = state_marks(self.state)
        return [self._runner.steady(self, gi, marks) for gi in range(len(self.param_groups))]

    def _prepare_steady(self, gi: int, group: dict, values: dict, layout, k: int) -> tuple:
        """The per-step coefficients of a steady group at step count ``k``, checked."""
        gsign = -1.0 if group.get("maximize", False) else 1.0
        p = layout.order[0]
        red = self._steady_reducer(values, gsign, layout) if self.reduction_names else None
        coefficients = tuple(self._scalars(values, k, gsign, red))
        self._check_coefficients(coefficients, values, gi, _Work(0, p, p, p.grad), k)
        return coefficients

    def _steady_reducer(self, values: dict, gsign: float, layout):
        """The group reductions of a steady layout: over its whole flat gradient, one pass per
        reduction (with a ``reduction_group``, each one now: every rank, every group, in
        order)."""
        theta = layout.buffers.get(MASTER_KEY, layout.theta)  # the masters, where kept
        red = self._reducer(values, gsign, [_Work(0, layout.order[0], theta, layout.grad)])
        if self.reduction_group is not None:
            for name in self.reduction_names:
                red(name)
        return red

    def _check_coefficients(self, coefficients: tuple, values: dict, gi: int, it, k: int):
        """Every per-step coefficient at step count ``k`` fits ``it``'s dtype (else a named
        :class:`HyperparameterError`)."""
        dtype = self._number_dtype(it.p)  # once: this runs at every step
        for c in coefficients:
            if isinstance(c, (int, float)) and not fits(float(c), dtype):
                self._check_fits(float(c), values, gi, it, f"a per-step coefficient at step {k}")

    def _param_name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("param_names")
        if names:
            return f"parameter {names[j]!r}"
        p = self.param_groups[gi]["params"][j]
        return f"parameter {j} of param group {gi} (shape {tuple(p.shape)})"

    def _prepare(self, gi: int, group: dict, values: dict, items):
        """Everything group ``gi``'s step needs, checked, nothing written: the new states, the
        step counts and the per-step coefficients (a dict k -> tuple)."""
        gsign = -1.0 if group.get("maximize", False) else 1.0
        red = self._reducer(values, gsign, items)
        if self.reduction_group is not None:  # collective: every rank, every group, same order
            for name in self.reduction_names:
                red(name)
        if not items:
            return None
        fresh, ks = {}, _step_counts(self.state, items)
        init = lazy = None
        for i, it in enumerate(items):
            if ks[i]:
                self._repair_master(it.p, self.state[it.p], fresh)
                continue
            if init is None:
                init = self._state_init(values)
                for key, value in zip(self.state_keys, init, strict=False):
                    self._check_fits(float(value), values, gi, it,
                                     f"the initial value of state {key!r}")
            value_of = (lambda v: complex(v, v)) if it.p.is_complex() else (lambda v: v)
            if lazy is None:
                lazy = self._resolve_backend() in FLAT_PATHS
            dtype = self._state_dtype(it.p)
            if lazy and self._fuses(it):  # the flat layout copies it into its buffers
                made = {key: torch.full((), v, dtype=dtype, device=it.p.device)
                        .expand(it.p.shape) for key, v in zip(self.state_keys, init, strict=False)}
            else:
                made = {key: torch.full_like(it.p, value_of(v), dtype=dtype,
                                             memory_format=torch.preserve_format)
                        for key, v in zip(self.state_keys, init, strict=False)}
            if self._keeps_master(it.p):
                made[MASTER_KEY] = it.p.detach().to(torch.float32, copy=True,
                                                    memory_format=torch.preserve_format)
            fresh[it.p] = {"step": torch.tensor(0.0, dtype=torch.float32), **made}
            ks[i] = 1
        coefficients = {}
        for k in sorted(set(ks)):
            coefficients[k] = tuple(self._scalars(values, k, gsign, red))
        checked = set()
        for it, k in zip(items, ks, strict=True):
            if (k, it.p.dtype) not in checked:  # the first parameter of each dtype is named
                checked.add((k, it.p.dtype))
                self._check_coefficients(coefficients[k], values, gi, it, k)
            if it.p.grad.is_sparse and not self._zero_gradient_is_identity(coefficients[k]):
                raise UnsupportedError(
                    f"{self._param_name(gi, it.j)} has a sparse gradient; design "
                    f"{self.design_name!r} needs dense gradients at these hyperparameters (a zero "
                    "gradient still changes theta or a state, so the entries a sparse gradient "
                    "leaves out are not 'no change'); nothing was updated")
        return fresh, ks, coefficients

    def _number_dtype(self, p) -> torch.dtype:
        """The dtype every number of ``p``'s step must fit: its states' (and step's), real."""
        stored = self._state_dtype(p)
        return stored.to_real() if stored.is_complex else stored

    def _check_fits(self, value: float, values: dict, gi: int, it, what: str) -> None:
        dtype = self._number_dtype(it.p)
        if fits(value, dtype):
            return
        stored = self._state_dtype(it.p)  # named in the message (a complex one too)
        big = [f"{n} = {v!r}" for n, v in values.items() if not fits(v, dtype)]
        source = f" (from {', '.join(big)})" if big else " (from the hyperparameters)"
        raise HyperparameterError(
            f"param group {gi}: {what} = {value!r}{source} overflows {stored} (largest "
            f"finite {torch.finfo(dtype).max:g}) of {self._param_name(gi, it.j)}; nothing was "
            "changed")

    def _zero_gradient_is_identity(self, coef: tuple) -> bool:
        """Whether, with these coefficients, a zero gradient leaves theta and every state
        bit-identical (probed with random data)."""
        if coef not in self._probes:
            if len(self._probes) > 64:  # schedulers change the coefficients every step
                self._probes.clear()
            gen = torch.Generator().manual_seed(0)
            rand = [torch.randn(16, dtype=torch.float64, generator=gen).abs() + 0.5
                    for _ in range(1 + len(self.state_keys))]
            out = self._elementwise(rand[0], torch.zeros(16, dtype=torch.float64), *rand[1:],
                                    *coef)
            self._probes[coef] = all(torch.equal(torch.as_tensor(a).expand(16), b)
                                     for a, b in zip(out, rand, strict=True))
        return self._probes[coef]

    # ------------------------------------------------------------------ protocol
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(backend=self.backend, nonfinite=self.nonfinite,
                     skipped_steps=self.skipped_steps, master_weights=self.master_weights,
                     capturable=self.capturable)
        state.pop("reduction_group", None)  # a process group belongs to this process only
        return state

    def __setstate__(self, state: dict) -> None:
        for name, default in (("backend", "auto"), ("nonfinite", "propagate"),
                              ("skipped_steps", 0), ("reduction_group", None),
                              ("master_weights", False), ("capturable", False)):
            if name not in state and not hasattr(self, name):
                state[name] = default
        state["_runner"] = state["_usual"] = None
        state["_probes"] = {}
        state["_pending_skips"] = []
        super().__setstate__(state)

    def __repr__(self) -> str:
        text = super().__repr__()
        head = f"{type(self).__name__} (design {self.design_name!r}, backend={self.backend!r}, " \
               f"nonfinite={self.nonfinite!r}" + \
            (", master_weights=True" if self.master_weights else "") + \
            (", capturable=True)" if self.capturable else ")")
        return head + text[len(type(self).__name__):]
