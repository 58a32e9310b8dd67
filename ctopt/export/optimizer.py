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
from typing import NamedTuple

import torch

from ..errors import CtoptError, HyperparameterError, UnsupportedError  # package-only
from .compiled import CompiledRunner  # package-only

BACKENDS = ("auto", "forloop", "foreach", "compiled")
NONFINITE = ("propagate", "skip", "raise")
AUTO_COMPILE_MIN_NUMEL = 1 << 20
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class StateDictError(CtoptError, ValueError):
    """A state dict that does not fit the optimizer (groups, parameters, states, shapes)."""


class NonFiniteGradientError(CtoptError, FloatingPointError):
    """A NaN or infinite gradient under ``nonfinite="raise"``."""


# ----------------------------------------------------------- scalar helpers (IEEE semantics)
def _div(a, b):
    try:
        return a / b
    except ZeroDivisionError:
        return math.copysign(math.inf, a) * math.copysign(1.0, b) if a != 0 else math.nan


def _pow(a, b):
    try:
        return a ** b
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf


def _sqrt(a):
    return math.sqrt(a) if a >= 0 else math.nan


def _exp(a):
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def _log(a):
    return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)


def _sign(a):
    return float((a > 0) - (a < 0)) if a == a else math.nan


def _nan_sign(x):
    """``torch.sign`` that keeps NaN (``torch.sign(nan)`` is 0; IEEE and the oracle say NaN).

    Example:
        >>> _nan_sign(torch.tensor([float("nan"), -2.0, 0.0])).tolist()
        [nan, -1.0, 0.0]
    """
    return torch.where(torch.isnan(x), x, torch.sign(x))


def _max(*args):
    return math.nan if any(a != a for a in args) else max(args)


def _min(*args):
    return math.nan if any(a != a for a in args) else min(args)


def _choose(cond, a, b):
    """A choice: a Python branch on a bool (a number chosen beside a tensor becomes a tensor
    like it), ``torch.where`` on a tensor.

    Example:
        >>> _choose(True, 1.0, 2.0), _choose(torch.tensor(0.0), torch.ones(1), 2.0).tolist()
        (1.0, [2.0])
        >>> _choose(False, torch.ones(2, dtype=torch.float64), 2.0)
        tensor([2., 2.], dtype=torch.float64)
    """
    if isinstance(cond, torch.Tensor):
        return torch.where(cond != 0, a, b)
    pick, other = (a, b) if cond else (b, a)
    if isinstance(other, torch.Tensor) and not isinstance(pick, torch.Tensor):
        return torch.full_like(other, pick)  # an elementwise choice stays a tensor
    return pick


def _fe_full(value, like):
    """A list of tensors shaped like ``like`` filled with ``value``."""
    return [torch.full_like(t, float(value)) for t in like]


class Hyper(NamedTuple):
    """A hyperparameter as the runtime sees it: name, default and the interval it must lie in.

    Example:
        >>> Hyper("beta1", 0.9, 0.0, 1.0, True, False).check(0.5)
        0.5
        >>> Hyper("beta1", 0.9, 0.0, 1.0, True, False).domain()
        '[0, 1)'
    """

    name: str
    default: float
    lower: float | None
    upper: float | None
    lower_closed: bool = True
    upper_closed: bool = True
    doc: str = ""

    def domain(self) -> str:
        lo = "-inf" if self.lower is None else f"{self.lower:g}"
        hi = "inf" if self.upper is None else f"{self.upper:g}"
        left = "[" if self.lower is not None and self.lower_closed else "("
        right = "]" if self.upper is not None and self.upper_closed else ")"
        return f"{left}{lo}, {hi}{right}"

    def check(self, value, where: str = "") -> float:
        """``float(value)`` or :class:`HyperparameterError` naming the parameter and its domain."""
        try:
            if isinstance(value, bool):
                raise TypeError
            x = float(value.item() if isinstance(value, torch.Tensor) else value)
        except (TypeError, ValueError, RuntimeError):
            x = None
        ok = x is not None and math.isfinite(x)
        if ok and self.lower is not None:
            ok = x > self.lower or (self.lower_closed and x == self.lower)
        if ok and self.upper is not None:
            ok = x < self.upper or (self.upper_closed and x == self.upper)
        if not ok:
            raise HyperparameterError(
                f"{where}hyperparameter {self.name!r} = {value!r} is outside its domain "
                f"{self.domain()}" + (f" ({self.doc})" if self.doc else "")
            )
        return x


class GeneratedOptimizer(torch.optim.Optimizer):
    """Base class of exported optimizers (see the module docstring for the protocol)."""

    design_name = ""
    hyperparameters: tuple[Hyper, ...] = ()
    beta_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()
    reduction_names: tuple[str, ...] = ()

    #: optional check of a group's values against the design's filter conditions, set by
    #: ``ctopt.to_torch(check=True)``; called as ``value_guard(values, where)``
    value_guard = None

    def __init__(self, params, hyper: dict, *, betas=None, maximize: bool = False,
                 backend: str = "auto", nonfinite: str = "propagate", reduction_group=None):
        if backend not in BACKENDS:
            raise UnsupportedError(f"backend {backend!r} is not one of {BACKENDS}")
        if nonfinite not in NONFINITE:
            raise UnsupportedError(f"nonfinite={nonfinite!r} is not one of {NONFINITE}")
        hyper = dict(hyper)
        if betas is not None:
            hyper = self._merge_betas(hyper, betas, strict=True)
        defaults = self._normalize(hyper, where="")
        defaults["maximize"] = bool(maximize)
        self.backend = backend
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.reduction_group = reduction_group
        self._runner = None
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
            if strict and name in hyper and hyper[name] != defaults[name]:
                raise HyperparameterError(f"give either betas or {name}, not both")
            hyper[name] = value
        return hyper

    @classmethod
    def _normalize(cls, values: dict, where: str) -> dict:
        """Validated hyperparameters in group form (betas as a tuple when the design has them)."""
        known = {h.name: h for h in cls.hyperparameters}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise HyperparameterError(
                f"{where}unknown hyperparameter(s) {unknown} for design {cls.design_name!r}; "
                f"valid names: {list(known)}" + (", betas" if cls.beta_names else ""))
        out = {}
        for h in cls.hyperparameters:
            out[h.name] = h.check(values.get(h.name, h.default), where)
        if cls.beta_names:
            out["betas"] = tuple(out.pop(n) for n in cls.beta_names)
        return out

    @classmethod
    def _group_values(cls, group: dict, where: str) -> dict:
        """The design's hyperparameter values (floats) of a param group, validated."""
        values = {}
        for h in cls.hyperparameters:
            if h.name in cls.beta_names:
                betas = group.get("betas")
                try:
                    raw = betas[cls.beta_names.index(h.name)]
                except (TypeError, IndexError):
                    raise HyperparameterError(f"{where}'betas' = {betas!r} must hold "
                                              f"{len(cls.beta_names)} values") from None
            elif h.name in group:
                raw = group[h.name]
            else:
                raise HyperparameterError(f"{where}hyperparameter {h.name!r} is missing")
            values[h.name] = h.check(raw, where)
        return values

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hyperparameters (design names, or ``betas``) are validated first."""
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
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if isinstance(p, tuple):  # named parameters
                p = p[1]
            if isinstance(p, torch.Tensor) and p.is_complex():
                raise UnsupportedError(
                    f"{where}complex parameters are not supported (shape {tuple(p.shape)}); "
                    "optimize torch.view_as_real(p) instead")
        super().add_param_group(group)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (``closure`` re-evaluates the loss, as in torch)."""
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
                if p.grad.is_sparse:
                    raise UnsupportedError(f"{self._param_name(i, j)} has a sparse gradient; "
                                           f"design {self.design_name!r} needs dense gradients")
                items.append((j, p))
            plans.append((group, h, items))
        if self.nonfinite != "propagate" and self._nonfinite(plans):
            return loss
        for gi, (group, h, items) in enumerate(plans):
            if items:
                self._step_group(gi, group, h, items)
            elif self.reduction_group is not None and self.reduction_names:
                self._take_part_in_reductions(group, h)
        return loss

    def _param_name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("param_names")
        if names:
            return f"parameter {names[j]!r}"
        p = self.param_groups[gi]["params"][j]
        return f"parameter {j} of param group {gi} (shape {tuple(p.shape)})"

    def _nonfinite(self, plans) -> bool:
        """True when the step must be skipped; raises under ``nonfinite="raise"``."""
        flat = [(gi, j, p) for gi, (_, _, items) in enumerate(plans) for j, p in items
                if p.grad.numel() > 0]
        by_device: dict = {}
        for entry in flat:
            by_device.setdefault(entry[2].grad.device, []).append(entry)
        for entries in by_device.values():
            norms = torch._foreach_norm([p.grad for _, _, p in entries], float("inf"))
            finite = torch.stack([n.float() for n in norms]).isfinite()
            if bool(finite.all()):
                continue
            if self.nonfinite == "raise":
                gi, j, _ = entries[int((~finite).nonzero()[0, 0])]
                raise NonFiniteGradientError(
                    f"{self._param_name(gi, j)} has a non-finite gradient (NaN or Inf); "
                    "nothing was updated")
            self.skipped_steps += 1
            return True
        return False

    def _init_state(self, p: torch.Tensor, h: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            for key, value in zip(self.state_keys, self._state_init(h), strict=False):
                state[key] = torch.full_like(p, value, memory_format=torch.preserve_format)
        return state

    def _reducer(self, h: dict, gsign: float, items):
        cache: dict = {}

        def red(name: str) -> float:
            if name not in cache:
                fn = getattr(self, f"_reduce_{name}")
                by_device: dict = {}
                for _, p in items:
                    if p.numel() > 0:
                        x = fn(p, p.grad, h, gsign)
                        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
                        norm = torch.linalg.vector_norm(x, dtype=acc).double()
                        by_device.setdefault(p.device, []).append(norm)
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

    def _take_part_in_reductions(self, group: dict, h: dict) -> None:
        """A rank holding no parameter of this group still joins its collective reductions, in
        the same order as the ranks that step it."""
        red = self._reducer(h, -1.0 if group.get("maximize", False) else 1.0, [])
        for name in self.reduction_names:
            red(name)

    def _step_group(self, gi: int, group: dict, h: dict, items) -> None:
        gsign = -1.0 if group.get("maximize", False) else 1.0
        states = [self._init_state(p, h) for _, p in items]
        red = self._reducer(h, gsign, items)
        if self.reduction_group is not None:  # collective: every rank, every group, same order
            for name in self.reduction_names:
                red(name)
        scalars: dict = {}

        def coefficients(k: int):
            if k not in scalars:
                scalars[k] = self._scalars(h, k, gsign, red)
            return scalars[k]

        backend = self._resolve_backend()
        if backend != "forloop" and any(type(p) not in _PLAIN for _, p in items):
            # tensor subclasses (e.g. FSDP2's DTensor) have no flat storage to fuse, and this
            # torch has no DTensor strategy for some foreach ops: they take the for-loop path
            backend = "forloop"
        if backend == "compiled":  # it advances the step counters itself (flat buffers)
            self._compiled_runner().run(self, gi, items, states, coefficients)
            return
        steps = [s["step"] for s in states]
        ks = [int(x) + 1 for x in (torch.stack(steps).tolist() if len(steps) > 8
                                   else [s.item() for s in steps])]
        if backend == "forloop":
            self._run_forloop(items, states, ks, coefficients)
        else:
            self._run_foreach(items, states, ks, coefficients)
        torch._foreach_add_(steps, 1.0)

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
        for (_, p), state, k in zip(items, states, ks, strict=False):
            olds = [state[key] for key in self.state_keys]
            self._forloop(p, p.grad, *olds, *coefficients(k))

    def _run_foreach(self, items, states, ks, coefficients) -> None:
        buckets: dict = {}
        for (_, p), state, k in zip(items, states, ks, strict=False):
            if p.numel() == 0:
                continue
            buckets.setdefault((p.device, p.dtype, k), []).append((p, state))
        for (_, _, k), members in buckets.items():
            params = [p for p, _ in members]
            grads = [p.grad for p in params]
            lists = [[s[key] for _, s in members] for key in self.state_keys]
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
        first; on error (:class:`StateDictError`, :class:`HyperparameterError`) nothing changes.
        A state missing from a saved parameter is re-created from its initial value only when it
        provably cannot affect the update (e.g. torch's RMSprop omits ``momentum_buffer`` when
        momentum is 0); a missing ``step`` is read as one step taken (torch's SGD saves none)."""
        groups, saved = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(saved, dict):
            raise StateDictError("a state dict needs 'state' (dict) and 'param_groups' (list)")
        if len(groups) != len(self.param_groups):
            raise StateDictError(f"the state dict has {len(groups)} param groups, the optimizer "
                                 f"{len(self.param_groups)}")
        new_groups, index = [], {}
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups, strict=False)):
            if len(mine["params"]) != len(theirs.get("params", ())):
                raise StateDictError(
                    f"param group {gi} has {len(mine['params'])} parameters, the state dict "
                    f"{len(theirs.get('params', ()))}")
            group = dict(theirs)
            for h in self.hyperparameters:  # fill what an older or foreign checkpoint lacks
                if h.name in self.beta_names:
                    group.setdefault("betas", mine.get("betas"))
                else:
                    group.setdefault(h.name, mine.get(h.name, h.default))
            group.setdefault("maximize", mine.get("maximize", False))
            h_values = self._group_values(group, f"state dict param group {gi}: ")
            new_groups.append(group)
            for p, pid in zip(mine["params"], theirs["params"], strict=False):
                index[pid] = (p, h_values, gi)
        fixed = {}
        for pid, entry in saved.items():
            if pid not in index:
                raise StateDictError(f"the state dict has state for unknown parameter id {pid!r}")
            p, h_values, gi = index[pid]
            fixed[pid] = self._checked_state(entry, p, h_values, f"state of parameter {pid}")
        super().load_state_dict({"state": fixed, "param_groups": new_groups})
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self._runner = None

    def _checked_state(self, entry: dict, p: torch.Tensor, h: dict, where: str) -> dict:
        if not isinstance(entry, dict):
            raise StateDictError(f"{where} is not a dict")
        entry = {key: value for key, value in entry.items() if value is not None}
        present = [key for key in self.state_keys if key in entry]
        if not present and "step" not in entry:
            return entry
        for key in present:
            value = entry[key]
            if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise StateDictError(f"{where}: {key!r} has shape {shape}, the parameter "
                                     f"{tuple(p.shape)}")
        step = entry.get("step", 1.0)
        try:
            step = float(step)
        except (TypeError, ValueError, RuntimeError):
            raise StateDictError(f"{where}: 'step' = {step!r} is not a number") from None
        if not (math.isfinite(step) and step >= 0 and step == int(step)):
            raise StateDictError(f"{where}: 'step' = {step!r} is not a step count")
        out = dict(entry)
        out["step"] = torch.tensor(step, dtype=torch.float32)
        missing = [key for key in self.state_keys if key not in entry]
        init = dict(zip(self.state_keys, self._state_init(h), strict=False))
        for key in missing:
            if step > 0 and not self._state_irrelevant(key, h, int(step) + 1):
                raise StateDictError(
                    f"{where}: state {key!r} is missing and, with these hyperparameters, it "
                    "affects the update")
            out[key] = torch.full_like(p, init[key], memory_format=torch.preserve_format)
        return out

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
        super().__setstate__(state)

    def __repr__(self) -> str:
        text = super().__repr__()
        head = f"{type(self).__name__} (design {self.design_name!r}, backend={self.backend!r}, " \
               f"nonfinite={self.nonfinite!r})"
        return head + text[len(type(self).__name__):]
