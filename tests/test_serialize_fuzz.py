"""Fuzzing the design-file loader: whatever the input, it loads a valid design or raises
DesignFileError -- never another exception, never a hang.

Inputs are valid files of every zoo design with random mutations (wrong types, unknown nodes and
names, huge numbers, deep nesting, subtrees moved elsewhere, deleted and added fields), valid
files with one expression made expensive for sympy (roots of 309-digit integers, high powers,
wide and nested Max/Min, numbers at the edges of float64; each load must finish within a
guard), random JSON, and random or truncated text. The default run tries 1,000 inputs; ``-m slow`` tries 11,000
and checks that at least 10,000 of them were malformed (rejected).
"""

from __future__ import annotations

import collections
import copy
import json
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.errors import DesignError, DesignFileError
from ctopt.limits import time_limit
from ctopt.serialize import NODE_TYPES, design_from_dict, design_from_json, design_to_dict

GUARD_S = 10  # every load, accepted or refused, finishes far sooner; a hang fails the test

SEEDS = [design_to_dict(ctopt.zoo.get(name)) for name in ctopt.zoo.names()] + [
    design_to_dict(ctopt.zoo.get("rmsprop", centered=True)),
    design_to_dict(ctopt.zoo.get("adan", no_prox=True)),
]
SEED_TEXTS = [json.dumps(seed) for seed in SEEDS]
NAMES = ["g", "theta", "k", "z", "lr", "m", "v", "beta1", "grad_norm", "x", "__import__",
         "__class__", "os", "eval", ""]
WORDS = [*NODE_TYPES, *NAMES, "sin", "Lambda", "Function", "Integral", "let", "state", "update",
         "l2_norm", "exp_avg", "1", "-1", "0", "1e999", "nan", "9" * 400, "0.5", "1/2"]

OUTCOMES: collections.Counter = collections.Counter()


def junk(rnd: random.Random, depth: int = 0):
    """A random JSON-like value, biased towards values the loader must think about."""
    kind = rnd.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, 1, -1, 2**64, -(10**400), 10**5000 if depth == 0 else 7])
    if kind == 3:
        return rnd.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), -float("inf"), 1e-320])
    if kind in (4, 5):
        return rnd.choice(WORDS)
    if kind == 6:
        return "".join(chr(rnd.randrange(0x20, 0x3000)) for _ in range(rnd.randrange(8)))
    if kind == 7:
        return {"op": rnd.choice(WORDS), "args": [], "name": rnd.choice(NAMES)}
    if kind == 8:
        return [junk(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if kind == 9:
        return {rnd.choice(WORDS): junk(rnd, depth + 1) for _ in range(rnd.randrange(4))}
    if kind == 10:
        node: object = {"op": "Symbol", "name": rnd.choice(NAMES)}
        for _ in range(rnd.randrange(10, 200)):
            node = {"op": rnd.choice(["Abs", "exp", "Not", "sign"]), "args": [node]}
        return node
    return {"op": rnd.choice(["Add", "Mul", "Max", "Pow", "Eq", "And", "Piecewise"]),
            "args": [junk(rnd, depth + 1) for _ in range(rnd.randrange(5))]}


def oversized(rnd: random.Random, depth: int = 0) -> dict:
    """A well-formed subtree that is expensive for sympy: huge exact numbers and their roots,
    high powers, wide and nested Max/Min, numbers at the edges of float64."""
    kind = rnd.randrange(7 if depth < 3 else 5)
    big = rnd.choice([10**rnd.randrange(1, 310) + rnd.randrange(10**6), 2**rnd.randrange(1, 1030),
                      rnd.randrange(2, 2**130)])
    if kind == 0:
        return {"op": "Pow", "args": [{"op": "Integer", "value": str(big)},
                                      {"op": "Rational", "p": "1", "q": str(rnd.randrange(2, 1000))}]}
    if kind == 1:
        return {"op": "Rational", "p": str(big), "q": str(big + rnd.randrange(1, 9))}
    if kind == 2:
        return {"op": "Pow", "args": [{"op": "Symbol", "name": rnd.choice(["g", "lr", "theta"])},
                                      {"op": "Integer", "value": str(rnd.randrange(-2000, 2000))}]}
    if kind == 3:
        return {"op": "Float", "value": f"{rnd.randrange(1, 10)}e{rnd.randrange(-400, 400)}",
                "precision": rnd.choice([2, 53, 113, 1024])}
    if kind == 4:
        return {"op": "exp", "args": [{"op": "Integer", "value": str(rnd.randrange(-2000, 2000))}]}
    width = rnd.choice([2, 3, 8, 9, 40, 64])
    return {"op": rnd.choice(["Max", "Min"]),
            "args": [oversized(rnd, depth + 1) if rnd.random() < 0.3 else
                     {"op": "Add", "args": [{"op": "Symbol", "name": "g"},
                                            {"op": "Integer", "value": str(i)}]}
                     for i in range(width)]}


def slots(tree, out=None):
    """Every (container, key) pair in a JSON tree."""
    out = [] if out is None else out
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.append((tree, key))
            slots(value, out)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.append((tree, i))
            slots(value, out)
    return out


def mutate(data, rnd: random.Random) -> None:
    places = slots(data)
    container, key = rnd.choice(places)
    value = container[key]
    action = rnd.randrange(10)
    if action == 0:
        container[key] = junk(rnd)
    elif action == 1:
        del container[key]
    elif action == 2 and isinstance(container, dict):
        container[rnd.choice(WORDS)] = junk(rnd)
    elif action == 3 and isinstance(container, list):
        container.insert(rnd.randrange(len(container) + 1), copy.deepcopy(value))
    elif action == 4 and isinstance(value, dict) and "op" in value:
        value["op"] = rnd.choice(WORDS)
    elif action == 5 and isinstance(value, dict) and "name" in value:
        value["name"] = rnd.choice(NAMES)
    elif action == 6 and isinstance(value, str):
        container[key] = rnd.choice(WORDS) if rnd.random() < 0.5 else value * rnd.randrange(2, 50)
    elif action == 7:
        other_container, other_key = rnd.choice(places)
        container[key] = copy.deepcopy(other_container[other_key])
    elif action == 8 and isinstance(value, dict) and "op" in value:
        container[key] = {"op": rnd.choice(["Pow", "Add", "Mul", "Eq", "Piecewise", "Not"]),
                          "args": [value, junk(rnd)]}
    else:
        container[key] = junk(rnd)


@st.composite
def malformed_inputs(draw):
    rnd = draw(st.randoms(use_true_random=False))
    kind = draw(st.sampled_from(["mutated"] * 6 + ["mutated text", "json", "text", "bytes"]
                                + ["oversized"] * 2))
    if kind == "oversized":  # a valid file with one expression replaced by an expensive one
        data = copy.deepcopy(SEEDS[rnd.randrange(len(SEEDS))])
        exprs = [(c, key) for c, key in slots(data)
                 if isinstance(c[key], dict) and "op" in c[key]]
        container, key = rnd.choice(exprs)
        container[key] = oversized(rnd)
        return kind, data
    if kind.startswith("mutated"):
        data = copy.deepcopy(SEEDS[rnd.randrange(len(SEEDS))])
        for _ in range(rnd.randrange(1, 5)):
            mutate(data, rnd)
        if kind == "mutated":
            return kind, data
        try:
            return kind, json.dumps(data)
        except (ValueError, RecursionError):
            return kind, data
    if kind == "json":
        return kind, {"format": "ctopt.design", "version": 1, "design": junk(rnd)}
    text = SEED_TEXTS[rnd.randrange(len(SEED_TEXTS))]
    cut = rnd.randrange(len(text))
    if kind == "text":  # a truncated or spliced file
        return kind, text[:cut] + draw(st.text(max_size=20)) + text[cut + rnd.randrange(50):]
    blob = bytearray(text.encode())
    for _ in range(rnd.randrange(1, 8)):
        blob[rnd.randrange(len(blob))] = rnd.randrange(256)
    return kind, bytes(blob)


def load_only_design_file_errors(kind, data) -> None:
    try:
        start = time.perf_counter()
        with time_limit(GUARD_S, "the guard of the fuzzer"):
            design = design_from_dict(data) if isinstance(data, dict) else design_from_json(data)
        OUTCOMES["slowest (ms)"] = max(OUTCOMES["slowest (ms)"],
                                       round(1e3 * (time.perf_counter() - start)))
    except DesignFileError as exc:
        cause = exc.__cause__
        via_net = cause is not None and not isinstance(cause, (DesignError, DesignFileError))
        OUTCOMES["rejected"] += 1
        OUTCOMES["rejected by the last-resort net"] += via_net
    else:
        assert isinstance(design, ctopt.Design)
        OUTCOMES["loaded"] += 1
    OUTCOMES[kind] += 1


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@fuzz(1_000)
@given(malformed_inputs())
def test_fuzzed_design_files_raise_only_design_file_error(case):
    load_only_design_file_errors(*case)


@pytest.mark.slow
@fuzz(11_000)
@given(malformed_inputs())
def test_fuzzed_design_files_at_scale(case):
    load_only_design_file_errors(*case)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    OUTCOMES.clear()
    yield
    print(f"\nfuzzed design files: {dict(OUTCOMES)}")
    if OUTCOMES["loaded"] + OUTCOMES["rejected"] >= 10_000:
        assert OUTCOMES["rejected"] >= 10_000, OUTCOMES
