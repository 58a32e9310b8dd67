"""How a step is run: the backends (``forloop``, ``foreach``, ``compiled``, and ``auto``, which
picks the compiled path for large models and for long runs, and before that runs the compiled
path's flat layout with an eager kernel, ``"flat"``: see :mod:`.eager`), and ``zero_grad`` for
the flat layout. Torch only — copied into standalone exports.

Example:
    >>> import torch, ctopt
    >>> Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    >>> opt = Adam([torch.nn.Parameter(torch.ones(3))], backend="auto")
    >>> opt._resolve_backend()  # a small model: the flat layout, its kernel run eagerly
    'flat'
"""

from __future__ import annotations

import logging

import torch

from .compiled import CompiledRunner
from .master import MASTER_KEY
from .values import real_view

__all__ = ["AUTO_COMPILE_AFTER_STEPS", "AUTO_COMPILE_MIN_NUMEL", "BACKENDS", "FLAT_PATHS",
           "Backends"]

BACKENDS = ("auto", "forloop", "foreach", "compiled")
#: the resolved paths that run on the flat layout: ``auto``'s eager kernel, and the compiled one
FLAT_PATHS = ("flat", "compiled")
#: ``backend="auto"`` compiles from this many elements on
AUTO_COMPILE_MIN_NUMEL = 1 << 20
#: ... and a smaller model once it has taken this many steps: a compile pays off only over
#: many steps there, so the eager kernel runs until its extra time is of the order of the
#: compile's, as in renting skis until their rent would have bought them (figures:
#: docs/export.md)
AUTO_COMPILE_AFTER_STEPS = 10_000
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_log = logging.getLogger(__name__)


class Backends:
    """Mixin of :class:`GeneratedOptimizer`: running a checked step on a backend."""

    #: on the compiled path, lay parameters and gradients out in flat buffers (see
    #: :mod:`.layout`); set to False on an optimizer, before its first step, to keep them as
    #: allocated
    flatten_parameters = True

    def _scales_in_kernel(self, plans) -> bool:
        """Whether the compiled kernel takes this step's ``grad_scale``/``found_inf`` (every
        parameter on the compiled path, no group reduction or non-finite check first)."""
        if self._resolve_backend() != "compiled" or self.reduction_names or \
                self.nonfinite != "propagate" or not self._compiled_runner().available():
            return False  # (the eager kernel's steps unscale on the host, as foreach's do)
        return all(isinstance(items, tuple) or all(map(self._fuses, items))  # steady: fused
                   for _, _, items in plans)

    @staticmethod
    def _fuses(it) -> bool:
        """Whether the compiled path updates this parameter in its kernel (a plain dense real
        tensor with its own gradient)."""
        return type(it.p) in _PLAIN and it.theta is it.p and it.grad is it.p.grad and \
            it.p.is_contiguous()

    def _commit(self, gi: int, group: dict, items, fresh: dict, ks, coefficients,
                scaling=None) -> None:
        """Write group ``gi``'s step (everything was checked in :meth:`_prepare`); ``scaling``
        is ``(grad_scale, found_inf)`` for the compiled kernel."""
        for p, state in fresh.items():
            self.state[p].update(state)
            if state.get(MASTER_KEY, True) is None:  # a stale master copy (see _repair_master)
                del self.state[p][MASTER_KEY]
        fresh.clear()  # the states belong to the optimizer now (the layout may move them)
        states = [self.state[it.p] for it in items]

        def coefs(k: int):
            return coefficients[k]

        backend = self._resolve_backend()
        if backend != "forloop" and any(type(it.p) not in _PLAIN for it in items):
            # tensor subclasses (e.g. FSDP2's DTensor) have no flat storage to fuse, and this
            # torch has no DTensor strategy for some foreach ops: they take the for-loop path
            backend = "forloop"
        if backend in FLAT_PATHS:  # it advances the step counters itself (flat buffers)
            plain = [it.theta is it.p and it.grad is it.p.grad for it in items]
            stepped = [s for s, ok in zip(states, plain, strict=True) if ok]
            fused = [(it.j, it.p) for it, ok in zip(items, plain, strict=True) if ok]
            # the runner reads each p.grad itself: the step lets go of the gradients it fuses,
            # so that a flat layout made now frees each one as it moves (its first step's peak)
            items[:] = [it._replace(grad=None) if ok else it
                        for it, ok in zip(items, plain, strict=True)]
            self._compiled_runner().run(self, gi, fused, stepped, coefs, scaling)
            if scaling is not None:
                self._defer_skip(scaling[1], [s["step"] for s in stepped])
            if all(plain):
                return
            rest = [i for i, ok in enumerate(plain) if not ok]
            items, states, ks = ([items[i] for i in rest], [states[i] for i in rest],
                                 [ks[i] for i in rest])
            backend = "foreach"
        items, masters = self._on_masters(items, states)
        if backend == "forloop":
            self._run_forloop(items, states, ks, coefs)
        else:
            self._run_foreach(items, states, ks, coefs)
        self._write_back(masters)
        torch._foreach_add_([s["step"] for s in states], 1.0)

    def _resolve_backend(self) -> str:
        """The path this step takes: the backend, or for ``auto`` one of ``"foreach"`` (no
        flat layout: ``flatten_parameters = False``), ``"flat"`` (the flat layout with its
        eager kernel) and ``"compiled"`` (its compiled kernel: from 2^20 elements on, from
        ``AUTO_COMPILE_AFTER_STEPS`` steps on, or as ``capturable`` needs)."""
        runner = self._compiled_runner() if self.backend in ("auto", "compiled") else None
        if self.backend != "auto":
            if runner is not None and runner.eager:  # backend set to "compiled" since
                runner.compile()
            return self.backend
        if runner.eager and runner.can_compile() and self._auto_compiles():
            runner.compile()
        if runner.eager and (not self.flatten_parameters or self.master_weights or
                             getattr(self, "capturable", False)):
            return "foreach"  # the eager kernel: the flat layout's plain steps on the host
        if not runner.available():
            return "foreach"  # the compiler failed on first use
        return "flat" if runner.eager else "compiled"

    def _auto_compiles(self) -> bool:
        """Whether ``auto`` takes the compiled kernel from this step on: a large model (cached
        per parameter count), a long run (its steps counted in the state), or ``capturable``
        (whose steps are the compiled kernel's)."""
        if getattr(self, "capturable", False):
            return True
        count = sum(len(g["params"]) for g in self.param_groups)
        if getattr(self, "_auto_for", (None,))[0] != count:
            numel = sum(p.numel() for g in self.param_groups for p in g["params"])
            self._auto_for = (count, numel >= AUTO_COMPILE_MIN_NUMEL)
        if self._auto_for[1]:
            return True
        if (taken := self._steps_taken()) < AUTO_COMPILE_AFTER_STEPS:
            return False
        _log.info("backend='auto': %s has taken %d steps; its next step compiles the fused "
                  "kernel (seconds, once) and runs it from then on", type(self).__name__, taken)
        return True

    def _compiles_from(self) -> int | None:
        """The step count from which ``auto`` compiles, while it runs the eager kernel and can
        compile; else None."""
        runner = self._runner
        if runner is None or not runner.eager or not runner.can_compile():
            return None
        return AUTO_COMPILE_AFTER_STEPS

    def _steps_taken(self) -> int:
        """The step count of the first parameter with a state (0 before the first step; a
        count on another device is not read, not to wait for it)."""
        state = next(iter(self.state.values()), None)
        step = state.get("step") if state else None
        return int(step) if isinstance(step, torch.Tensor) and step.device.type == "cpu" else 0

    def _compiled_runner(self):
        if self._runner is None:  # auto starts with the eager kernel (see _resolve_backend)
            self._runner = CompiledRunner(type(self), eager=self.backend == "auto")
        return self._runner

    def _run_forloop(self, items, states, ks, coefficients) -> None:
        for it, state, k in zip(items, states, ks, strict=True):
            olds = [real_view(state[key]) for key in self.state_keys]
            self._forloop(it.theta, it.grad, *olds, *coefficients(k))

    def _run_foreach(self, items, states, ks, coefficients) -> None:
        buckets: dict = {}
        for it, state, k in zip(items, states, ks, strict=True):
            if it.theta.numel() == 0:
                continue
            buckets.setdefault((it.theta.device, it.theta.dtype, k), []).append((it, state))
        for (_, _, k), members in buckets.items():
            params = [it.theta for it, _ in members]
            grads = [it.grad for it, _ in members]
            lists = [[real_view(s[key]) for _, s in members] for key in self.state_keys]
            self._foreach(params, grads, *lists, *coefficients(k))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch. Gradients in the compiled path's flat layout are set to None (the next
        backward's gradients are moved into the layout by a hook) or zeroed in place there;
        gradients laid out by :func:`flat_parameters` are zeroed in place."""
        handled: set = set()
        flat = {}
        for group in self.param_groups:
            for p in group["params"]:
                buffer = getattr(p, "_ctopt_flat_grad", None)
                if buffer is not None and p.grad is not None:
                    flat[id(buffer)] = buffer
                    handled.add(id(p))
        for buffer in flat.values():
            buffer.zero_()
        if self._runner is not None:
            handled |= self._runner.zero_grad(set_to_none, skip=handled)
        if not handled:
            return super().zero_grad(set_to_none)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if id(p) in handled or p.grad is None:
                        continue
                    if set_to_none:
                        p.grad = None
                    else:
                        if p.grad.grad_fn is not None:
                            p.grad.detach_()
                        else:
                            p.grad.requires_grad_(False)
                        p.grad.zero_()
