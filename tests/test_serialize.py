"""Design files: every zoo design round-trips exactly; malformed files fail with DesignFileError."""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ctopt
from ctopt import serialize
from ctopt.design import NONNEGATIVE, POSITIVE, UNIT, DesignBuilder, g, k, theta
from ctopt.errors import DesignFileError
from ctopt.filters import z
from ctopt.serialize import (
    design_from_dict,
    design_from_json,
    design_to_dict,
    design_to_json,
    expr_from_tree,
    expr_to_tree,
    load_design,
    save_design,
)

VARIANTS = [(name, {}) for name in ctopt.zoo.names()] + [
    ("rmsprop", {"centered": True}),
    ("adabelief", {"decoupled": False}),
    ("adan", {"no_prox": True}),
]


def assert_same_design(a: ctopt.Design, b: ctopt.Design) -> None:
    assert (a.name, a.doc, dict(a.options)) == (b.name, b.doc, dict(b.options))
    assert a.hyper == b.hyper
    assert a.states == b.states
    assert a.reductions == b.reductions
    assert a.filters == b.filters
    assert a.equations() == b.equations()
    for x, y in zip(a.assignments, b.assignments, strict=True):
        assert (x.kind, sp.srepr(x.target), sp.srepr(x.expr)) == (
            y.kind, sp.srepr(y.target), sp.srepr(y.expr))


def noisy_quadratic(seed: int):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.5, 3.0, size=5)
    return lambda x: h * x + 0.1 * rng.standard_normal(x.shape)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_zoo_round_trip_through_a_file(tmp_path, name, options):
    design = ctopt.zoo.get(name, **options)
    path = tmp_path / f"{name}.json"
    save_design(design, path)
    loaded = load_design(path)
    assert_same_design(design, loaded)
    values = {"lr": 0.05} if "lr" in design.defaults else {}
    x0 = np.linspace(-1.0, 1.0, 5)
    original = ctopt.simulate(design, noisy_quadratic(1), x0, 40, **values)
    again = ctopt.simulate(loaded, noisy_quadratic(1), x0, 40, **values)
    assert np.array_equal(original, again, equal_nan=True)
    assert design_to_json(loaded) == path.read_text(encoding="utf-8")


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("old")
    save_design(ctopt.zoo.get("adam"), path)
    assert os.listdir(tmp_path) == ["d.json"]
    assert load_design(path).name == "adam"


def test_file_is_readable_data():
    data = json.loads(design_to_json(ctopt.zoo.get("adamw")))
    assert data["format"] == "ctopt.design" and data["version"] == 1
    lr = data["design"]["hyperparameters"][0]
    assert lr == {"name": "lr", "default": 0.001, "doc": "learning rate", "role": "lr",
                  "domain": {"lower": 0, "upper": None, "lower_closed": True,
                             "upper_closed": True}}
    ops = set()

    def walk(node):
        if isinstance(node, dict):
            if "op" in node:
                ops.add(node["op"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert ops <= set(serialize.NODE_TYPES)


def every_node_design() -> ctopt.Design:
    """A design that uses every node type of the format, Floats and a second-order filter."""
    b = DesignBuilder("everything", doc="uses every node type", flavour="test", level=2,
                      ratio=0.5, off=None)
    lr = b.hyper("lr", 0.1, POSITIVE, "learning rate", role="lr")
    beta = b.hyper("beta", 0.9, UNIT, "EMA coefficient", role="ema")
    c = b.hyper("c", 0.25, NONNEGATIVE, "a constant")
    norm = b.reduction("norm", "l2_norm", g)
    b.state("w", init=c + sp.Rational(1, 3), torch_name="my_w", doc="a weight")
    f = b.filter("m", (1 - beta) ** 2 * z**2 / (z - beta) ** 2, input=g, torch_name="exp_avg")
    w = sp.Symbol("w", real=True)
    cond = sp.And(sp.Or(sp.Ne(k, 2), sp.Lt(norm, 1)), sp.Not(sp.Gt(c, 5)), sp.Le(c, 7),
                  sp.Ge(beta, 0))
    scale = b.let("scale", sp.Piecewise((sp.Float("0.1000000000000000055511151231257827"), cond),
                                        (sp.exp(-c) + sp.log(1 + c), True)))
    b.assign(w, sp.Max(w, sp.Abs(g)) * sp.Float(1.5, 30) + sp.Min(0, sp.sign(g)))
    b.update(theta - lr * scale * sp.Symbol("m", real=True) / f.step_response(k)
             / sp.sqrt(w + 1))
    return b.build()


def test_every_node_type_round_trips(tmp_path):
    design = every_node_design()
    save_design(design, tmp_path / "e.json")
    loaded = load_design(tmp_path / "e.json")
    assert_same_design(design, loaded)
    x0 = np.array([0.3, -0.7, 1.1, 0.0, 2.0])
    assert np.array_equal(ctopt.simulate(design, noisy_quadratic(2), x0, 25),
                          ctopt.simulate(loaded, noisy_quadratic(2), x0, 25))


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(2, 300))
def test_floats_round_trip_exactly(value, precision):
    number = sp.Float(value, precision=precision)
    if abs(number) > sys.float_info.max:  # rounded up past float64 at a low precision
        with pytest.raises(DesignFileError, match=r"outside the supported range of float64"):
            expr_from_tree(expr_to_tree(number), {})
        return
    back = expr_from_tree(expr_to_tree(number), {})
    assert back._mpf_ == number._mpf_ and back._prec == number._prec


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**128) + 1, 2**128 - 1), st.integers(1, 2**128 - 1))
def test_rationals_round_trip_exactly(p, q):
    number = sp.Rational(p, q)
    assert expr_from_tree(expr_to_tree(number), {}) == number


# ------------------------------------------------------------------- error cases
def base() -> dict:
    return design_to_dict(ctopt.zoo.get("adam"))


def update_expr(data: dict) -> dict:
    return data["design"]["assignments"][-1]["expr"]


def sym(name):
    return {"op": "Symbol", "name": name}


def num(value):
    return {"op": "Integer", "value": str(value)}


def nested(depth: int) -> dict:
    node = sym("g")
    for _ in range(depth):
        node = {"op": "Abs", "args": [node]}
    return node


def set_update(tree):
    def mutate(data):
        data["design"]["assignments"][-1]["expr"] = tree
    return mutate


def set_field(path, value):
    def mutate(data):
        obj = data
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return mutate


def drop_field(path):
    def mutate(data):
        obj = data
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]
    return mutate


D = "design"
ERROR_CASES = {
    "version 2": (set_field(["version"], 2), r"unsupported design-file version 2"),
    "version as string": (set_field(["version"], "1"), r"unsupported design-file version '1'"),
    "version true": (set_field(["version"], True), r"unsupported design-file version True"),
    "no format": (drop_field(["format"]), r"not a ctopt design file"),
    "other format": (set_field(["format"], "pickle"), r"not a ctopt design file"),
    "extra top-level field": (set_field(["code"], "x"), r"unknown field\(s\) \['code'\]"),
    "design is a list": (set_field([D], []), r"'design' must be an object"),
    "missing assignments": (drop_field([D, "assignments"]),
                            r"missing field\(s\) \['assignments'\]"),
    "unknown node type": (set_update({"op": "Lambda", "args": []}), r"unknown node type 'Lambda'"),
    "unknown function": (set_update({"op": "sin", "args": [sym("g")]}),
                         r"unknown node type 'sin'"),
    "dunder function": (set_update({"op": "__import__", "args": [sym("g")]}),
                        r"unknown node type '__import__'"),
    "node without op": (set_update({"args": []}), r"needs a string field 'op'"),
    "node is a string": (set_update("theta - lr*g"), r"must be an object, not a string"),
    "unknown name": (set_update(sym("os")), r"unknown name 'os'; this design declares"),
    "z outside a filter": (set_update(sym("z")), r"unknown name 'z'"),
    "extra node field": (set_update({"op": "Symbol", "name": "g", "eval": "1"}),
                         r"unknown field\(s\) \['eval'\]"),
    "unary with two args": (set_update({"op": "exp", "args": [sym("g"), sym("g")]}),
                            r"exp 'args' must have between 1 and 1 entries"),
    "too many args": (set_update({"op": "Add", "args": [sym("g")] * 65}),
                      r"between 1 and 64 entries"),
    "integer not a string": (set_update({"op": "Integer", "value": 3}),
                             r"3 is not an integer string"),
    "integer with code": (set_update({"op": "Integer", "value": "__import__('os')"}),
                          r"is not an integer string"),
    "huge integer": (set_update(num(10**400)), r"not an integer string of at most 310 digits"),
    "zero denominator": (set_update({"op": "Rational", "p": "1", "q": "0"}),
                         r"positive denominator"),
    "huge exponent": (set_update({"op": "Pow", "args": [sym("g"), num(10**9)]}),
                      r"exponent 1000000000 exceeds the limit 64"),
    "exponent denominator": (set_update({"op": "Pow", "args": [
        sym("g"), {"op": "Rational", "p": "1", "q": "100000"}]}), r"exceeds the limit 64"),
    "number growth": (set_update({"op": "Pow", "args": [num(10**30), num(64)]}),
                      r"an exact number grows to 6\d\d\d bits; at most 128"),
    "float with code": (set_update({"op": "Float", "value": "eval('1')", "precision": 53}),
                        r"is not a decimal number"),
    "float out of range": (set_update({"op": "Float", "value": "1e400", "precision": 53}),
                           r"outside the supported range"),
    "float precision": (set_update({"op": "Float", "value": "1.5", "precision": 10**6}),
                        r"precision must be an integer in \[2, 1024\]"),
    "complex result": (set_update({"op": "Pow", "args": [num(-1), {
        "op": "Rational", "p": "1", "q": "2"}]}), r"evaluates to something unsupported"),
    "infinite result": (set_update({"op": "log", "args": [num(0)]}),
                        r"evaluates to something unsupported"),
    "deep expression": (set_update(nested(60)), r"nested deeper than 48 levels"),
    "symbol as condition": (set_update({"op": "Piecewise", "pieces": [
        {"value": sym("g"), "cond": sym("g")}]}), r"Piecewise needs a condition .* got 'g'"),
    "condition as number": (set_update({"op": "exp", "args": [{"op": "True"}]}),
                            r"exp needs a number, got the condition 'True'"),
    "condition as value": (set_update({"op": "Eq", "args": [sym("g"), num(1)]}),
                           r"the expression needs a number, got the condition 'Eq\(g, 1\)'"),
    "complex comparison": (set_update({"op": "Piecewise", "pieces": [
        {"value": sym("g"), "cond": {"op": "Lt", "args": [sym("g"), {"op": "Pow", "args": [
            num(-1), {"op": "Rational", "p": "1", "q": "3"}]}]}}]}),
        r"could not be read as a design \(TypeError: 'Invalid comparison of non-real"),
    "bad name": (set_field([D, "name"], "__class__"), r"'__class__' is not a valid name"),
    "code as hyperparameter name": (
        set_field([D, "hyperparameters", 0, "name"], "__import__('os').system('x')"),
        r"is not a valid name"),
    "default not a number": (set_field([D, "hyperparameters", 0, "default"], "1e-3"),
                             r"'lr' default must be a number"),
    "default outside domain": (set_field([D, "hyperparameters", 0, "default"], -1.0),
                               r"invalid design: hyperparameter 'lr' has default -1.0 outside"),
    "bool closed flag": (set_field([D, "hyperparameters", 0, "domain", "lower_closed"], 1),
                         r"lower_closed must be true or false"),
    "unknown role": (set_field([D, "hyperparameters", 0, "role"], "boss"),
                     r"unknown role 'boss'"),
    "unknown kind": (set_field([D, "assignments", 0, "kind"], "exec"),
                     r"kind must be 'let', 'state' or 'update', not 'exec'"),
    "update of a state": (set_field([D, "assignments", -1, "target"], "m"),
                          r"an 'update' assigns theta"),
    "state never updated": (lambda d: d[D]["assignments"].pop(1),
                            r"invalid design: .*never updated"),
    "two updates": (lambda d: d[D]["assignments"].append(d[D]["assignments"][-1]),
                    r"must update theta exactly once"),
    "option is a list": (set_field([D, "options"], {"x": [1]}), r"option 'x' must be a number"),
    "doc too long": (set_field([D, "doc"], "x" * 20_000), r"design doc is longer than 10000"),
    "too many states": (set_field([D, "states"], [{}] * 300), r"between 0 and 256 entries"),
    "bad torch name": (set_field([D, "states", 0, "torch_name"], "a.b"), r"'a.b' is not a valid"),
    "filter of unknown state": (set_field([D, "filters"], [{
        "output": "q", "transfer": sym("z"), "input": sym("g"), "states": ["q"]}]),
        r"'states' must be distinct declared states"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_malformed_dict_raises_design_file_error(case):
    mutate, message = ERROR_CASES[case]
    data = base()
    mutate(data)
    with pytest.raises(DesignFileError, match=message):
        design_from_dict(data)


TEXT_CASES = {
    "not json": ("{'format': 1}", r"not valid JSON"),
    "not utf-8": (b"\xff\xfe{}", r"not UTF-8 text"),
    "a list": ("[1, 2]", r"must hold a JSON object, not a list"),
    "NaN": ('{"format": NaN}', r"contains NaN: only finite numbers"),
    "Infinity literal": ('{"x": -Infinity}', r"contains -Infinity"),
    "repeated key": ('{"format": "a", "format": "b"}', r"repeats the key 'format'"),
    "deep nesting": ("[" * 5000 + "]" * 5000, r"nested deeper than 128 levels"),
    "oversized": (b" " * (serialize.MAX_FILE_BYTES + 1), r"larger than 1000000 bytes"),
    "huge json integer": ('{"version": ' + "9" * 5000 + "}", r"not valid JSON"),
    "truncated": (design_to_json(ctopt.zoo.get("sgd"))[:-40], r"not valid JSON"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_malformed_text_raises_design_file_error(case):
    text, message = TEXT_CASES[case]
    with pytest.raises(DesignFileError, match=message):
        design_from_json(text)


def test_overflowing_json_float_is_rejected():
    data = base()
    text = json.dumps(data).replace('"default": 0.001', '"default": 1e999', 1)
    with pytest.raises(DesignFileError, match=r"'lr' default must be finite"):
        design_from_json(text)


def test_deep_and_large_expressions_are_bounded():
    data = base()
    wide = {"op": "Add", "args": [{"op": "Mul", "args": [sym("g")] * 60}] * 60}
    data[D]["assignments"][0]["expr"] = wide
    data[D]["assignments"][1]["expr"] = wide
    data[D]["assignments"][2]["expr"] = wide
    data[D]["assignments"][3]["expr"] = wide
    data[D]["assignments"][4]["expr"] = wide
    data[D]["assignments"][5]["expr"] = wide
    with pytest.raises(DesignFileError, match=r"more than 20000 expression nodes"):
        design_from_dict(data)


def test_unsavable_design_raises_design_file_error():
    b = DesignBuilder("opt", shapes=[1, 2])
    lr = b.hyper("lr", 0.1, POSITIVE)
    b.update(theta - lr * g)
    with pytest.raises(DesignFileError, match=r"option 'shapes' = \[1, 2\] cannot be stored"):
        design_to_dict(b.build())
    with pytest.raises(DesignFileError, match=r"ImaginaryUnit .* is not a node type"):
        expr_to_tree(sp.I * g)


def test_loading_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_design(tmp_path / "absent.json")


def test_valid_base_loads():
    """The mutations above start from a file that loads: each error is caused by its mutation."""
    assert_same_design(design_from_dict(copy.deepcopy(base())), ctopt.zoo.get("adam"))


# ------------------------------------------------------------------ hostile files
class Executed(Exception):
    """Raised by a tripwire: something tried to run code or a command."""


def hostile_strings(sentinel) -> list[str]:
    target = str(sentinel)
    return [
        f"__import__('os').system('touch {target}')",
        f"__import__('pathlib').Path({target!r}).touch()",
        f"(lambda: __import__('subprocess').run(['touch', {target!r}]))()",
        f"cos\nsystem\n(S'touch {target}'\ntR.",  # a protocol-0 pickle
        "__class__.__base__.__subclasses__()",
        "exec", "eval", "__builtins__", "Symbol('x')", "1e999999999", "9" * 5000,
    ]


def hostile_files(sentinel) -> list[tuple[str, dict | str | bytes]]:
    files: list[tuple[str, dict | str | bytes]] = []
    for text in hostile_strings(sentinel):
        for where, mutate in [
            ("design doc", set_field([D, "doc"], text)),
            ("hyperparameter doc", set_field([D, "hyperparameters", 0, "doc"], text)),
            ("state doc", set_field([D, "states", 0, "doc"], text)),
            ("option", set_field([D, "options"], {"note": text[:200]})),
            ("design name", set_field([D, "name"], text)),
            ("hyperparameter name", set_field([D, "hyperparameters", 0, "name"], text)),
            ("torch name", set_field([D, "states", 0, "torch_name"], text)),
            ("role", set_field([D, "hyperparameters", 0, "role"], text)),
            ("format", set_field(["format"], text)),
            ("node type", set_update({"op": text, "args": [sym("g")]})),
            ("symbol", set_update(sym(text))),
            ("integer", set_update({"op": "Integer", "value": text})),
            ("rational", set_update({"op": "Rational", "p": text, "q": "1"})),
            ("float", set_update({"op": "Float", "value": text, "precision": 53})),
            ("assignment kind", set_field([D, "assignments", 0, "kind"], text)),
            ("reduction kind", set_field([D, "reductions"], [{"name": "r", "kind": text,
                                                               "of": sym("g")}])),
        ]:
            data = base()
            mutate(data)
            files.append((where, data))
    files.append(("huge exponent", set_update({"op": "Pow", "args": [
        num(10), {"op": "Pow", "args": [num(10), num(10**300)]}]})))
    files.append(("pickle file", f"cos\nsystem\n(S'touch {sentinel}'\ntR.".encode()))
    files.append(("pickle file", pickle.dumps({"format": "ctopt.design", "version": 1})))
    files.append(("code file", f"__import__('os').system('touch {sentinel}')"))
    return [(w, d) if not callable(d) else (w, _applied(d)) for w, d in files]


def _applied(mutate) -> dict:
    data = base()
    mutate(data)
    return data


@contextlib.contextmanager
def tripwires():
    """Within the block, every way of turning text into running code or a command raises
    :class:`Executed` (held only around the calls under test, so pytest itself is unaffected)."""
    import sympy.parsing.sympy_parser as sympy_parser

    def trip(*args, **kwargs):
        raise Executed(f"called with {args!r:.80}")

    targets = [(builtins, "eval"), (builtins, "exec"), (builtins, "compile"), (os, "system"),
               (os, "popen"), (os, "execv"), (subprocess, "Popen"), (pickle, "loads"),
               (pickle, "load"), (sympy_parser, "parse_expr")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    for owner, name in targets:
        setattr(owner, name, trip)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def test_tripwires_fire():
    """The tripwires are live: the checks below would notice code being run."""
    for attempt in (lambda: eval("1"), lambda: sp.sympify("x + 1"), lambda: os.system("true"),
                    lambda: pickle.loads(b"N."), lambda: exec("x = 1")):
        with tripwires(), pytest.raises(Executed):
            attempt()


def test_hostile_files_execute_nothing(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    outcomes = {"loaded": 0, "rejected": 0}
    design_from_json(design_to_json(ctopt.zoo.get("adam")))  # warm every lazy import first
    for where, data in hostile_files(sentinel):
        text = data if isinstance(data, (str, bytes)) else json.dumps(data)
        try:
            with tripwires():
                design = design_from_json(text)
        except DesignFileError:
            outcomes["rejected"] += 1
        else:  # free text (docs, option values) is kept verbatim, as text
            outcomes["loaded"] += 1
            free_text = where in ("design doc", "hyperparameter doc", "state doc", "option")
            plain_name = where.endswith("name") and design.name.isidentifier()
            assert free_text or plain_name, where
            assert design.doc == data["design"]["doc"]
        assert not sentinel.exists(), where
    assert outcomes["rejected"] > 100 and outcomes["loaded"] > 30, outcomes


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_loaded_design_exports_the_same_optimizer(name, options):
    """The generated torch code of a loaded design is the original's, character for character."""
    pytest.importorskip("torch")
    design = ctopt.zoo.get(name, **options)
    loaded = design_from_json(design_to_json(design))
    assert ctopt.export_source(loaded, check=False) == ctopt.export_source(design, check=False)
