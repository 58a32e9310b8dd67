"""CPU kernels remembered across processes (``ctopt.export.stored``): a later process calls the
library Inductor built without Inductor's compiler stack, bit for bit as Inductor's own call;
an entry that does not check out (changed library, other digest, unreadable, a library outside
Inductor's cache) is ignored and Inductor compiles as usual; the stored call checks sizes and
strides before any write, as the generated code does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch

import ctopt
from ctopt.export import direct, stored
from ctopt.export.direct import Kernel

pytestmark = pytest.mark.skipif(stored.host_identity() is None,
                                reason="kernels are remembered where Inductor picks the CPU's "
                                       "vector ISA itself (x86)")

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
COEF = torch.tensor([1.0, 0.0, 0.9, 0.1, 0.999, 0.001, 1.0, 1e-8, -1e-3])


def fresh(cls=Adam):
    """A design's kernel source as a new function (dynamo keeps compiled code per code
    object: each kernel traces its own)."""
    fn = cls._fused
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)


def tensors(n, count=4, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(n, generator=gen, dtype=dtype) for _ in range(count - 1)]
    return out + [torch.rand(n, generator=gen, dtype=dtype)]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Entries written to a fresh folder; Inductor's own cache as it is."""
    monkeypatch.setattr(stored, "DIRECTORY", str(tmp_path))
    return tmp_path


def entries(folder) -> list:
    return sorted(n for n in os.listdir(folder) if n.endswith(".json"))


def no_inductor(monkeypatch):
    """Make Inductor's compiler fail if it is asked (a remembered kernel must not ask)."""
    from torch._inductor import compile_fx

    def refuse(*args, **kwargs):
        raise AssertionError("Inductor was asked to compile")

    monkeypatch.setattr(compile_fx, "compile_fx", refuse)


def test_a_remembered_kernel_is_served_without_inductor_bit_for_bit(store, monkeypatch, caplog):
    caplog.set_level("DEBUG", logger="ctopt.export.stored")
    first = Kernel(fresh())
    first(*tensors(100), COEF)
    assert len(entries(store)) == 1 and first.direct, (
        first.direct, first.refused, [type(g.get("graph")).__name__ for g in first.graphs],
        [g.get("key") for g in first.graphs], stored.host_identity(),
        [r.getMessage() for r in caplog.records if r.name == "ctopt.export.stored"])
    no_inductor(monkeypatch)
    second = Kernel(fresh())
    for n in (2, 15, 16, 17, 1000, 4099):  # around the vector width, and one graph for all
        ours, theirs = tensors(n, seed=n), tensors(n, seed=n)
        for _ in range(3):
            first(*theirs, COEF)
            second(*ours, COEF)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert isinstance(second.graphs[0]["graph"], stored.StoredCall)
    assert len(second.direct) == 1 and not second.refused


def twin(cls):
    """A subclass of an exported optimizer with its kernel source as a new function: its own
    compiled kernel, as in a new process."""
    return type(cls.__name__, (cls,), {"_fused": staticmethod(fresh(cls))})


def steps(cls, n=3):
    """``n`` steps of ``cls`` (compiled) on three parameters; the parameters and states after."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in ((300,), (7, 11), (5,))]
    opt = cls(params, backend="compiled")
    for _ in range(n):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach().clone() for p in params] + [
        t.clone() for p in params for t in opt.state[p].values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("design", ["adamssm", "nesterov", "adabelief"])
def test_other_designs_are_remembered_and_step_as_inductors_kernel(design, store, monkeypatch):
    cls = ctopt.to_torch(ctopt.zoo.get(design))
    theirs = steps(twin(cls))
    assert len(entries(store)) == 1
    no_inductor(monkeypatch)
    ours_cls = twin(cls)
    ours = steps(ours_cls)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert isinstance(ours_cls._compiled_fused.graphs[0]["graph"], stored.StoredCall)


SCRIPT = textwrap.dedent("""
    import hashlib, sys, torch, ctopt
    from ctopt.export import stored
    stored.DIRECTORY, stored.STORE = sys.argv[1], sys.argv[2] == "on"
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((3000,), (64, 33), (17,))]
    opt = ctopt.to_torch(ctopt.zoo.get("adam"))(params, backend="compiled")
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params))
    print(h.hexdigest(), "torch._inductor.select_algorithm" in sys.modules)
""")


def run(folder, switch):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), switch],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    digest, imported = out.stdout.split()
    return digest, imported == "True"


def test_a_later_process_steps_bit_for_bit_without_inductors_compiler(tmp_path):
    """The first process compiles (or finds in Inductor's cache) and remembers; the second
    loads the library itself and never imports Inductor's code generator; a process with the
    store switched off compiles as torch.compile does. All three end bit for bit equal."""
    first = run(tmp_path, "on")
    assert first[1] and len(entries(tmp_path)) == 1
    second = run(tmp_path, "on")
    off = run(tmp_path, "off")
    assert second == (first[0], False)
    assert off == (first[0], True)


# ------------------------------------------------------------------ what is not trusted
def remembered(store):
    """Write an entry for Adam's kernel; return its path."""
    Kernel(fresh())(*tensors(100), COEF)
    (name,) = entries(store)
    return store / name


def served() -> bool:
    """Whether a new kernel is served by a remembered entry."""
    kernel = Kernel(fresh())
    kernel(*tensors(100), COEF)
    return isinstance(kernel.graphs[0]["graph"], stored.StoredCall)


@pytest.mark.parametrize("damage", ["sha256", "digest", "library outside the cache", "format",
                                    "unreadable", "arguments", "library gone"])
def test_an_entry_that_does_not_check_out_is_ignored(damage, store, monkeypatch, tmp_path):
    path = remembered(store)
    assert served()
    entry = json.loads(path.read_text())
    if damage in ("sha256", "digest"):
        entry[damage] = "0" * 64
    elif damage == "library outside the cache":
        copy = tmp_path / "copy.so"
        copy.write_bytes(Path(entry["library"]).read_bytes())
        entry["library"] = str(copy)
    elif damage == "format":
        entry["format"] = stored.FORMAT + 1
    elif damage == "arguments":
        entry["arguments"] = entry["arguments"][::-1]
    elif damage == "library gone":
        entry["library"] = entry["library"] + ".gone.so"
    text = "{not json" if damage == "unreadable" else json.dumps(entry)
    path.write_text(text)
    stored._LOADED.clear()
    assert not served()
    kernel = Kernel(fresh())  # Inductor compiled it: the results are still right
    ours, theirs = tensors(100), tensors(100)
    kernel(*ours, COEF)
    fresh()(*theirs, COEF)
    torch.testing.assert_close(ours, theirs)


def test_switched_off_nothing_is_written_or_read(store, monkeypatch):
    monkeypatch.setattr(stored, "STORE", False)
    Kernel(fresh())(*tensors(100), COEF)
    assert entries(store) == []
    monkeypatch.setattr(stored, "STORE", True)
    remembered(store)
    monkeypatch.setattr(stored, "STORE", False)
    assert not served()


def test_the_stored_call_checks_its_inputs_before_any_write(store, monkeypatch):
    remembered(store)
    kernel = Kernel(fresh())
    kernel(*tensors(100), COEF)
    call = kernel.graphs[0]["graph"]
    recipe = kernel.graphs[0]["recipe"]
    good = tensors(100) + [COEF.clone()]
    bad_cases = {
        "shorter gradient": lambda a: a.__setitem__(1, a[1][:50].clone()),
        "strided state": lambda a: a.__setitem__(2, torch.randn(200)[::2]),
        "2-d parameter": lambda a: a.__setitem__(0, a[0].reshape(10, 10)),
    }
    for case, spoil in bad_cases.items():
        args = [t.clone() for t in good]
        spoil(args)
        before = [t.clone() for t in args]
        inputs = direct._inputs(recipe, args)
        with pytest.raises(AssertionError, match="size|dimensions"):  # the generated code's
            call(inputs)
        assert all(torch.equal(a, b) for a, b in zip(args, before, strict=True)), case


def test_a_graph_that_is_more_than_one_kernel_call_is_not_remembered(store):
    def two_kernels(x, y, coef):  # a reduction over x and then an update of x
        x.copy_(x * coef[0] + y / (x.abs().sum() + 1))

    kernel = Kernel(two_kernels)
    x, y = torch.randn(100), torch.randn(100)
    kernel(x, y, torch.tensor([0.5, 1.0]))
    assert kernel.direct and entries(store) == []


def test_only_graphs_on_the_cpu_without_constants_get_a_key():
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))  # parameters: get_attr nodes
    assert stored.graph_key(gm, [torch.ones(2)]) is None


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality where NaN equals NaN (a drawn design may overflow)."""
    return torch.equal(a.view(torch.int32), b.view(torch.int32)) if a.dtype == torch.float32 \
        else torch.equal(a, b)


@pytest.mark.slow
def test_random_designs_are_remembered_and_step_as_inductors_kernel(store):
    """Designs drawn from the IR (``tests/strategies.py``): each accepted one whose kernel
    Inductor compiled and ctopt remembered steps again from its entry, without Inductor, bit
    for bit (a graph that is more than one kernel call is not remembered: Inductor serves it)."""
    from hypothesis import HealthCheck, given, settings
    from strategies import designs

    from ctopt.errors import CtoptError

    counts: dict = {}

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(designs(max_states=2, max_lets=2))
    def check(drawn):
        if drawn.error is not None:
            return
        try:
            cls = ctopt.to_torch(drawn.design, check=False)
        except CtoptError:
            return
        known = len(entries(store))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a graph dynamo cannot capture
            theirs = steps(twin(cls))
        if len(entries(store)) == known:
            counts["not remembered"] = counts.get("not remembered", 0) + 1
            return
        with pytest.MonkeyPatch.context() as patch:
            no_inductor(patch)
            ours_cls = twin(cls)
            ours = steps(ours_cls)
        assert all(same(a, b) for a, b in zip(ours, theirs, strict=True)), drawn.recipe
        assert isinstance(ours_cls._compiled_fused.graphs[0]["graph"], stored.StoredCall)
        counts["remembered"] = counts.get("remembered", 0) + 1

    check()
    print("drawn designs:", counts)
    assert counts.get("remembered", 0) >= 3, counts
