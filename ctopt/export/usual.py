"""The usual step, remembered. Torch only — copied into standalone exports.

A training loop takes the same step again and again: every param group steady (see
``CompiledRunner.steady``), each one kernel call (bound to its buffers on the host; on a device,
or with master weights, the ordinary call). The general step finds that out anew at every step,
through layers of checks and plans, and when a backward pass has just evicted the caches every
layer is paid in memory misses: about 0.15 ms of a small model's step (measured in
``docs/performance.md``); on a GPU the host's time is the step's whenever the kernel is
shorter. After such a step the optimizer keeps a :class:`UsualStep`: what that step relied on,
by identity — the optimizer's settings, its groups and their entries, each layout's parameters,
gradients and states, and where they point, and whether GradScaler's inputs were set — and at
the next step checks exactly that, in one pass, and runs the same calls. Where anything differs
(a scheduler's new lr, a replaced gradient, a state edited, GradScaler's inputs set or left out,
a step counter changed) it declines before any write and the general step runs, which checks,
repairs and remembers anew.

Example:
    >>> import torch, ctopt
    >>> cls = ctopt.to_torch(ctopt.zoo.get("sgd"))
    >>> ps = [torch.nn.Parameter(torch.ones(4)) for _ in range(2)]
    >>> opt = cls(ps, lr=0.5, backend="compiled")
    >>> for _ in range(3):
    ...     for p in ps:
    ...         p.grad = torch.ones(4) if p.grad is None else p.grad
    ...     opt.step()
    >>> ps[0].tolist(), opt._usual is None or opt._usual.groups is opt.param_groups
    ([-0.5, -0.5, -0.5, -0.5], True)
"""

from __future__ import annotations

from operator import is_
from typing import NamedTuple

from .layout import same_marks, state_marks
from .values import fits

__all__ = ["UsualStep", "remember"]


class _Run(NamedTuple):
    """One group of a remembered step: what it relied on and what it needs again."""

    group: dict
    params: list
    count: int  # len(params)
    entries: tuple  # the group's hyperparameter entries, by identity
    values: dict  # their validated values
    gsign: float  # -1.0 with maximize
    layout: object  # its steady FlatLayout
    dtype: object  # the states' dtype, which every coefficient must fit


class UsualStep:
    """What a step over steady layouts relied on (``runs``: per group ``(layout,
    values)``, the group's validated values), checked and run again by :meth:`__call__`."""

    def __init__(self, opt, runs):
        names = type(opt)._entry_names  # set by the step's group values (GroupValidation)
        self.groups, self.members = opt.param_groups, tuple(opt.param_groups)
        self.settings = _settings(opt)
        #: the step took GradScaler's ``grad_scale``/``found_inf`` in its kernel: so must the next
        self.scaled = _scaled(opt)
        self.runner, self.state, self.count = opt._runner, opt.state, len(opt.state)
        self.marks = state_marks(opt.state)
        self.names = names
        self.runs = []
        for group, (layout, values) in zip(opt.param_groups, runs, strict=True):
            params = group["params"]
            self.runs.append(_Run(group, params, len(params), tuple(map(group.get, names)),
                                  values, -1.0 if group.get("maximize", False) else 1.0, layout,
                                  opt._number_dtype(layout.order[0])))

    def __call__(self, opt) -> bool:
        """Run the remembered step when everything it relied on still holds; False, with
        nothing written, where anything differs."""
        scaling = None
        if self.scaled and _scaled(opt):  # a GradScaler loop: as the general step begins
            opt._settle_skips()  # an earlier step's found_inf, applied to its counters
            scaling = opt._scaling_inputs()  # checked: a named error before any write
        if not self._holds(opt):
            return False
        ready, switch = [], opt._compiles_from()
        for run in self.runs:
            ks = run.layout.step_counts()  # the counters as they are (a user may set them)
            if ks.count(ks[0]) != len(ks) or (switch is not None and ks[0] >= switch):
                return False  # (auto compiles from here: the general step switches)
            k = int(ks[0]) + 1
            red = None
            if opt.reduction_names:  # over the whole flat gradient, as the general step does
                red = opt._steady_reducer(run.values, run.gsign, run.layout)
            coefficients = tuple(opt._scalars(run.values, k, run.gsign, red))
            if not all(fits(float(c), run.dtype) for c in coefficients
                       if isinstance(c, (int, float))):
                return False  # the general step names the overflow
            ready.append((run.layout, k, coefficients, ks[0]))
        runner = self.runner
        for layout, k, coefficients, now in ready:
            runner.steps += 1
            layout.host_step = k - 1
            runner.run_steady(layout, coefficients, scaling=scaling, now=now)
            if scaling is not None:  # a skipped step's count is undone (now or at the next)
                opt._defer_skip(scaling[1], [layout.steps])
        return True

    def _holds(self, opt) -> bool:
        """Whether the optimizer, its groups and their layouts are as the step left them:
        identities and pointers only."""
        d = opt.__dict__
        if opt.param_groups is not self.groups or len(self.groups) != len(self.members) or \
                not all(map(is_, self.groups, self.members)) or _settings(opt) != self.settings or \
                _scaled(opt) is not self.scaled or d.get("_pending_skips") or \
                opt._runner is not self.runner or \
                self.runner.failed or opt.state is not self.state or \
                len(self.state) != self.count:
            return False
        for group, params, count, entries, _, _, layout, _ in self.runs:
            if group["params"] is not params or len(params) != count or \
                    not all(map(is_, map(group.get, self.names), entries)) or \
                    not layout.in_place(params):
                return False
        return same_marks(state_marks(self.state), self.marks) and \
            all(run.layout.states_home() for run in self.runs)


def remember(opt, plans) -> UsualStep | None:
    """A :class:`UsualStep` of the step just taken, when each of its ``plans`` (``(group,
    values, items)`` per group) was a steady layout (``items``: ``(layout, k)``) that ran with
    cached group values, not captured (a scaled step is remembered as scaled); else None.

    Example:
        >>> import torch, ctopt
        >>> opt = ctopt.to_torch(ctopt.zoo.get("sgd"))([torch.nn.Parameter(torch.ones(2))])
        >>> remember(opt, []) is None  # nothing was planned (no step yet)
        True
    """
    if not plans or opt.capturable or opt._runner is None:
        return None
    seen = opt.__dict__.get("_values_seen", {})
    runs = []
    for gi, (_, _, items) in enumerate(plans):
        if type(items) is not tuple or gi not in seen:
            return None
        runs.append((items[0], seen[gi][1]))
    return UsualStep(opt, runs)


def _settings(opt) -> tuple:
    return opt.backend, opt.nonfinite, opt.capturable, opt.master_weights


def _scaled(opt) -> bool:
    """Whether GradScaler's inputs are set (it sets them for the step and deletes them after)."""
    d = opt.__dict__
    return d.get("grad_scale") is not None or d.get("found_inf") is not None
