"""CPU kernels remembered across processes. Torch only — copied into standalone exports.

Inductor's cache spares a later process the compiling, but not the compiler: before the first
step it still imports Inductor's code generator (about 1 s on a small machine), runs
AOTAutograd and looks the graph up, to find one shared library. When Inductor has compiled one
of ctopt's CPU graphs and :class:`~.direct.Kernel` has adopted its direct call,
:func:`remember` writes down how the generated code calls that library's kernel: the library
and its SHA-256, which graph input each kernel argument is, which size each tensor must have,
and a digest of what the kernel writes on fixed random inputs. A later process that traces the same graph (the
same graph code and inputs, torch, Python, compiler, CPU, thread count and Inductor settings:
:func:`graph_key`) loads the library and calls the kernel itself (:func:`recall`), after
checking the hash and the digest again. Anything else leaves Inductor compiling as usual: a
graph whose generated code does more than size checks and one kernel call, a library that
changed or went, a digest that differs, another device, :data:`STORE` set to False.

Example:
    >>> import torch
    >>> def axpy(x, y, a):
    ...     x.copy_(x + a[0] * y)
    >>> gm = torch.fx.symbolic_trace(axpy)
    >>> key = graph_key(gm, [torch.ones(4), torch.ones(4), torch.ones(1)])
    >>> key is None or len(key) == 64  # a SHA-256, where kernels are remembered
    True
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import operator
import os

import torch

from .warm import host_identity

__all__ = ["FORMAT", "STORE", "StoredCall", "graph_key", "recall", "remember"]

_log = logging.getLogger(__name__)

#: remember kernels (False: every process asks Inductor, as torch.compile does)
STORE = True
#: the version of what :func:`save` writes
FORMAT = 2
#: where the entries are written: None for a folder in Inductor's cache
DIRECTORY: str | None = None
#: the length of the elementwise probe inputs (the digest's inputs)
_PROBE = 61
#: what a size-checking generated call may name besides its one kernel (``size``: it may read
#: a length from a tensor rather than from an input; the kernel's arguments are then matched
#: to the inputs by value, and every tensor's size is checked against its input)
_CHECKS = frozenset({"clear", "assert_size_stride", "size"})
try:  #: the generated code's size and stride check (raises AssertionError)
    _assert_size_stride = torch._C._dynamo.guards.assert_size_stride
except AttributeError:  # another torch: nothing is remembered
    _assert_size_stride = None
_CONTIGUOUS = (1,)


class StoredCall:
    """The generated code's work, done without it: the size and stride checks it makes (the
    same function; dtypes and devices are in dynamo's guards and the direct call's key, as for
    Inductor's call), then the one kernel call. Called as Inductor's compiled graph is
    (``call(inputs)``, the graph inputs in a list)."""

    _boxed_call = True

    def __init__(self, kernel, arguments, sizes):
        """``arguments``: the graph input of each kernel argument; ``sizes``: per tensor input,
        ``(index, ("input", i))`` (as long as size input ``i``) or ``(index, ("fixed", n))``."""
        self.kernel = kernel
        self._sized = [(i, n) for i, (kind, n) in sizes if kind == "input"]
        self._fixed = [(i, (n,)) for i, (kind, n) in sizes if kind == "fixed"]
        self._pick = operator.itemgetter(*arguments) if len(arguments) > 1 else \
            (lambda inputs, i=arguments[0]: (inputs[i],))

    @property
    def current_callable(self):
        return self

    def __call__(self, inputs: list):
        for index, size in self._sized:  # before any write, as the generated code
            _assert_size_stride(inputs[index], (inputs[size],), _CONTIGUOUS)
        for index, sizes in self._fixed:
            _assert_size_stride(inputs[index], sizes, _CONTIGUOUS)
        self.kernel(*self._pick(inputs))
        inputs.clear()
        return ()

    def dynamo_callable(self):
        """The call as a backend returns it to dynamo (the inputs as arguments).

        Example:
            >>> call = StoredCall(lambda x, n: x.mul_(2), [0, 1], [(0, ("input", 1))])
            >>> x = torch.ones(3)
            >>> call.dynamo_callable()(x, 3), x.tolist()
            ((), [2.0, 2.0, 2.0])
        """
        return lambda *inputs: self(list(inputs))


def graph_key(gm, example_inputs) -> str | None:
    """The key of a traced graph: a hash of its code, its inputs as traced, torch's thread
    count, Inductor's settings and :func:`~.warm.host_identity`; None where nothing may be
    remembered (a graph with attributes or modules, a host Inductor does not choose for).

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))  # its weights are attributes
        >>> graph_key(gm, [torch.ones(2)]) is None
        True
    """
    if not STORE or _assert_size_stride is None:
        return None
    try:
        from torch._inductor import config

        if any(node.op not in ("placeholder", "call_function", "call_method", "output")
               for node in gm.graph.nodes):
            return None  # constants and submodules are not in the graph's code
        identity = host_identity()
        if identity is None:
            return None
        inputs = []
        for x in example_inputs:
            if isinstance(x, torch.Tensor):
                inputs.append((str(x.dtype), x.device.type, tuple(map(str, x.shape)),
                               tuple(map(str, x.stride())), x.requires_grad))
            else:
                inputs.append((type(x).__name__, str(x)))
        settings = sorted(config.save_config_portable().items())
        text = repr((FORMAT, identity, torch.get_num_threads(), gm.code, inputs, settings))
    except Exception:  # noqa: BLE001  (another torch: not remembered)
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def remember(key: str | None, graph, recipe, args) -> bool:
    """Remember the compiled ``graph`` (Inductor's, whose direct call was adopted for ``args``
    with ``recipe``: see :mod:`.direct`) under ``key``; True when written. Never raises: a graph
    that cannot be remembered is not.

    Example:
        >>> remember(None, graph=None, recipe=[], args=[])  # no key: nothing to remember it by
        False
    """
    if key is None or not STORE:
        return False
    try:
        entry = _entry(graph, recipe, args)
        if entry is None:
            _log.debug("graph %s not remembered: more than checks and one kernel call", key)
            return False
        folder = _folder()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, key + ".json")
        with open(path + f".{os.getpid()}", "w") as f:
            json.dump(entry, f)
        os.replace(path + f".{os.getpid()}", path)
        return True
    except Exception as error:  # noqa: BLE001  (a read-only cache, another torch, ...)
        _log.debug("graph %s not remembered: %r", key, error)
        return False


def recall(key: str | None) -> StoredCall | None:
    """The call remembered under ``key``, its library loaded and its digest checked again;
    None where there is none or it does not check out.

    Example:
        >>> recall("0" * 64) is None
        True
    """
    if key is None or not STORE:
        return None
    try:
        with open(os.path.join(_folder(), key + ".json")) as f:
            entry = json.load(f)
        if entry.get("format") != FORMAT:
            return None
        call = _stored_call(_library(entry["library"], entry["sha256"]).kernel,
                            entry["arguments"], entry["sizes"])
        probe = _probe(entry["inputs"])
        call(list(probe))
        return call if _digest(probe) == entry["digest"] else None
    except Exception:  # noqa: BLE001  (none, unreadable, another format or torch)
        return None


# ---------------------------------------------------------------------- what is written
def _entry(graph, recipe, args) -> dict | None:
    """What :func:`remember` writes for ``graph``, or None where its generated call is more than
    size checks and one kernel call of a library in Inductor's cache, or its inputs are not
    float vectors and sizes on the CPU."""
    call = graph.current_callable
    function = getattr(call, "__func__", call)
    names = set(function.__code__.co_names) - _CHECKS
    if len(names) != 1:
        return None
    name = names.pop()
    space = function.__globals__
    kernel = space.get(name)
    library = getattr(getattr(kernel, "__self__", None), "__file__", None)
    if not _in_cache(library):
        return None
    spec = _spec(recipe, args)
    if spec is None:
        return None
    probe, seen = _probe(spec), []
    space[name] = lambda *a: seen.append(a)  # what the generated code passes its kernel
    try:
        result = call(list(probe))  # nothing written: the kernel is not called
    finally:
        space[name] = kernel
    if len(seen) != 1 or result not in ((), [], None):
        return None  # more than one kernel call, or outputs beside the writes
    arguments = []
    for a in seen[0]:
        at = [j for j, x in enumerate(probe) if x is a] if isinstance(a, torch.Tensor) else \
            [j for j, (kind, v, *_) in enumerate(spec) if kind == "int" and type(a) is int
             and v == a]
        if len(at) != 1:
            return None
        arguments.append(at[0])
    sizes = []  # each tensor as long as the size input of its length, else fixed
    for i, (kind, *rest) in enumerate(spec):
        if kind == "tensor":
            tie = [j for j, (k, v, *_) in enumerate(spec) if k == "int" and v == rest[1]]
            sizes.append([i, ["input", tie[0]] if tie else ["fixed", rest[1]]])
    mine = _probe(spec)
    call(list(probe))
    _stored_call(kernel, arguments, sizes)(list(mine))
    digest = _digest(mine)
    if digest != _digest(probe):
        return None
    return {"format": FORMAT, "library": library, "sha256": _sha256(library),
            "arguments": arguments, "sizes": sizes, "inputs": spec, "digest": digest}


def _spec(recipe, args) -> list | None:
    """The probe's graph inputs: ``["tensor", dtype, numel]`` (the elementwise ones
    ``_PROBE`` long) or ``["int", size]``; None where an input is neither a float vector on the
    CPU nor a size, or two sizes are equal (a kernel's size argument would be ambiguous)."""
    shape, spec = args[0].shape, []
    for i, dim in recipe:
        a = args[i]
        if dim is not None:
            spec.append(["int", _PROBE if a.shape == shape else int(a.shape[dim])])
        elif isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() == 1 \
                and a.device.type == "cpu":
            spec.append(["tensor", str(a.dtype), _PROBE if a.shape == shape else a.numel()])
        else:
            return None
    sizes = [v for kind, v, *_ in spec if kind == "int"]
    return spec if len(set(sizes)) == len(sizes) else None


def _probe(spec) -> list:
    """The graph inputs ``spec`` describes, the tensors drawn from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(v[1], generator=gen).to(_dtype(v[0])) if kind == "tensor" else v[0]
            for kind, *v in spec]


def _digest(inputs) -> str:
    """A hash of the tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in inputs:
        if isinstance(t, torch.Tensor):
            h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _stored_call(kernel, arguments, sizes) -> StoredCall:
    if any(kind not in ("input", "fixed") for _, (kind, _) in sizes):
        raise ValueError(f"not a size: {sizes!r}")
    return StoredCall(kernel, [int(i) for i in arguments],
                      [(int(i), (kind, int(n))) for i, (kind, n) in sizes])


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {name!r}")
    return dtype


# ---------------------------------------------------------------------- the library
def _folder() -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return DIRECTORY or os.path.join(cache_dir(), "ctopt-kernels")


def _in_cache(path) -> bool:
    """Whether ``path`` is a shared library in Inductor's cache (the only ones loaded)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    if not isinstance(path, str) or not path.endswith(".so"):
        return False
    root = os.path.realpath(cache_dir())
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


#: the libraries loaded in this process, by SHA-256
_LOADED: dict = {}


def _library(path: str, sha256: str):
    """The kernel module of Inductor's library ``path``, whose SHA-256 must be ``sha256`` (loaded
    as Inductor loads it: its entry point reads the address of torch's tensor-to-pointer
    function from the environment)."""
    if sha256 not in _LOADED:
        if not _in_cache(path):
            raise ValueError(f"not a library in Inductor's cache: {path}")
        if _sha256(path) != sha256:
            raise ValueError(f"{path} changed since it was remembered")
        os.environ["_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"] = str(
            torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr)
        spec = importlib.util.spec_from_file_location(f"ctopt_stored_{sha256[:24]}.kernel", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[sha256] = module
    return _LOADED[sha256]
