"""Loading a design file does bounded symbolic work: each adversarial file below is refused
within a second, by a named budget where it is one, instead of keeping sympy busy for minutes;
and what loads can be exported and stepped (nothing fails later with an error not ctopt's).
"""

from __future__ import annotations

import copy
import json
import time

import pytest
import sympy as sp
import torch

import ctopt
from ctopt._exprtree import MAX_EXACT_BITS, MAX_EXPONENT, MAX_MINMAX_ARGS, MAX_MINMAX_DEPTH
from ctopt.errors import DesignFileError
from ctopt.limits import time_limit
from ctopt.serialize import DesignBudgetError, design_from_json, design_to_dict

GUARD_S = 20  # a hang fails with the guard's message; a refusal takes milliseconds
FAST_S = 2.0


def sym(name):
    return {"op": "Symbol", "name": name}


def integer(value):
    return {"op": "Integer", "value": str(value)}


def rational(p, q):
    return {"op": "Rational", "p": str(p), "q": str(q)}


def flt(text):
    return {"op": "Float", "value": text, "precision": 53}


def node(op, *args):
    return {"op": op, "args": list(args)}


P309 = int(sp.nextprime(10**154)) * int(sp.nextprime(3 * 10**154))  # 309 digits, no small factor


def line(i: int) -> dict:
    """``i*g + (100 - i)*lr``: lines that cross, so sympy cannot drop any from a Max."""
    return node("Add", node("Mul", integer(i), sym("g")), node("Mul", integer(100 - i), sym("lr")))


def nested_max(levels: int, width: int = 2) -> dict:
    tree = sym("g")
    for i in range(levels):
        tree = node("Max", tree, *[line(i * width + j) for j in range(1, width)])
    return tree


def sgd_file(expr_tree: dict, **design_fields) -> str:
    """sgd's file with ``theta <- theta - lr*(g + X)`` for the hostile subtree X."""
    data = design_to_dict(ctopt.zoo.get("sgd"))
    assignment = data["design"]["assignments"][-1]
    assignment["expr"] = node("Add", sym("theta"),
                              node("Mul", integer(-1), sym("lr"), node("Add", sym("g"), expr_tree)))
    data["design"].update(design_fields)
    return json.dumps(data)


# name -> (file text, expected message, budget or None)
ADVERSARIAL = {
    "power of a 309-digit integer": (
        sgd_file(node("Pow", integer(P309), rational(1, 2))), r"exact number of 10\d\d bits",
        "MAX_EXACT_BITS"),
    "309-digit rational coefficient": (
        sgd_file(node("Mul", rational(P309, P309 + 2), sym("g"))), r"exact number", "MAX_EXACT_BITS"),
    "exact number grown by a power": (
        sgd_file(node("Pow", integer(2**100), integer(2))), r"grows to 201 bits", "MAX_EXACT_BITS"),
    "exponent 1000": (sgd_file(node("Pow", node("Add", sym("g"), integer(1)), integer(1000))),
                      r"exponent 1000 exceeds the limit 64", "MAX_EXPONENT"),
    "exponent with denominator 999": (sgd_file(node("Pow", sym("lr"), rational(1, 999))),
                                      r"exceeds the limit 64", "MAX_EXPONENT"),
    "Max of 64 arguments": (sgd_file(node("Max", *[line(i) for i in range(64)])),
                            r"Max of 64 arguments", "MAX_MINMAX_ARGS"),
    "nested Max, 40 levels": (sgd_file(nested_max(40)), r"Max/Min nested more than 4 levels",
                              "MAX_MINMAX_DEPTH"),
    "many Max": (sgd_file(node("Add", *[node("Max", *[line(8 * k + i) for i in range(8)])
                                       for k in range(5)])),
                 r"Max/Min nodes have more than 32", "MAX_MINMAX_TOTAL"),
    "300 KB of nested Max": (sgd_file(node("Add", *[nested_max(40, 8) for _ in range(6)])),
                             r"Max/Min nested more than 4 levels", "MAX_MINMAX_DEPTH"),
    "Float beyond float64": (sgd_file(flt("5e308")),
                             r"outside the supported range of float64", None),
    "Float below float64": (sgd_file(flt("1e-330")), r"outside the supported range of float64",
                            None),
    "product beyond float64": (sgd_file(node("Mul", flt("1e300"), flt("1e300"))),
                               r"outside the supported range of float64", None),
    "constant beyond float64": (sgd_file(node("exp", integer(1000))),
                                r"constant 'exp\(1000\)' .* outside the range of float64", None),
    "blank design doc": (sgd_file(integer(0), doc="   \n "), r"design doc is blank", None),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_files_are_refused_fast(name):
    text, message, budget = ADVERSARIAL[name]
    start = time.perf_counter()
    with time_limit(GUARD_S, "the guard of this test"), \
            pytest.raises(DesignFileError, match=message) as info:
        design_from_json(text)
    assert time.perf_counter() - start < FAST_S, f"{name}: refused, but slowly"
    if budget:
        assert isinstance(info.value, DesignBudgetError) and info.value.budget == budget
        assert f"budget {budget}" in str(info.value)


def test_the_big_file_is_big():
    assert 250_000 < len(ADVERSARIAL["300 KB of nested Max"][0]) < 400_000
    assert len(ADVERSARIAL["power of a 309-digit integer"][0]) < 4_000


def test_the_budgets_refuse_only_what_they_name():
    """Just inside each budget, the file loads (and fast)."""
    inside = [node("Pow", integer(2**MAX_EXACT_BITS - 1), rational(1, 2)),
              node("Pow", node("Add", sym("g"), integer(1)), integer(MAX_EXPONENT)),
              node("Max", *[line(i) for i in range(MAX_MINMAX_ARGS)]),
              nested_max(MAX_MINMAX_DEPTH),
              node("Add", *[node("Max", *[line(8 * k + i) for i in range(8)]) for k in range(4)]),
              flt("1e308"), flt("5e-324"), node("exp", integer(700))]
    for tree in inside:
        start = time.perf_counter()
        with time_limit(GUARD_S, "the guard of this test"):
            design = design_from_json(sgd_file(tree))
        assert time.perf_counter() - start < FAST_S
        assert design.name == "sgd"


@pytest.mark.parametrize("tree", [
    node("Pow", integer(2**127 - 1), rational(1, 3)),
    node("Mul", rational(2**127 - 1, 2**127 + 1), node("Max", sym("g"), integer(0))),
    node("exp", node("Mul", integer(-700), sym("lr"))),
    node("Mul", flt("1e-300"), sym("g")),
], ids=["root of 127 bits", "127-bit rational and Max", "exp of -700 lr", "tiny Float"])
def test_what_loads_exports_and_steps(tree, tmp_path):
    """A file within the budgets exports to source that compiles and steps on the float64
    oracle's values, with finite numbers: no error that is not ctopt's, later."""
    design = design_from_json(sgd_file(tree))
    path = tmp_path / "opt.py"
    ctopt.export_source(design, path)
    compile(path.read_text(), str(path), "exec")
    p = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    p.grad = torch.tensor([0.25, 2.0], dtype=torch.float64)
    ctopt.to_torch(design)([p], backend="forloop").step()
    expected = ctopt.simulate(design, lambda x: [0.25, 2.0], [0.5, -1.0], 1)[-1]
    assert torch.allclose(p.detach(), torch.as_tensor(expected), rtol=1e-12, atol=0)


def test_every_zoo_design_is_within_the_budgets():
    from ctopt.serialize import design_to_json

    for name in ctopt.zoo.names():
        design = ctopt.zoo.get(name)
        assert design_from_json(design_to_json(design)).equations() == design.equations()


def test_a_budget_error_changes_nothing():
    text, _, _ = ADVERSARIAL["Max of 64 arguments"]
    data = json.loads(text)
    before = copy.deepcopy(data)
    with pytest.raises(DesignBudgetError):
        ctopt.serialize.design_from_dict(data)
    assert data == before
