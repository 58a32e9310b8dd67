"""The compiled path's kernels, called without torch.compile's runtime wrappers. Torch only —
copied into standalone exports.

A call of a ``torch.compile``-d function passes the dynamo frame (its guards) and AOTAutograd's
runtime wrapper before Inductor's generated code runs: about 35 µs warm on a CPU core, and about
0.4 ms when a backward pass has just evicted the caches — more than the kernel itself on a small
model (measured in ``docs/performance.md``). :class:`Kernel` compiles a function as
``torch.compile(fn, dynamic=True, fullgraph=True)`` does, keeping the graph Inductor compiled and
the order of its inputs, and then calls that graph directly for the (devices, dtypes) it was
compiled for. The generated code checks every input's sizes and strides itself; devices and
dtypes are the key. Each direct call is checked once against the ordinary call, bit for bit, on
small copies of the first arguments; any difference, or a torch whose internals differ, leaves
the ordinary call in use.

Example:
    >>> import torch
    >>> def axpy(x, y, a):
    ...     x.copy_(x + a[0] * y)
    >>> kernel = Kernel(axpy)
    >>> x = torch.ones(4)
    >>> kernel(x, torch.ones(4), torch.tensor([2.0])); kernel(x, torch.ones(4), torch.tensor([2.0]))
    >>> x.tolist(), len(kernel.direct) in (0, 1)
    ([5.0, 5.0, 5.0, 5.0], True)
"""

from __future__ import annotations

import contextlib
import inspect
import re

import torch

__all__ = ["Kernel"]

#: a graph input's source as dynamo names it: an argument, an item of ``*args``, or a size
_SOURCE = re.compile(r"L\['(\w+)'\](?:\[(\d+)\])?(?:\.size\(\)\[(\d+)\])?")

#: the length of the copies a direct call is checked on
_PROBE = 61


class Kernel:
    """``fn`` compiled by Inductor, callable as ``fn`` (in place: its results are its writes)."""

    def __init__(self, fn):
        self.fn = fn
        signature = inspect.signature(fn).parameters.values()
        self.named = [p.name for p in signature if p.kind is p.POSITIONAL_OR_KEYWORD]
        self.varargs = next((p.name for p in signature if p.kind is p.VAR_POSITIONAL), None)
        self.compiled = torch.compile(fn, backend=self._backend, dynamic=True, fullgraph=True)
        self.direct: dict = {}
        self.refused: set = set()
        self.graphs: list = []

    def __call__(self, *args) -> None:
        if torch.compiler.is_compiling():  # inside a user's compiled step: trace fn itself
            return self.compiled(*args)
        key = tuple((a.device, a.dtype) for a in args)
        direct = self.direct.get(key)
        if direct is not None:
            direct(args)
        elif key in self.refused:
            self.compiled(*args)
        else:
            known = len(self.graphs)
            with _no_autograd_cache():  # so that the backend sees Inductor's compiled graph
                self.compiled(*args)
            if len(self.graphs) == known + 1:  # this call compiled the graph that serves key
                self._adopt(key, args)
            else:
                self.refused.add(key)
        return None

    # ------------------------------------------------------------------ capture
    def _backend(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        entry: dict = {"recipe": self._recipe(gm)}

        def inner(*args, **kwargs):
            graph = compile_fx_inner(*args, **kwargs)
            entry["graph"] = graph
            return graph

        self.graphs.append(entry)
        try:
            return compile_fx(gm, example_inputs, inner_compile=inner)
        except TypeError:  # a torch without ``inner_compile``: the ordinary path only
            entry.pop("recipe", None)
            return compile_fx(gm, example_inputs)

    def _recipe(self, gm):
        """``[(argument index, size dim or None)]`` per graph input, or None."""
        out = []
        try:
            for node in gm.graph.nodes:
                if node.op != "placeholder":
                    continue
                source = node.meta["grapharg"].source
                name = source.name if isinstance(source.name, str) else source.name()
                match = _SOURCE.fullmatch(name)
                arg, item, dim = match.groups()
                if item is None:
                    index = self.named.index(arg)
                elif arg == self.varargs:
                    index = len(self.named) + int(item)
                else:
                    return None
                out.append((index, None if dim is None else int(dim)))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        return out

    def _adopt(self, key, args) -> None:
        """Make the direct call of the newest captured graph for ``key`` after checking it."""
        entry = self.graphs[-1] if self.graphs else {}
        graph, recipe = entry.get("graph"), entry.get("recipe")
        call = getattr(graph, "current_callable", None)
        if call is None or recipe is None or not getattr(graph, "_boxed_call", False):
            self.refused.add(key)
            return

        def direct(args, call=call, recipe=recipe):
            call([args[i] if dim is None else args[i].shape[dim] for i, dim in recipe])

        if _agrees(self.compiled, direct, args):
            self.direct[key] = direct
        else:
            self.refused.add(key)


def _agrees(ordinary, direct, args) -> bool:
    """Whether ``direct`` writes what ``ordinary`` writes, on small copies of ``args``."""
    def copies():
        return [a[:_PROBE].clone() if a.dim() == 1 and a.numel() > _PROBE else a.clone()
                for a in args]

    gen = torch.Generator(device=args[0].device).manual_seed(0)
    base = [torch.rand(a.shape, generator=gen, device=a.device).to(a.dtype)
            if a.is_floating_point() else a for a in copies()]
    ones, twos = [b.clone() for b in base], [b.clone() for b in base]
    try:
        ordinary(*ones)
        direct(twos)
    except Exception:  # noqa: BLE001  (a generated call that does not fit: not adopted)
        return False
    return all(torch.equal(a, b) or (a.isnan() == b.isnan()).all() and
               torch.equal(a.nan_to_num(), b.nan_to_num()) for a, b in zip(ones, twos, strict=True))


@contextlib.contextmanager
def _no_autograd_cache():
    """AOTAutograd's cache, off: a hit there would skip the compile the capture watches (the
    Inductor graph cache still serves the compiled code)."""
    config = getattr(torch._functorch, "config", None)
    if config is None or not hasattr(config, "enable_autograd_cache"):
        yield
        return
    with config.patch(enable_autograd_cache=False):
        yield
