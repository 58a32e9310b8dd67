"""load_state_dict checks everything before it changes anything: checkpoints of other algorithms
are refused naming the option and the design that honours it, and a fuzzer of hostile
checkpoints (mutated real state dicts) finds every one either loaded with equal behaviour or
refused with a named error, the optimizer bit-identical."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.errors import CtoptError

SHAPES = ((3, 2), (4,))


def exported(name):
    return ctopt.to_torch(ctopt.zoo.get(name))


def make(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def grads(ps, step):
    gen = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen) + 0.3 * p.detach()


def run(opt, ps, steps, start=0):
    for s in range(start, start + steps):
        grads(ps, s)
        opt.step()


def raw(opt, ps):
    """Everything that defines the optimizer, as bytes and plain values."""
    def b(t):
        return (t.dtype, tuple(t.shape), t.detach().reshape(-1).view(torch.uint8).tolist())
    groups = [{k: (b(v) if isinstance(v, torch.Tensor) else v) for k, v in g.items()
               if k != "params"} for g in opt.param_groups]
    state = [{k: b(v) for k, v in opt.state[p].items()} if p in opt.state else None for p in ps]
    return [b(p) for p in ps], groups, state, opt.skipped_steps


FOREIGN = {
    "Adam(amsgrad=True) into adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True), "adam",
        r"option 'amsgrad' = True is not part of design 'adam' \(torch.optim.Adam\(amsgrad=True\) "
        r"is the design 'amsgrad'\)"),
    "AdamW(weight_decay=0.5) into adam": (
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.5), "adam",
        r"option 'decoupled_weight_decay' = True is not part of design 'adam' .*'adamw'"),
    "SGD(momentum) into adam": (
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9), "adam",
        r"option 'momentum' = 0.9 is not part of design 'adam'"),
    "SGD(nesterov) into heavy_ball": (
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True), "heavy_ball",
        r"option 'nesterov' = True is not part of design 'heavy_ball' .*'nesterov'"),
    "RMSprop(centered) into rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, centered=True), "rmsprop",
        r"option 'centered' = True is not part of design 'rmsprop'"),
    "Adam into sgd": (lambda ps: torch.optim.Adam(ps, lr=0.01), "sgd",
                      r"option 'betas' = \(0.9, 0.999\) is not part of design 'sgd'"),
    "Adam into adamw": (lambda ps: torch.optim.Adam(ps, lr=0.01), "adamw",
                        r"option 'decoupled_weight_decay' = False contradicts design 'adamw'"),
    "Adam into amsgrad": (lambda ps: torch.optim.Adam(ps, lr=0.01), "amsgrad",
                          r"option 'amsgrad' = False contradicts design 'amsgrad'"),
    "Adagrad into adam": (lambda ps: torch.optim.Adagrad(ps, lr=0.01), "adam",
                          r"option 'lr_decay' = 0 is not part|option 'initial_accumulator_value'"
                          r"|state 'sum' is not a state of design 'adam'|option 'eps'"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_checkpoint_of_another_algorithm_is_refused(case):
    make_torch, name, message = FOREIGN[case]
    a = make()
    theirs = make_torch(a)
    run(theirs, a, 3)
    b = make(1)
    ours = exported(name)(b, lr=0.02, backend="foreach")
    run(ours, b, 2)
    before = raw(ours, b)
    with pytest.raises(ctopt.export.StateDictError, match=message):
        ours.load_state_dict(theirs.state_dict())
    assert raw(ours, b) == before


def test_the_state_of_another_algorithm_names_its_design():
    a = make()
    sgd = exported("heavy_ball")(a, lr=0.01)
    run(sgd, a, 2)
    sd = sgd.state_dict()
    for g in sd["param_groups"]:
        for key in ("momentum", "dampening"):
            g.pop(key)
        g["betas"], g["eps"] = (0.9, 0.999), 1e-8
    ours = exported("adam")(make(1), lr=0.01)
    with pytest.raises(ctopt.export.StateDictError, match=r"state 'momentum_buffer' is not a "
                                                         r"state of design 'adam'.*'heavy_ball'"):
        ours.load_state_dict(sd)


def test_one_bad_entry_changes_nothing_not_even_the_lr():
    a = make()
    src = exported("adam")(a, lr=0.5)
    run(src, a, 2)
    sd = src.state_dict()
    sd["state"][1]["exp_avg_sq"] = -sd["state"][1]["exp_avg_sq"] - 1.0
    b = make(1)
    ours = exported("adam")(b, lr=0.01)
    run(ours, b, 1)
    before = raw(ours, b)
    with pytest.raises(ctopt.export.StateDictError, match=r"'exp_avg_sq' has a negative entry"):
        ours.load_state_dict(sd)
    assert raw(ours, b) == before and ours.param_groups[0]["lr"] == 0.01


def test_torch_checkpoints_with_neutral_options_load():
    """Options of the same algorithm at the value that changes nothing load as before."""
    for make_torch, name in ((lambda ps: torch.optim.Adam(ps, lr=0.01), "adam"),
                             (lambda ps: torch.optim.AdamW(ps, lr=0.01), "adamw"),
                             (lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True), "amsgrad"),
                             (lambda ps: torch.optim.SGD(ps, lr=0.01), "sgd"),
                             (lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9,
                                                         nesterov=True), "nesterov")):
        a = make()
        theirs = make_torch(a)
        run(theirs, a, 2)
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        ours = exported(name)(b, lr=0.01, backend="foreach",
                              **({"momentum": 0.9} if name == "nesterov" else {}))
        ours.load_state_dict(theirs.state_dict())
        run(theirs, a, 3, start=2)
        run(ours, b, 3, start=2)
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the hostile-checkpoint fuzzer
DESIGNS = ("adam", "adagrad", "heavy_ball", "amsgrad", "rmsprop")
VALUES = [math.nan, math.inf, -1.0, 0.0, 0.5, 1e300, 2.0 ** 30, True, "x", None, (0.9,),
          np.bool_(True), torch.tensor(math.nan), torch.tensor([1.0, 2.0]), torch.tensor(0.3)]


def tensor_variants(t: torch.Tensor) -> list:
    return [torch.zeros(3), t.double(), t.to(torch.int32), t.to(torch.complex64),
            torch.full_like(t, math.nan), -t.abs() - 1, torch.full_like(t, 1e300, dtype=torch.float64),
            t.to_sparse(), t.tolist(), t.unsqueeze(0)]


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["group", "state", "step", "structure", "neutral"]))
    return kind, draw(st.integers(0, 10 ** 6))


def mutate(sd: dict, kind: str, seed: int, implied: dict) -> bool:
    """Mutate ``sd`` in place; returns True when the mutation cannot change the algorithm."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    group = sd["param_groups"][0]
    if kind == "neutral":
        key, value = pick([("amsgrad", False), ("nesterov", False), ("foreach", None),
                           ("capturable", False), ("initial_lr", 0.5), ("centered", False)])
        if key not in group and key not in implied:
            group[key] = value
        return True
    if kind == "group":
        keys = [k for k in group if k != "params"] + ["amsgrad", "momentum", "alpha", "nesterov"]
        group[pick(keys)] = pick(VALUES)
    elif kind == "state":
        entry = sd["state"][pick(sorted(sd["state"]))]
        key = pick(sorted(entry))
        if key == "step" or rng.random() < 0.2:
            entry.pop(key) if rng.random() < 0.5 else entry.update(unknown_key=torch.zeros(1))
        else:
            entry[key] = pick(tensor_variants(entry[key]))
    elif kind == "step":
        entry = sd["state"][pick(sorted(sd["state"]))]
        entry["step"] = pick([-1.0, 1.5, math.nan, 2.0 ** 30, torch.tensor([1.0, 2.0]), "3", True,
                              torch.tensor(4, dtype=torch.int64), 7])
    else:
        pick([lambda: sd["state"].update({99: {}}), lambda: group["params"].append(42),
              lambda: group.update(params=[0, 0]), lambda: sd.update(skipped_steps=-1),
              lambda: sd["param_groups"].append(copy.deepcopy(group)),
              lambda: sd["state"].update({0: 1.0}), lambda: sd.pop("state")])()
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design=st.sampled_from(DESIGNS), mutation=mutations())
def test_hostile_checkpoints_load_equal_or_are_refused_with_nothing_changed(design, mutation):
    kind, seed = mutation
    src_params = make()
    src = exported(design)(src_params, lr=0.01, backend="forloop")
    run(src, src_params, 2)
    good = copy.deepcopy(src.state_dict())
    sd = copy.deepcopy(good)
    neutral = mutate(sd, kind, seed, exported(design).implied_options)
    ps = make(1)
    opt = exported(design)(ps, lr=0.02, backend="foreach")
    run(opt, ps, 1)
    before = raw(opt, ps)
    try:
        opt.load_state_dict(sd)
    except CtoptError:
        assert not neutral, "a neutral change was refused"
        assert raw(opt, ps) == before
        return
    # loaded: a value the step cannot use (e.g. an eps float32 cannot hold) is refused by the
    # step, which then changes nothing; otherwise it steps like a twin loaded from its own round
    # trip, and (neutral) like one loaded from the unmutated checkpoint
    twin_params = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    twin = exported(design)(twin_params, lr=0.02, backend="forloop")
    twin.load_state_dict(good if neutral else copy.deepcopy(opt.state_dict()))
    grads(ps, 5)
    loaded = raw(opt, ps)
    try:
        opt.step()
    except CtoptError:
        assert not neutral and raw(opt, ps) == loaded
        return
    run(opt, ps, 1, start=6)
    run(twin, twin_params, 2, start=5)
    for x, y in zip(ps, twin_params, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("value", [torch.tensor([1.0, 2.0]), torch.tensor(1.0), 1, np.bool_(True),
                                   False], ids=repr)
def test_an_implied_option_must_be_the_very_bool(value):
    """Design 'amsgrad' is torch's Adam(amsgrad=True): a checkpoint's 'amsgrad' must be True
    itself (a tensor of two values once raised RuntimeError from the comparison)."""
    ps = make()
    opt = exported("amsgrad")(ps, lr=0.01, backend="foreach")
    run(opt, ps, 1)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["amsgrad"] = value
    before = raw(opt, ps)
    with pytest.raises(ctopt.export.StateDictError,
                       match=r"option 'amsgrad' = .* contradicts design 'amsgrad'"):
        opt.load_state_dict(sd)
    assert raw(opt, ps) == before
    sd["param_groups"][0]["amsgrad"] = True
    opt.load_state_dict(sd)
