"""The compiled path's kernels, called without torch.compile's runtime wrappers. Torch only —
copied into standalone exports.

A call of a ``torch.compile``-d function passes the dynamo frame (its guards) and AOTAutograd's
runtime wrapper before Inductor's generated code runs: about 35 µs warm on a CPU core, and about
0.4 ms when a backward pass has just evicted the caches — more than the kernel itself on a small
model (measured in ``docs/performance.md``). :class:`Kernel` compiles a function as
``torch.compile(fn, dynamic=True, fullgraph=True)`` does, keeping the graph Inductor compiled and
the order of its inputs, and then calls that graph directly. A direct call is keyed by the
devices and dtypes, which arguments are as long as the first (the elementwise ones) and the
shapes of the others (the coefficient vector); the generated code checks every input's sizes
and strides itself, before any write. Each key is checked once against the ordinary call, bit
for bit, on short copies of the arguments; any difference, or a torch whose internals differ,
leaves the ordinary call in use.

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
import ctypes
import inspect
import math
import re
import struct

import torch

from .stored import StoredCall, graph_key, recall, remember
from .warm import known_isa

__all__ = ["HostVector", "Kernel"]

#: a graph input's source as dynamo names it: an argument, an item of ``*args``, or a size
_SOURCE = re.compile(r"L\['(\w+)'\](?:\[(\d+)\])?(?:\.size\(\)\[(\d+)\])?")

#: the length of the copies a direct call is checked on
_PROBE = 61
#: the length of the elementwise arguments a kernel is compiled at (see :func:`_stand_ins`)
_COMPILE_NUMEL = 1 << 20


class Kernel:
    """``fn`` compiled by Inductor, callable as ``fn`` (in place: its results are its writes)."""

    def __init__(self, fn):
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
        key = _key(args)
        direct = self.direct.get(key)
        if direct is not None:
            try:
                call, recipe = direct
                call(_inputs(recipe, args))
                return None
            except AssertionError:  # the generated code's own size check, before any write
                del self.direct[key]
                self.refused.add(key)
        if key in self.refused:
            self.compiled(*args)
        else:
            known, seen = len(self.graphs), []
            with _watching(seen):  # Inductor's graph, compiled or from a cache
                self.compiled(*_stand_ins(args))
            kinds = tuple(k[:2] for k in key)
            own = self.graphs[known:]
            if len(own) == 1 and len(seen) + ("graph" in own[0]) == 1:  # this call's own graph
                if seen:  # else the graph came from the store (see _backend)
                    own[0]["graph"] = seen[0]
                own[0]["kinds"] = kinds
                self._adopt(key, args, own[0])
            else:  # a graph compiled before served it: the one for these devices and dtypes
                served = [e for e in self.graphs if e.get("kinds") == kinds]
                if len(served) == 1:
                    self._adopt(key, args, served[0])
                else:
                    self.refused.add(key)
            direct = self.direct.get(key)
            if direct is None:
                self.compiled(*args)
            else:
                call, recipe = direct
                call(_inputs(recipe, args))
        return None

    def bind(self, *args):
        """A call of the generated code on exactly ``args`` (the same tensors at every call,
        their values free to change): ``bound()`` runs it, with nothing looked up. None when
        these arguments have no direct call (yet).

        A bound call raises ``AssertionError`` (before any write) when an argument's sizes or
        strides have changed since; the caller then calls the kernel as usual."""
        direct = self.direct.get(_key(args))
        if direct is None:
            return None
        call, recipe = direct
        inputs = _inputs(recipe, args)
        return lambda: call(list(inputs))  # the generated code empties the list it is given

    # ------------------------------------------------------------------ capture
    def _backend(self, gm, example_inputs):
        entry = {"recipe": self._recipe(gm)}
        self.graphs.append(entry)
        on_cpu = _on_cpu(example_inputs)
        if on_cpu and entry["recipe"] is not None:  # remembered from an earlier process?
            entry["key"] = graph_key(gm, example_inputs)
            remembered = recall(entry["key"])
            if remembered is not None:
                entry["graph"] = remembered
                return remembered.dynamo_callable()
        from torch._inductor.compile_fx import compile_fx

        with known_isa() if on_cpu else contextlib.nullcontext():
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

    def _adopt(self, key, args, entry: dict) -> None:
        """Make the direct call of the captured graph ``entry`` for ``key`` after checking it
        (on copies shaped like ``args``: a graph that does not fit fails its size check)."""
        graph, recipe = entry.get("graph"), entry.get("recipe")
        call = getattr(graph, "current_callable", None)
        if call is None or recipe is None or not getattr(graph, "_boxed_call", False):
            self.refused.add(key)
            return

        def direct(args, call=call, recipe=recipe):
            call(_inputs(recipe, args))

        if _agrees(self.compiled, direct, args):
            self.direct[key] = (call, recipe)
            if not isinstance(graph, StoredCall):
                remember(entry.get("key"), graph, recipe, args)
        else:
            self.refused.add(key)


def _key(args) -> tuple:
    """A direct call's key: each argument's device, dtype and, as dynamo gives equal sizes one
    symbol ("duck sizing"), True where it is as long as the first (a graph compiled when, say,
    the coefficient vector was as long as theta holds only where that is so again), else its
    very shape (the coefficients, GradScaler's scalars)."""
    shape = args[0].shape
    return tuple((a.device, a.dtype, True if a.shape == shape else a.shape) for a in args)


def _on_cpu(inputs) -> bool:
    """Whether a graph's inputs put its kernel on the CPU (where Inductor probes vector ISAs:
    see :mod:`.warm`); a CUDA kernel's inputs are all on the device.

    Example:
        >>> _on_cpu([torch.ones(2), 3]), _on_cpu([torch.ones(2, device="meta")])
        (True, False)
    """
    return any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in inputs)


def _stand_ins(args) -> list:
    """What a kernel is compiled on: copies of ``args``, the 1-D elementwise ones (as long as
    the first) made ``_COMPILE_NUMEL`` long. Inductor picks its loops' vector width and
    threading from the sizes it compiles at, and its cache serves that code to every later size:
    a bfloat16 kernel first compiled on a few elements kept half-width (masked) loads and
    stores, 9 ms instead of 1 ms on 10M elements on one CPU core, in every later process."""
    shape = args[0].shape
    return [torch.ones(_COMPILE_NUMEL, dtype=a.dtype, device=a.device)
            if a.shape == shape and a.dim() == 1 else a.clone() for a in args]


def _inputs(recipe, args) -> list:
    """The generated code's inputs: arguments and their sizes, in the graph's order."""
    return [args[i] if dim is None else args[i].shape[dim] for i, dim in recipe]


class HostVector:
    """A 1-D float32/float64 host tensor read and written in place from Python numbers: one
    ``struct`` pack into its memory or unpack from it, for a bound call's coefficient vector and
    the step counters (a tensor op instead costs 30-100 µs when the caches are cold). The
    numbers are rounded as ``torch.tensor`` rounds them.

    Example:
        >>> v = HostVector(torch.zeros(2))
        >>> v.write((0.1, 3)), v.tensor.tolist() == torch.tensor([0.1, 3.0]).tolist()
        (True, True)
        >>> v.read() == v.tensor.tolist()
        True
    """

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.format = f"{tensor.numel()}{'d' if tensor.dtype == torch.float64 else 'f'}"
        size = tensor.numel() * tensor.element_size()
        self.memory = (ctypes.c_char * size).from_address(tensor.data_ptr())

    def write(self, numbers) -> bool:
        """Write ``numbers`` (as many as the tensor holds); False, nothing written, where the
        count differs (or ``struct`` refuses a number)."""
        try:
            struct.pack_into(self.format, self.memory, 0, *map(float, numbers))
        except (OverflowError, struct.error):
            return False
        return True

    def read(self) -> list:
        """The numbers the tensor holds now, as Python floats (as ``tensor.tolist()``)."""
        return list(struct.unpack_from(self.format, self.memory))


def _agrees(ordinary, direct, args) -> bool:
    """Whether ``direct`` writes what ``ordinary`` writes (NaN where it writes NaN), on random
    copies of ``args``, the elementwise ones cut to ``_PROBE`` elements (the same key)."""
    shape, gen = args[0].shape, torch.Generator(device=args[0].device).manual_seed(0)
    base = []
    for a in args:
        like = a[:_PROBE] if a.shape == shape and a.dim() == 1 else a
        base.append(torch.rand(like.shape, generator=gen, device=a.device).to(a.dtype)
                    if a.is_floating_point() else like.clone())
    ones, twos = [b.clone() for b in base], [b.clone() for b in base]
    try:
        ordinary(*ones)
        direct(twos)
    except Exception:  # noqa: BLE001  (a generated call that does not fit: not adopted)
        return False
    def plain(t):  # NaN as 0, infinities kept
        return t.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)

    return all(torch.equal(a.isnan(), b.isnan()) and torch.equal(plain(a), plain(b))
               for a, b in zip(ones, twos, strict=True))


@contextlib.contextmanager
def _watching(seen: list):
    """Record every Inductor graph made ready while the block runs (``post_compile`` runs on a
    fresh compile and on a cache hit alike)."""
    try:
        from torch._inductor.output_code import CompiledFxGraph
        original = CompiledFxGraph.post_compile
    except (ImportError, AttributeError):  # another torch: nothing seen, nothing adopted
        yield
        return

    def post_compile(graph, *args, **kwargs):
        seen.append(graph)
        return original(graph, *args, **kwargs)

    CompiledFxGraph.post_compile = post_compile
    try:
        yield
    finally:
        CompiledFxGraph.post_compile = original
