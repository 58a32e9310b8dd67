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
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

import torch

from .checkpoint import validated
from .compiled import CompiledRunner
from .errors import CtoptError, HyperparameterError, UnsupportedError
from .values import Hyper, check_unique, fits, real_view

BACKENDS = ("auto", "forloop", "foreach", "compiled")
NONFINITE = ("propagate", "skip", "raise")
AUTO_COMPILE_MIN_NUMEL = 1 << 20
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class NonFiniteGradientError(CtoptError, FloatingPointError):
    """A NaN or infinite gradient under ``nonfinite="raise"``."""


class _Work(NamedTuple):
    """One parameter in a step: its index in the group, the parameter, and the real tensors the
    step reads and writes (``view_as_real`` of complex ones; a sparse gradient made dense)."""

    j: int
    p: torch.Tensor
    theta: torch.Tensor
    grad: torch.Tensor


class GeneratedOptimizer(torch.optim.Optimizer):
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
                 backend: str = "auto", nonfinite: str = "propagate", reduction_group=None):
        if backend not in BACKENDS:
            raise UnsupportedError(f"backend {backend!r} is not one of {BACKENDS}")
        if nonfinite not in NONFINITE:
            raise UnsupportedError(f"nonfinite={nonfinite!r} is not one of {NONFINITE}")
        if not isinstance(maximize, bool):
            raise HyperparameterError(f"maximize={maximize!r} must be True or False")
        hyper = dict(hyper)
        if betas is not None:
            hyper = self._merge_betas(hyper, betas, strict=True)
        defaults = self._normalize(hyper, where="")
        defaults["maximize"] = maximize
        self.backend = backend
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.reduction_group = reduction_group
        self._runner = None
        self._probes: dict = {}
        super().__init__(params, defaults)

    # ------------------------------------------------------------ hyperparameters
    @classmethod
    def _merge_betas(cls, hyper: dict, betas, strict: bool) -> dict:
        if not cls.beta_names:
            raise HyperparameterError(f"design {cls.design_name!r} has no beta hyperparameters; "
                                      "'betas' is not accepted")
        try:
            betas = tuple(betas)
        except TypeError:
            raise HyperparameterError(f"betas={betas!r} must be a tuple of "
                                      f"{len(cls.beta_names)} numbers") from None
        if len(betas) != len(cls.beta_names):
            raise HyperparameterError(
                f"betas={betas!r} must have {len(cls.beta_names)} entries {cls.beta_names}")
        defaults = {h.name: h.default for h in cls.hyperparameters}
        for name, value in zip(cls.beta_names, betas, strict=False):
            given = hyper.get(name, defaults[name])
            if strict and (isinstance(given, torch.Tensor) or given != defaults[name]):
                raise HyperparameterError(f"give either betas or {name}, not both")
            hyper[name] = value
        return hyper

    @classmethod
    def _normalize(cls, values: dict, where: str) -> dict:
        """Validated hyperparameters in group form (betas as a tuple when the design has them);
        tensors are kept as given (live values)."""
        known = {h.name: h for h in cls.hyperparameters}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise HyperparameterError(
                f"{where}unknown hyperparameter(s) {unknown} for design {cls.design_name!r}; "
                f"valid names: {list(known)}" + (", betas" if cls.beta_names else ""))
        out = {}
        for h in cls.hyperparameters:
            out[h.name] = h.stored(values.get(h.name, h.default), where)
        if cls.beta_names:
            out["betas"] = tuple(out.pop(n) for n in cls.beta_names)
        return out

    @classmethod
    def _group_values(cls, group: dict, where: str) -> dict:
        """The design's hyperparameter values (floats, read now) of a param group, validated."""
        values = {}
        for h in cls.hyperparameters:
            if h.name in cls.beta_names:
                betas = group.get("betas")
                try:
                    raw = betas[cls.beta_names.index(h.name)]
                except (TypeError, IndexError, KeyError):
                    raise HyperparameterError(f"{where}'betas' = {betas!r} must hold "
                                              f"{len(cls.beta_names)} values") from None
            elif h.name in group:
                raw = group[h.name]
            else:
                raise HyperparameterError(f"{where}hyperparameter {h.name!r} is missing")
            values[h.name] = h.check(raw, where)
        if not isinstance(group.get("maximize", False), bool):
            raise HyperparameterError(f"{where}'maximize' = {group['maximize']!r} must be True "
                                      "or False")
        return values

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hyperparameters (design names, or ``betas``) are validated first,
        and a parameter may appear only once in the optimizer."""
        group = dict(param_group)
        where = f"param group {len(getattr(self, 'param_groups', []))}: "
        hyper = {h.name: group.pop(h.name) for h in self.hyperparameters if h.name in group}
        betas = group.pop("betas", None)
        if betas is not None:
            hyper = self._merge_betas(hyper, betas, strict=True)
        base = {h.name: h.default for h in self.hyperparameters}
        base.update({n: v for n, v in self.defaults.items() if n in base})
        if self.beta_names:
            base.update(zip(self.beta_names, self.defaults["betas"], strict=False))
        base.update(hyper)
        group.update(self._normalize(base, where))
        if self.value_guard is not None:
            self.value_guard(self._group_values(group, where), where)
        group.setdefault("maximize", self.defaults["maximize"])
        if not isinstance(group["maximize"], bool):
            raise HyperparameterError(f"{where}maximize={group['maximize']!r} must be True or "
                                      "False")
        params = group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif not isinstance(params, (set, dict)):
            params = list(params)  # a generator is read once
        group["params"] = params
        if isinstance(params, list):
            tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
            existing = [p for g in getattr(self, "param_groups", []) for p in g["params"]]
            check_unique(tensors, existing, where)
        super().add_param_group(group)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (``closure`` re-evaluates the loss, as in torch). Everything
        the step needs is computed and checked before anything is written."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = []
        for i, group in enumerate(self.param_groups):
            h = self._group_values(group, f"param group {i}: ")
            items = []
            for j, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce().to_dense()
                items.append(_Work(j, p, real_view(p), real_view(grad)))
            plans.append((group, h, items))
        if self.nonfinite != "propagate" and self._nonfinite(plans):
            return loss
        prepared = [self._prepare(gi, group, h, items)
                    for gi, (group, h, items) in enumerate(plans)]
        for gi, ((group, _, items), ready) in enumerate(zip(plans, prepared, strict=True)):
            if items:
                self._commit(gi, group, items, *ready)
        return loss

    def _param_name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("param_names")
        if names:
            return f"parameter {names[j]!r}"
        p = self.param_groups[gi]["params"][j]
        return f"parameter {j} of param group {gi} (shape {tuple(p.shape)})"

    def _nonfinite(self, plans) -> bool:
        """True when the step must be skipped; raises under ``nonfinite="raise"``."""
        flat = [(gi, it) for gi, (_, _, items) in enumerate(plans) for it in items
                if it.grad.numel() > 0]
        by_device: dict = {}
        for entry in flat:
            by_device.setdefault(entry[1].grad.device, []).append(entry)
        for entries in by_device.values():
            norms = torch._foreach_norm([it.grad for _, it in entries], float("inf"))
            finite = torch.stack([n.float() for n in norms]).isfinite()
            if bool(finite.all()):
                continue
            if self.nonfinite == "raise":
                gi, it = entries[int((~finite).nonzero()[0, 0])]
                raise NonFiniteGradientError(
                    f"{self._param_name(gi, it.j)} has a non-finite gradient (NaN or Inf); "
                    "nothing was updated")
            self.skipped_steps += 1
            return True
        return False

    def _prepare(self, gi: int, group: dict, h: dict, items):
        """Everything group ``gi``'s step needs, checked, nothing written: the new states, the
        step counts and the per-step coefficients (a dict k -> tuple)."""
        gsign = -1.0 if group.get("maximize", False) else 1.0
        red = self._reducer(h, gsign, items)
        if self.reduction_group is not None:  # collective: every rank, every group, same order
            for name in self.reduction_names:
                red(name)
        if not items:
            return None
        fresh, ks = {}, []
        init = None
        for it in items:
            state = self.state.get(it.p)
            if state:
                ks.append(int(state["step"]) + 1)
                continue
            if init is None:
                init = self._state_init(h)
                for key, value in zip(self.state_keys, init, strict=False):
                    self._check_fits(float(value), h, gi, it,
                                     f"the initial value of state {key!r}")
            value_of = (lambda v: complex(v, v)) if it.p.is_complex() else (lambda v: v)
            fresh[it.p] = {"step": torch.tensor(0.0, dtype=torch.float32), **{
                key: torch.full_like(it.p, value_of(v), memory_format=torch.preserve_format)
                for key, v in zip(self.state_keys, init, strict=False)}}
            ks.append(1)
        coefficients = {}
        for k in sorted(set(ks)):
            coefficients[k] = tuple(self._scalars(h, k, gsign, red))
        for it, k in zip(items, ks, strict=True):
            for c in coefficients[k]:
                if isinstance(c, (int, float)):
                    self._check_fits(float(c), h, gi, it, f"a per-step coefficient at step {k}")
            if it.p.grad.is_sparse and not self._zero_gradient_is_identity(coefficients[k]):
                raise UnsupportedError(
                    f"{self._param_name(gi, it.j)} has a sparse gradient; design "
                    f"{self.design_name!r} needs dense gradients at these hyperparameters (a zero "
                    "gradient still changes theta or a state, so the entries a sparse gradient "
                    "leaves out are not 'no change'); nothing was updated")
        return fresh, ks, coefficients

    def _check_fits(self, value: float, h: dict, gi: int, it, what: str) -> None:
        dtype = real_view(it.p).dtype
        if fits(value, dtype):
            return
        big = [f"{n} = {v!r}" for n, v in h.items() if not fits(v, dtype)]
        source = f" (from {', '.join(big)})" if big else " (from the hyperparameters)"
        raise HyperparameterError(
            f"param group {gi}: {what} = {value!r}{source} overflows {it.p.dtype} (largest "
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

    def _reducer(self, h: dict, gsign: float, items):
        cache: dict = {}

        def red(name: str) -> float:
            if name not in cache:
                fn = getattr(self, f"_reduce_{name}")
                by_device: dict = {}
                for it in items:
                    if it.theta.numel() > 0:
                        x = fn(it.theta, it.grad, h, gsign)
                        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
                        norm = torch.linalg.vector_norm(x, dtype=acc).double()
                        by_device.setdefault(it.theta.device, []).append(norm)
                squares = [float(torch.stack(n).square().sum()) for n in by_device.values()]
                total = math.fsum(squares)
                if self.reduction_group is not None:
                    total = self._all_reduce(total)
                cache[name] = math.sqrt(total)
            return cache[name]

        return red

    def _all_reduce(self, value: float) -> float:
        """Sum ``value`` over ``reduction_group`` (parameters sharded across ranks, e.g. ZeRO)."""
        import torch.distributed as dist

        device = "cpu"
        if dist.get_backend(self.reduction_group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, group=self.reduction_group)
        return float(t.item())

    def _commit(self, gi: int, group: dict, items, fresh: dict, ks, coefficients) -> None:
        """Write group ``gi``'s step (everything was checked in :meth:`_prepare`)."""
        for p, state in fresh.items():
            self.state[p].update(state)
        states = [self.state[it.p] for it in items]

        def coefs(k: int):
            return coefficients[k]

        backend = self._resolve_backend()
        if backend != "forloop" and any(type(it.p) not in _PLAIN for it in items):
            # tensor subclasses (e.g. FSDP2's DTensor) have no flat storage to fuse, and this
            # torch has no DTensor strategy for some foreach ops: they take the for-loop path
            backend = "forloop"
        if backend == "compiled":  # it advances the step counters itself (flat buffers)
            plain = [i for i, it in enumerate(items) if it.theta is it.p and it.grad is it.p.grad]
            self._compiled_runner().run(self, gi, [(items[i].j, items[i].p) for i in plain],
                                        [states[i] for i in plain], coefs)
            rest = [i for i in range(len(items)) if i not in set(plain)]
            if not rest:
                return
            items, states, ks = ([items[i] for i in rest], [states[i] for i in rest],
                                 [ks[i] for i in rest])
            backend = "foreach"
        if backend == "forloop":
            self._run_forloop(items, states, ks, coefs)
        else:
            self._run_foreach(items, states, ks, coefs)
        torch._foreach_add_([s["step"] for s in states], 1.0)

    def _resolve_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        numel = sum(p.numel() for g in self.param_groups for p in g["params"])
        if numel >= AUTO_COMPILE_MIN_NUMEL and self._compiled_runner().available():
            return "compiled"
        return "foreach"

    def _compiled_runner(self):
        if self._runner is None:
            self._runner = CompiledRunner(type(self))
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

    # ------------------------------------------------------------------ protocol
    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch; gradients laid out by :func:`flat_parameters` are zeroed in place."""
        flat = {}
        for group in self.param_groups:
            for p in group["params"]:
                buffer = getattr(p, "_ctopt_flat_grad", None)
                if buffer is not None and p.grad is not None:
                    flat[id(buffer)] = buffer
        for buffer in flat.values():
            buffer.zero_()
        if len(flat) == 0:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                if getattr(p, "_ctopt_flat_grad", None) is None and p.grad is not None:
                    p.grad = None if set_to_none else p.grad.zero_()

    def state_dict(self) -> dict:
        """torch's state dict plus ``"skipped_steps"`` (steps skipped for non-finite grads)."""
        out = super().state_dict()
        out["skipped_steps"] = self.skipped_steps
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict (ours or torch.optim's for the same algorithm). Everything is checked
        first (see :mod:`ctopt.export.checkpoint`); on error (:class:`StateDictError`,
        :class:`HyperparameterError`) nothing changes. A state missing from a saved parameter is
        re-created from its initial value only when it provably cannot affect the update (e.g.
        torch's RMSprop omits ``momentum_buffer`` when momentum is 0); a missing ``step`` is read
        as one step taken (torch's SGD saves none). Load hooks run as in torch."""
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()  # shallow, as torch
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        state, groups = validated(self, state_dict)
        skipped = state_dict.get("skipped_steps", 0)
        self.__setstate__({"state": defaultdict(dict, state), "param_groups": groups})
        self.skipped_steps = skipped
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    @classmethod
    def _state_irrelevant(cls, key: str, h: dict, k: int) -> bool:
        """Whether state ``key`` cannot change one step's outputs (probed with random data)."""
        gen = torch.Generator().manual_seed(0)
        rand = [torch.randn(16, dtype=torch.float64, generator=gen).abs() + 0.5
                for _ in range(2 + len(cls.state_keys))]
        coef = cls._scalars(h, k, 1.0, lambda name: 1.0)
        index = cls.state_keys.index(key)
        init = cls._state_init(h)[index]
        states = rand[2:]
        other = list(states)
        other[index] = torch.full_like(states[index], init)
        out_a = cls._elementwise(rand[0], rand[1], *states, *coef)
        out_b = cls._elementwise(rand[0], rand[1], *other, *coef)
        return all(torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                   for a, b in zip(out_a, out_b, strict=False))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(backend=self.backend, nonfinite=self.nonfinite,
                     skipped_steps=self.skipped_steps)
        state.pop("reduction_group", None)  # a process group belongs to this process only
        return state

    def __setstate__(self, state: dict) -> None:
        for name, default in (("backend", "auto"), ("nonfinite", "propagate"),
                              ("skipped_steps", 0), ("reduction_group", None)):
            if name not in state and not hasattr(self, name):
                state[name] = default
        state["_runner"] = None
        state["_probes"] = {}
        super().__setstate__(state)

    def __repr__(self) -> str:
        text = super().__repr__()
        head = f"{type(self).__name__} (design {self.design_name!r}, backend={self.backend!r}, " \
               f"nonfinite={self.nonfinite!r})"
        return head + text[len(type(self).__name__):]
