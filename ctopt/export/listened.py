"""An exported optimizer's ``step`` wrapper: torch's own when anything listens, else none. Torch
only — copied into standalone exports.

``torch.optim.Optimizer`` wraps every ``step`` in ``Optimizer.profile_hook_step``: a
``record_function`` range for the profiler and the global and per-optimizer step pre/post hooks.
With no profiler running and no hook registered that wrapper still costs about 0.1 ms a step
when a backward pass has just evicted the caches — as much as a small model's whole update.
:func:`listened_step` runs torch's very wrapper whenever a profiler runs, a step hook is
registered or the step is being traced by torch.compile, and the bare step otherwise. What a
bare step skips, the ``record_function`` range and ``_optimizer_step_code`` (the entry point of
the profiler's Python tracer), only a running profiler reads.

Example:
    >>> import torch, ctopt
    >>> opt = ctopt.to_torch(ctopt.zoo.get("sgd"))([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    >>> seen = []
    >>> handle = opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    >>> opt.param_groups[0]["params"][0].grad = torch.ones(1)
    >>> opt.step(); handle.remove(); opt.step()
    >>> seen, type(opt).step.hooked
    (['post'], True)
"""

from __future__ import annotations

import functools

import torch

__all__ = ["listened_step"]

try:  # the registries of torch.optim.register_optimizer_step_{pre,post}_hook
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
except ImportError:  # another torch: always its own wrapper
    _global_optimizer_pre_hooks = _global_optimizer_post_hooks = None


def listened_step(func):
    """``func`` (an optimizer's ``step``) behind torch's step wrapper only when it is heard: a
    profiler, a step hook or torch.compile (see the module docstring). Marked ``hooked`` so
    that ``torch.optim.Optimizer`` does not wrap it again.

    Example:
        >>> import torch
        >>> class Plain(torch.optim.Optimizer):
        ...     def __init__(self, params):
        ...         super().__init__(params, {})
        ...     @listened_step
        ...     def step(self, closure=None):
        ...         return "stepped"
        >>> opt = Plain([torch.nn.Parameter(torch.ones(1))])
        >>> heard = []
        >>> _ = opt.register_step_pre_hook(lambda o, args, kwargs: heard.append(1))
        >>> opt.step(), heard, Plain.step.hooked
        ('stepped', [1], True)
    """
    wrapped = torch.optim.Optimizer.profile_hook_step(func)
    profiling = getattr(getattr(torch._C, "_autograd", None), "_profiler_enabled", None)
    if _global_optimizer_pre_hooks is None or profiling is None:
        wrapped.hooked = True
        return wrapped
    compiling = torch.compiler.is_compiling

    @functools.wraps(func)
    def step(self, *args, **kwargs):
        if compiling() or _global_optimizer_pre_hooks or _global_optimizer_post_hooks or \
                self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or profiling():
            return wrapped(self, *args, **kwargs)
        return func(self, *args, **kwargs)

    step.hooked = True
    return step
