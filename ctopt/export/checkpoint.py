"""Validated checkpoints: ``load_state_dict`` checks a state dict completely before anything is
changed — its structure, every group option, every state tensor — and builds the new groups and
state; the optimizer then swaps them in at once. Torch only — copied into standalone exports.

A checkpoint of another algorithm is refused, naming the option and the design that honours it:
``amsgrad=True`` (a torch ``Adam(amsgrad=True)``) is honoured by the ``amsgrad`` design, a
momentum buffer by ``heavy_ball``, and so on. Options torch adds for its implementations
(``foreach``, ``fused``, ``capturable``, ``differentiable``) and keys of LR schedulers
(``initial_lr``, ...) are kept as they are.

Example:
    >>> foreign_option("adam", {"lr", "betas", "eps", "weight_decay"}, "nesterov", True)
    "option 'nesterov' = True is not part of design 'adam' (torch.optim.SGD(nesterov=True) is the design 'nesterov')"
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import torch

from .errors import CtoptError, HyperparameterError
from .master import MASTER_KEY
from .values import fits, real_view

__all__ = ["Checkpoints", "StateDictError", "FOREIGN_OPTIONS", "STATE_OWNERS", "foreign_option",
           "needs_nonnegative", "validated"]


class StateDictError(CtoptError, ValueError):
    """A state dict that does not fit the optimizer (groups, parameters, states, shapes)."""


#: options of torch.optim algorithms: value under which the option changes nothing, and what
#: honours it otherwise
FOREIGN_OPTIONS = {
    "amsgrad": (False, "torch.optim.Adam(amsgrad=True) is the design 'amsgrad'"),
    "decoupled_weight_decay": (False, "torch.optim.Adam(decoupled_weight_decay=True) is the "
                                      "design 'adamw'"),
    "nesterov": (False, "torch.optim.SGD(nesterov=True) is the design 'nesterov'"),
    "centered": (False, "no zoo design has a centred RMSprop; write one as a design"),
    "momentum": (0, "momentum is in the designs 'heavy_ball', 'nesterov' and 'rmsprop'"),
    "dampening": (0, "dampening is in the designs 'heavy_ball' and 'nesterov'"),
    "weight_decay": (0, "weight decay is in the designs 'sgd', 'adam', 'adamw', 'adagrad', "
                        "'rmsprop', ..."),
    "lr_decay": (0, "lr_decay is in the design 'adagrad'"),
    "initial_accumulator_value": (0, "initial_accumulator_value is in the design 'adagrad'"),
    "betas": (None, "betas belong to Adam-like designs ('adam', 'adamw', 'amsgrad', ...)"),
    "alpha": (None, "alpha is torch.optim.RMSprop's, the design 'rmsprop'"),
    "eps": (None, "eps belongs to adaptive designs ('adam', 'adagrad', 'rmsprop', ...)"),
    "rho": (None, "rho is torch.optim.Adadelta's; no zoo design"),
    "lambd": (None, "lambd is torch.optim.ASGD's; no zoo design"),
    "etas": (None, "etas is torch.optim.Rprop's; no zoo design"),
    "step_sizes": (None, "step_sizes is torch.optim.Rprop's; no zoo design"),
    "momentum_decay": (None, "momentum_decay is torch.optim.NAdam's; no zoo design"),
}

#: torch state names of zoo designs: which design keeps such a state
STATE_OWNERS = {
    "momentum_buffer": "'heavy_ball', 'nesterov' (torch.optim.SGD with momentum) or 'rmsprop' "
                       "with momentum",
    "exp_avg": "Adam-like designs ('adam', 'adamw', 'amsgrad', 'adabelief', 'adan')",
    "exp_avg_sq": "Adam-like designs ('adam', 'adamw', 'amsgrad', 'adan')",
    "max_exp_avg_sq": "'amsgrad' (torch.optim.Adam(amsgrad=True))",
    "sum": "'adagrad'",
    "square_avg": "'rmsprop'",
    "grad_avg": "no zoo design (torch.optim.RMSprop(centered=True))",
    "exp_avg_var": "'adabelief'",
    "exp_avg_diff": "'adan'",
    "pre_grad": "'adan'",
}

#: options that only choose torch's implementation; kept, never checked
IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def foreign_option(design: str, own: set, key: str, value):
    """The reason a group option ``key`` = ``value`` of another algorithm is refused, or None
    when it is not foreign or changes nothing.

    Example:
        >>> foreign_option("adam", {"lr"}, "amsgrad", False) is None
        True
        >>> foreign_option("adam", {"lr"}, "momentum", 0.9)
        "option 'momentum' = 0.9 is not part of design 'adam' (momentum is in the designs 'heavy_ball', 'nesterov' and 'rmsprop')"
    """
    if key in own or key not in FOREIGN_OPTIONS:
        return None
    neutral, honoured = FOREIGN_OPTIONS[key]
    if neutral is not None and not isinstance(value, torch.Tensor) and value == neutral:
        return None
    return f"option {key!r} = {value!r} is not part of design {design!r} ({honoured})"


def validated(opt, state_dict) -> tuple[dict, list]:
    """The state and param groups to load into ``opt``, everything checked; raises
    :class:`StateDictError` or :class:`HyperparameterError` and changes nothing.

    Example:
        >>> import torch
        >>> from ctopt import to_torch, zoo
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = to_torch(zoo.get("adam"))([w])
        >>> sd = torch.optim.Adam([w], amsgrad=True).state_dict()
        >>> validated(opt, sd)
        Traceback (most recent call last):
        ...
        ctopt.export.checkpoint.StateDictError: state dict param group 0: option 'amsgrad' = True is not part of design 'adam' (torch.optim.Adam(amsgrad=True) is the design 'amsgrad'); nothing was loaded
    """
    cls = type(opt)
    if not isinstance(state_dict, dict):
        raise StateDictError(f"a state dict is a dict, got {type(state_dict).__name__}")
    groups, saved = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(saved, dict):
        raise StateDictError("a state dict needs 'state' (dict) and 'param_groups' (list)")
    if len(groups) != len(opt.param_groups):
        raise StateDictError(f"the state dict has {len(groups)} param groups, the optimizer "
                             f"{len(opt.param_groups)}")
    skipped = state_dict.get("skipped_steps", 0)
    if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
        raise StateDictError(f"'skipped_steps' = {skipped!r} is not a count")
    own = {h.name for h in cls.hyperparameters} | ({"betas"} if cls.beta_names else set())
    implied = getattr(cls, "implied_options", {})
    new_groups, index = [], {}
    for gi, (mine, theirs) in enumerate(zip(opt.param_groups, groups, strict=True)):
        where = f"state dict param group {gi}: "
        if not isinstance(theirs, dict) or not isinstance(theirs.get("params"), list):
            raise StateDictError(f"{where}a param group is a dict with a 'params' list")
        if len(mine["params"]) != len(theirs["params"]):
            raise StateDictError(
                f"param group {gi} has {len(mine['params'])} parameters, the state dict "
                f"{len(theirs['params'])}")
        group = {key: copy.deepcopy(value) for key, value in theirs.items() if key != "params"}
        for key, value in group.items():
            if key in implied:  # the very value (a bool): a tensor or a number is refused
                want = implied[key]
                if type(value) is not type(want) or value != want:
                    raise StateDictError(f"{where}option {key!r} = {value!r} contradicts design "
                                         f"{cls.design_name!r}, which is {key}={want!r}")
                continue
            reason = foreign_option(cls.design_name, own, key, value)
            if reason is not None:
                raise StateDictError(f"{where}{reason}; nothing was loaded")
        if "maximize" in group and not isinstance(group["maximize"], bool):
            raise StateDictError(f"{where}'maximize' = {group['maximize']!r} is not a bool")
        for h in cls.hyperparameters:  # fill what an older or foreign checkpoint lacks
            if h.name in cls.beta_names:
                group.setdefault("betas", mine.get("betas"))
            else:
                group.setdefault(h.name, mine.get(h.name, h.default))
        group.setdefault("maximize", mine.get("maximize", False))
        values = cls._group_values(group, where)
        if cls.value_guard is not None:
            cls.value_guard(values, where)
        for h in cls.hyperparameters:  # stored as the optimizer stores them (tensors stay)
            if h.name not in cls.beta_names:
                group[h.name] = h.stored(group[h.name], where)
        if cls.beta_names:
            by_name = {h.name: h for h in cls.hyperparameters}
            group["betas"] = tuple(by_name[n].stored(b, where)
                                   for n, b in zip(cls.beta_names, group["betas"], strict=False))
        group["params"] = mine["params"]
        if "param_names" in mine and "param_names" not in group:
            group["param_names"] = mine["param_names"]
        new_groups.append(group)
        for p, pid in zip(mine["params"], theirs["params"], strict=True):
            if isinstance(pid, bool) or not isinstance(pid, (int, str)) or pid in index:
                raise StateDictError(f"{where}parameter id {pid!r} is not a unique id")
            index[pid] = (p, values)
    state = {}
    for pid, entry in saved.items():
        if pid not in index:
            raise StateDictError(f"the state dict has state for unknown parameter id {pid!r}")
        p, values = index[pid]
        checked = _checked_state(cls, entry, p, values, f"state of parameter {pid}",
                                 opt._keeps_master(p))
        if checked:
            state[p] = checked
    return state, new_groups


def _checked_state(cls, entry, p: torch.Tensor, h: dict, where: str, master: bool) -> dict:
    """The checked state of ``p``; ``master``: ``p`` keeps a float32 master copy (created from
    ``p`` when the entry has none) and float32 states."""
    if not isinstance(entry, dict):
        raise StateDictError(f"{where} is not a dict")
    entry = {key: value for key, value in entry.items() if value is not None}
    for key in entry:
        if key == MASTER_KEY and not master:
            raise StateDictError(
                f"{where}: state {key!r} is a float32 master copy, but this optimizer keeps none "
                f"for this {p.dtype} parameter (only bfloat16/float16 parameters of an optimizer "
                "made with master_weights=True keep one); drop the key to load the rest")
        if key != "step" and key != MASTER_KEY and key not in cls.state_keys:
            owner = STATE_OWNERS.get(key)
            raise StateDictError(
                f"{where}: state {key!r} is not a state of design {cls.design_name!r} (states "
                f"{list(cls.state_keys)})" + (f"; it is kept by {owner}" if owner else ""))
    if not entry:
        return {}
    dtype = torch.float32 if master else p.dtype
    out = {}
    for key in cls.state_keys:
        if key in entry:
            out[key] = _checked_tensor(entry[key], p, f"{where}: {key!r}", dtype)
    step = _checked_step(entry.get("step", 1.0), where)
    out["step"] = torch.tensor(step, dtype=torch.float32)
    init = dict(zip(cls.state_keys, cls._state_init(h), strict=False))
    for key in cls.state_keys:
        if key in out:
            continue
        if step > 0 and not cls._state_irrelevant(key, h, int(step) + 1):
            raise StateDictError(
                f"{where}: state {key!r} is missing and, with these hyperparameters, it "
                "affects the update")
        value = complex(init[key], init[key]) if p.is_complex() else init[key]
        if not fits(init[key], dtype):
            raise HyperparameterError(f"{where}: the initial value {init[key]!r} of state "
                                      f"{key!r} overflows {dtype}")
        out[key] = torch.full_like(p, value, dtype=dtype, memory_format=torch.preserve_format)
    for key in cls.state_keys:
        if needs_nonnegative(cls, key, h, int(step) + 1):
            low = float(real_view(out[key]).min()) if out[key].numel() else 0.0
            if low < 0:
                raise StateDictError(
                    f"{where}: {key!r} has a negative entry ({low:g}); design "
                    f"{cls.design_name!r} needs it nonnegative (its square root is taken)")
    if master:  # a checkpoint without master copies: they start from the parameters
        out[MASTER_KEY] = (_checked_tensor(entry[MASTER_KEY], p, f"{where}: {MASTER_KEY!r}",
                                           dtype) if MASTER_KEY in entry else
                           p.detach().to(dtype, copy=True, memory_format=torch.preserve_format))
    return {"step": out.pop("step"), **out}


def _checked_tensor(value, p: torch.Tensor, where: str, dtype=None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise StateDictError(f"{where} is a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided or value.device.type == "meta":
        raise StateDictError(f"{where} is a {value.layout} tensor on {value.device}; a state is a "
                             "dense tensor with data")
    if value.shape != p.shape:
        raise StateDictError(f"{where} has shape {tuple(value.shape)}, the parameter "
                             f"{tuple(p.shape)}")
    if value.is_complex() != p.is_complex() or not (value.is_floating_point() or
                                                    value.is_complex()):
        raise StateDictError(f"{where} has dtype {value.dtype}, the parameter {p.dtype}")
    real = real_view(value.detach())
    if real.numel() and not bool(real.isfinite().all()):
        raise StateDictError(f"{where} holds NaN or Inf")
    dtype = p.dtype if dtype is None else dtype
    if real.numel() and value.dtype != dtype and not fits(float(real.abs().max()), dtype):
        raise StateDictError(f"{where} holds values that overflow the state dtype {dtype}")
    return value.detach().to(device=p.device, dtype=dtype, copy=True,
                             memory_format=torch.preserve_format)


def _checked_step(step, where: str) -> float:
    if isinstance(step, torch.Tensor):
        if step.numel() != 1 or step.is_complex() or step.dtype == torch.bool:
            raise StateDictError(f"{where}: 'step' = {step!r} is not one number")
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise StateDictError(f"{where}: 'step' = {step!r} is not a number")
    step = float(step)
    if not (math.isfinite(step) and 0 <= step < 2 ** 24 and step == int(step)):
        raise StateDictError(f"{where}: 'step' = {step!r} is not a step count in [0, 2**24) "
                             "(the float32 counter)")
    return step


def needs_nonnegative(cls, key: str, h: dict, k: int) -> bool:
    """Whether state ``key`` of the exported class ``cls`` must be nonnegative: it starts
    nonnegative, the step keeps it so from nonnegative states whatever the gradient, and a
    negative value makes the step NaN (e.g. under a square root). Probed with random data.

    Example:
        >>> from ctopt import to_torch, zoo
        >>> Adam = to_torch(zoo.get("adam"))
        >>> h = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
        >>> needs_nonnegative(Adam, "exp_avg_sq", h, 1), needs_nonnegative(Adam, "exp_avg", h, 1)
        (True, False)
    """
    index = cls.state_keys.index(key)
    if cls._state_init(h)[index] < 0:
        return False
    gen = torch.Generator().manual_seed(0)
    theta, g = (3 * torch.randn(64, dtype=torch.float64, generator=gen) for _ in range(2))
    states = [torch.randn(64, dtype=torch.float64, generator=gen).abs() for _ in cls.state_keys]
    coef = cls._scalars(h, k, 1.0, lambda name: 1.0)
    out = cls._elementwise(theta, g, *states, *coef)
    if not bool((torch.as_tensor(out[1 + index]) >= 0).all()):
        return False
    states[index] = torch.full_like(theta, -1.0)
    return any(bool(torch.as_tensor(o).isnan().any())
               for o in cls._elementwise(theta, g, *states, *coef))


class Checkpoints:
    """Mixin of :class:`GeneratedOptimizer`: state dicts with torch's names, loaded
    transactionally, with the repair of states a checkpoint may omit."""

    def state_dict(self) -> dict:
        """torch's state dict plus ``"skipped_steps"`` (steps skipped for non-finite grads)."""
        self._settle_skips()
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
    def _state_irrelevant(cls, key: str, values: dict, k: int) -> bool:
        """Whether state ``key`` cannot change one step's outputs (probed with random data)."""
        gen = torch.Generator().manual_seed(0)
        rand = [torch.randn(16, dtype=torch.float64, generator=gen).abs() + 0.5
                for _ in range(2 + len(cls.state_keys))]
        coef = cls._scalars(values, k, 1.0, lambda name: 1.0)
        index = cls.state_keys.index(key)
        init = cls._state_init(values)[index]
        states = rand[2:]
        other = list(states)
        other[index] = torch.full_like(states[index], init)
        out_a = cls._elementwise(rand[0], rand[1], *states, *coef)
        out_b = cls._elementwise(rand[0], rand[1], *other, *coef)
        return all(torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                   for a, b in zip(out_a, out_b, strict=False))
