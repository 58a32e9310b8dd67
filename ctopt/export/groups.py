"""Param groups of an exported optimizer: the hyperparameters a group holds (design names, or
torch's ``betas``), validated when a group is added and read — validated again — at every step.
Torch only — copied into standalone exports.

Example:
    >>> import torch, ctopt
    >>> Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    >>> opt = Adam([torch.nn.Parameter(torch.ones(1))], betas=(0.8, 0.9))
    >>> opt.param_groups[0]["betas"], Adam._group_values(opt.param_groups[0], "")["beta1"]
    ((0.8, 0.9), 0.8)
"""

from __future__ import annotations

import operator

import torch

from .errors import HyperparameterError
from .values import check_unique

__all__ = ["GroupValidation"]


def _constant(entry) -> bool:
    """Whether a group entry is an immutable number (or a tuple of them, as ``betas``): the same
    object then always holds the same value."""
    if type(entry) is tuple:
        return all(type(x) in (int, float, bool) for x in entry)
    return entry is None or type(entry) in (int, float, bool)


class GroupValidation:
    """Mixin of :class:`GeneratedOptimizer`: hyperparameter validation of param groups."""

    @classmethod
    def _merge_betas(cls, values: dict, betas, strict: bool) -> dict:
        """``values`` with the entries of ``betas`` under the design's beta names."""
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
        defaults = {spec.name: spec.default for spec in cls.hyperparameters}
        for name, value in zip(cls.beta_names, betas, strict=False):
            given = values.get(name, defaults[name])
            if strict and (isinstance(given, torch.Tensor) or given != defaults[name]):
                raise HyperparameterError(f"give either betas or {name}, not both")
            values[name] = value
        return values

    @classmethod
    def _normalize(cls, values: dict, where: str) -> dict:
        """Validated hyperparameters in group form (betas as a tuple when the design has them);
        tensors are kept as given (live values)."""
        known = {spec.name: spec for spec in cls.hyperparameters}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise HyperparameterError(
                f"{where}unknown hyperparameter(s) {unknown} for design {cls.design_name!r}; "
                f"valid names: {list(known)}" + (", betas" if cls.beta_names else ""))
        out = {}
        for spec in cls.hyperparameters:
            out[spec.name] = spec.stored(values.get(spec.name, spec.default), where)
        if cls.beta_names:
            out["betas"] = tuple(out.pop(n) for n in cls.beta_names)
        return out

    @classmethod
    def _group_values(cls, group: dict, where: str) -> dict:
        """The design's hyperparameter values (floats, read now) of a param group, validated."""
        values = {}
        for spec in cls.hyperparameters:
            if spec.name in cls.beta_names:
                betas = group.get("betas")
                try:
                    raw = betas[cls.beta_names.index(spec.name)]
                except (TypeError, IndexError, KeyError):
                    raise HyperparameterError(f"{where}'betas' = {betas!r} must hold "
                                              f"{len(cls.beta_names)} values") from None
            elif spec.name in group:
                raw = group[spec.name]
            else:
                raise HyperparameterError(f"{where}hyperparameter {spec.name!r} is missing")
            values[spec.name] = spec.check(raw, where)
        if not isinstance(group.get("maximize", False), bool):
            raise HyperparameterError(f"{where}'maximize' = {group['maximize']!r} must be True "
                                      "or False")
        return values

    def _step_values(self, gi: int, group: dict) -> dict:
        """:meth:`_group_values` of group ``gi`` at this step, validated again only when an entry
        of the group is another object than at the last step (a tensor entry, read live, is
        validated at every step)."""
        names = type(self).__dict__.get("_entry_names")
        if names is None:
            names = tuple(s.name for s in self.hyperparameters if s.name not in self.beta_names)
            names = type(self)._entry_names = names + ("betas", "maximize")
        entries = tuple(map(group.get, names))
        cache = self.__dict__.setdefault("_values_seen", {})
        seen = cache.get(gi)
        if seen is not None and all(map(operator.is_, entries, seen[0])):
            return dict(seen[1])
        values = self._group_values(group, f"param group {gi}: ")
        if all(map(_constant, entries)):
            cache[gi] = (entries, values)
        else:
            cache.pop(gi, None)
        return dict(values)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hyperparameters (design names, or ``betas``) are validated first,
        and a parameter may appear only once in the optimizer."""
        group = dict(param_group)
        where = f"param group {len(getattr(self, 'param_groups', []))}: "
        values = {spec.name: group.pop(spec.name) for spec in self.hyperparameters
                  if spec.name in group}
        betas = group.pop("betas", None)
        if betas is not None:
            values = self._merge_betas(values, betas, strict=True)
        base = {spec.name: spec.default for spec in self.hyperparameters}
        base.update({n: v for n, v in self.defaults.items() if n in base})
        if self.beta_names:
            base.update(zip(self.beta_names, self.defaults["betas"], strict=False))
        base.update(values)
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
