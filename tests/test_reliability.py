"""Errors, never surprises; non-finite gradients (see docs/reliability.md).

Every error an exported optimizer raises is tested by its class and message, and each leaves the
optimizer exactly as it was: parameters, every state tensor, the step counts and the param groups
are bit-identical afterwards, and the next step equals the step of a twin that never saw the error.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import ctopt
from ctopt.design import POSITIVE, DesignBuilder, g, theta
from ctopt.errors import DesignError, HyperparameterError, UnsupportedError
from ctopt.filters import z

export = pytest.importorskip("ctopt.export")
StateDictError = export.StateDictError
NonFiniteGradientError = export.NonFiniteGradientError

BACKENDS = ("forloop", "foreach", "compiled")
EAGER = ("forloop", "foreach")
SHAPES = ((2, 3), (2,), (4,))
#: zoo designs with hyperparameters that switch every branch on (clipping, momentum, decay)
SETTINGS = {
    "sgd": dict(lr=0.05, weight_decay=0.1), "heavy_ball": dict(lr=0.05, dampening=0.1),
    "nesterov": dict(lr=0.05), "adagrad": dict(lr=0.1, lr_decay=0.01),
    "rmsprop": dict(lr=0.01, momentum=0.5), "adam": dict(lr=0.05, weight_decay=0.1),
    "adamw": dict(lr=0.05), "amsgrad": dict(lr=0.05), "adabelief": dict(lr=0.05),
    "adamssm": dict(lr=0.05), "adan": dict(lr=0.05, max_grad_norm=0.5, weight_decay=0.1),
    "signgd": dict(lr=0.05), "dgclip": dict(lr=0.5, gamma=0.5, delta=0.1),
}
COMPILED_DESIGNS = ("adam", "adan", "dgclip")  # compile time: a few seconds per design


def exported(name: str):
    return ctopt.to_torch(ctopt.zoo.get(name))


def make_params(seed: int = 0, dtype=torch.float32, device="cpu") -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype).to(device))
            for s in SHAPES]


def set_grads(params, step: int, *, poison: int | None = None, value=math.nan) -> None:
    gen = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
        p.grad = p.detach() * 0.5 + noise
        if i == poison:
            p.grad.view(-1)[-1] = value


def snapshot(opt, params) -> dict:
    """Everything that defines the optimizer, deep-copied."""
    return {"params": [p.detach().clone() for p in params],
            "state": copy.deepcopy(opt.state_dict()),
            "groups": [{k: copy.deepcopy(v) for k, v in grp.items() if k != "params"}
                       for grp in opt.param_groups],
            "group_params": [[id(p) for p in grp["params"]] for grp in opt.param_groups]}


def assert_identical(a, b, where: str = "") -> None:
    """Bit-identical nested structures (tensors by torch.equal, including dtype and NaNs)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.view(-1).view(torch.uint8) if a.is_floating_point() else a,
                           b.view(-1).view(torch.uint8) if b.is_floating_point() else b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def trained(name: str = "adam", backend: str = "foreach", steps: int = 3, device="cpu",
            **extra):
    """An optimizer that has taken ``steps`` steps, and its twin in the same state."""
    Opt = exported(name)
    pair = []
    for _ in range(2):
        params = make_params(device=device)
        opt = Opt(params, backend=backend, **SETTINGS[name], **extra)
        for s in range(steps):
            set_grads(params, s)
            opt.step()
        pair.append((opt, params))
    return pair


def assert_unchanged_and_still_equal_to_twin(opt, params, twin, twin_params, before) -> None:
    assert_identical(snapshot(opt, params), before, "after the error")
    for s in (10, 11):
        set_grads(params, s)
        set_grads(twin_params, s)
        opt.step()
        twin.step()
    assert_identical([p.detach() for p in params], [p.detach() for p in twin_params], "next")


# =============================================================== 1. errors
CONSTRUCTOR_ERRORS = {
    "negative lr": ("adam", dict(lr=-1.0), HyperparameterError,
                    r"hyperparameter 'lr' = -1.0 is outside its domain \[0, inf\)"),
    "NaN lr": ("adam", dict(lr=math.nan), HyperparameterError, r"'lr' = nan is outside"),
    "boolean lr": ("sgd", dict(lr=True), HyperparameterError, r"'lr' = True is outside"),
    "beta1 = 1": ("adam", dict(betas=(1.0, 0.999)), HyperparameterError,
                  r"'beta1' = 1.0 is outside its domain \[0, 1\) \(first-moment EMA"),
    "beta2 by name": ("adam", dict(beta2=-0.1), HyperparameterError, r"'beta2' = -0.1"),
    "zero eps": ("adam", dict(eps=0.0), HyperparameterError,
                 r"'eps' = 0.0 is outside its domain \(0, inf\)"),
    "dgclip delta > 1": ("dgclip", dict(delta=2.0), HyperparameterError,
                         r"'delta' = 2.0 is outside its domain \[0, 1\]"),
    "betas too short": ("adam", dict(betas=(0.9,)), HyperparameterError,
                        r"must have 2 entries \('beta1', 'beta2'\)"),
    "betas and beta1": ("adam", dict(betas=(0.8, 0.9), beta1=0.7), HyperparameterError,
                        r"give either betas or beta1, not both"),
    "betas without betas": ("sgd", dict(betas=(0.9, 0.9)), HyperparameterError,
                            r"design 'sgd' has no beta hyperparameters"),
    "unknown backend": ("adam", dict(backend="gpu"), UnsupportedError,
                        r"backend 'gpu' is not one of"),
    "unknown nonfinite": ("adam", dict(nonfinite="ignore"), UnsupportedError,
                          r"nonfinite='ignore' is not one of \('propagate', 'skip', 'raise'\)"),
    "unknown keyword": ("adam", dict(momentum=0.9), TypeError, r"momentum"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_ERRORS))
def test_constructor_errors(case):
    name, kwargs, error, message = CONSTRUCTOR_ERRORS[case]
    with pytest.raises(error, match=message):
        exported(name)(make_params(), **kwargs)


def test_duplicate_parameters_are_refused():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(export.ParameterError, match=r"parameter 1 \(shape \(3,\)\) is the same "
                                                     r"tensor as parameter 0"):
        exported("adam")([p, p])


def edit(key, value):
    def apply(opt):
        opt.param_groups[0][key] = value
    return apply


def remove(key):
    def apply(opt):
        del opt.param_groups[0][key]
    return apply


GROUP_EDITS = {
    "lr set negative": (edit("lr", -0.1), r"param group 0: hyperparameter 'lr' = -0.1 is outside"),
    "lr set to a string": (edit("lr", "fast"), r"'lr' = 'fast' is outside"),
    "beta2 set to 1.5": (edit("betas", (0.9, 1.5)), r"'beta2' = 1.5 is outside its domain"),
    "betas of one value": (edit("betas", (0.9,)), r"'betas' = \(0.9,\) must hold 2 values"),
    "eps removed": (remove("eps"), r"hyperparameter 'eps' is missing"),
    "weight decay NaN": (edit("weight_decay", math.nan), r"'weight_decay' = nan is outside"),
}


@pytest.mark.parametrize("backend", EAGER)
@pytest.mark.parametrize("case", list(GROUP_EDITS))
def test_param_group_edits_are_checked_before_anything_changes(case, backend):
    (opt, params), (twin, twin_params) = trained(backend=backend)
    mutate, message = GROUP_EDITS[case]
    group = opt.param_groups[0]
    saved = {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
    mutate(opt)
    before = snapshot(opt, params)
    set_grads(params, 5)
    with pytest.raises(HyperparameterError, match=message):
        opt.step()
    assert_identical(snapshot(opt, params), before)
    for key in [key for key in group if key != "params"]:
        del group[key]
    group.update(saved)  # repaired, it continues exactly as its twin
    assert_unchanged_and_still_equal_to_twin(opt, params, twin, twin_params,
                                             snapshot(opt, params))


_TWICE = torch.nn.Parameter(torch.zeros(2))
ADD_GROUP_ERRORS = {
    "negative lr": ({"lr": -1.0}, HyperparameterError, r"param group 1: hyperparameter 'lr'"),
    "beta1 = 2": ({"betas": (2.0, 0.9)}, HyperparameterError, r"'beta1' = 2.0"),
    "a parameter twice": ({"params": [_TWICE, _TWICE]}, export.ParameterError,
                          r"param group 1: parameter 1 \(shape \(2,\)\) is the same tensor"),
}


@pytest.mark.parametrize("case", list(ADD_GROUP_ERRORS))
def test_add_param_group_errors_add_nothing(case):
    (opt, params), (twin, twin_params) = trained()
    extra, error, message = ADD_GROUP_ERRORS[case]
    before = snapshot(opt, params)
    group = {"params": [torch.nn.Parameter(torch.ones(3))], **extra}
    with pytest.raises(error, match=message):
        opt.add_param_group(group)
    assert len(opt.param_groups) == 1
    assert_unchanged_and_still_equal_to_twin(opt, params, twin, twin_params, before)


def unstable_filter_design() -> ctopt.Design:
    b = DesignBuilder("unstable", doc="a moment filter with a pole outside the unit circle")
    lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
    b.filter("m", z / (z - 2), input=g)
    b.update(theta - lr * sp_symbol("m"))
    return b.build()


def test_invalid_designs_are_refused():
    with pytest.raises(DesignError, match=r"to_torch needs a ctopt Design, got str"):
        ctopt.to_torch("adam")
    with pytest.raises(DesignError, match=r"design 'unstable' fails the filter checks"):
        ctopt.to_torch(unstable_filter_design())
    b = DesignBuilder("broken")
    b.state("m")
    b.update(theta - g)
    with pytest.raises(DesignError, match=r"state\(s\) \['m'\] are never updated"):
        b.build()
    b = DesignBuilder("broken")
    b.update(theta - sp_symbol("alpha") * g)
    with pytest.raises(DesignError, match=r"uses \['alpha'\]: neither a hyperparameter"):
        b.build()


def sp_symbol(name):
    import sympy as sp

    return sp.Symbol(name, real=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_gradient_is_refused_and_nothing_changes(backend):
    (opt, params), (twin, twin_params) = trained(backend=backend)
    before = snapshot(opt, params)
    set_grads(params, 4)
    params[1].grad = params[1].grad.to_sparse()
    with pytest.raises(UnsupportedError, match=r"parameter 1 of param group 0 \(shape \(2,\)\) "
                                               r"has a sparse gradient; design 'adam' needs dense"):
        opt.step()
    assert_unchanged_and_still_equal_to_twin(opt, params, twin, twin_params, before)


def state_dict_of(opt) -> dict:
    return copy.deepcopy(opt.state_dict())


def first_state(sd: dict) -> dict:
    return sd["state"][0]


STATE_DICT_ERRORS = {
    "two groups": (lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0])),
                   StateDictError, r"the state dict has 2 param groups, the optimizer 1"),
    "no groups": (lambda sd: sd.pop("param_groups"), StateDictError,
                  r"needs 'state' \(dict\) and 'param_groups' \(list\)"),
    "one parameter fewer": (lambda sd: sd["param_groups"][0]["params"].pop(), StateDictError,
                            r"param group 0 has 3 parameters, the state dict 2"),
    "missing exp_avg_sq": (lambda sd: first_state(sd).pop("exp_avg_sq"), StateDictError,
                           r"state of parameter 0: state 'exp_avg_sq' is missing and, with "
                           r"these hyperparameters, it affects the update"),
    "mis-shaped exp_avg": (lambda sd: first_state(sd).update(exp_avg=torch.zeros(3)),
                           StateDictError, r"'exp_avg' has shape \(3,\), the parameter \(2, 3\)"),
    "state not a tensor": (lambda sd: first_state(sd).update(exp_avg=[0.0] * 6), StateDictError,
                           r"'exp_avg' is a list, not a tensor"),
    "negative step": (lambda sd: first_state(sd).update(step=torch.tensor(-1.0)), StateDictError,
                      r"'step' = -1.0 is not a step count"),
    "fractional step": (lambda sd: first_state(sd).update(step=torch.tensor(2.5)),
                        StateDictError, r"'step' = 2.5 is not a step count"),
    "state not a dict": (lambda sd: sd["state"].update({0: 1.0}), StateDictError,
                         r"state of parameter 0 is not a dict"),
    "unknown parameter id": (lambda sd: sd["state"].update({99: {}}), StateDictError,
                             r"state for unknown parameter id 99"),
    "saved lr invalid": (lambda sd: sd["param_groups"][0].update(lr=-3.0), HyperparameterError,
                         r"state dict param group 0: hyperparameter 'lr' = -3.0"),
    "saved betas invalid": (lambda sd: sd["param_groups"][0].update(betas=(0.9, 7.0)),
                            HyperparameterError, r"'beta2' = 7.0 is outside"),
}


# the compiled path shares load_state_dict with the eager ones: two cases suffice there
STATE_DICT_CASES = [(b, c) for b in EAGER for c in STATE_DICT_ERRORS] + [
    ("compiled", "mis-shaped exp_avg"), ("compiled", "missing exp_avg_sq")]


@pytest.mark.parametrize(("backend", "case"), STATE_DICT_CASES)
def test_load_state_dict_errors_change_nothing(case, backend):
    mutate, error, message = STATE_DICT_ERRORS[case]
    (source, source_params), _ = trained(backend=backend)
    for s in range(3, 6):  # the bad checkpoint comes from a different point in training
        set_grads(source_params, s)
        source.step()
    bad = state_dict_of(source)
    mutate(bad)
    (opt, params), (twin, twin_params) = trained(backend=backend)
    before = snapshot(opt, params)
    with pytest.raises(error, match=message):
        opt.load_state_dict(bad)
    assert_unchanged_and_still_equal_to_twin(opt, params, twin, twin_params, before)


def test_missing_state_that_cannot_matter_is_recreated():
    """torch's RMSprop omits momentum_buffer when momentum = 0: the checkpoint still loads."""
    params = make_params()
    reference = torch.optim.RMSprop(params, lr=0.01)
    for s in range(3):
        set_grads(params, s)
        reference.step()
    assert "momentum_buffer" not in reference.state_dict()["state"][0]
    mine = exported("rmsprop")(make_params(), lr=0.01)
    mine.load_state_dict(reference.state_dict())
    assert torch.equal(mine.state_dict()["state"][0]["momentum_buffer"], torch.zeros(2, 3))


# =============================================================== 2. non-finite gradients
def designs_for(backend: str):
    return COMPILED_DESIGNS if backend == "compiled" else tuple(SETTINGS)


NONFINITE_CASES = [(backend, name) for backend in BACKENDS for name in designs_for(backend)]


@pytest.mark.parametrize(("backend", "name"), NONFINITE_CASES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_skip_leaves_everything_bit_identical(backend, name, value):
    (opt, params), (twin, twin_params) = trained(name, backend, nonfinite="skip")
    before = snapshot(opt, params)
    set_grads(params, 3, poison=2, value=value)
    opt.step()
    after = snapshot(opt, params)
    assert after["state"].pop("skipped_steps") == 1
    assert before["state"].pop("skipped_steps") == 0
    assert_identical(after, before, "after a skipped step")
    for s in range(3, 6):  # the skipped step changed nothing: the run continues as the twin's
        set_grads(params, s)
        set_grads(twin_params, s)
        opt.step()
        twin.step()
    assert_identical([p.detach() for p in params], [p.detach() for p in twin_params])
    assert opt.state_dict()["skipped_steps"] == 1 and twin.state_dict()["skipped_steps"] == 0


def test_skip_skips_the_whole_step_across_groups():
    Opt = exported("adam")
    params = make_params()
    opt = Opt([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}], nonfinite="skip")
    set_grads(params, 0)
    opt.step()
    before = snapshot(opt, params)
    set_grads(params, 1, poison=2)  # only the second group's gradient is bad
    opt.step()
    after = snapshot(opt, params)
    assert after["state"].pop("skipped_steps") - before["state"].pop("skipped_steps") == 1
    assert_identical(after, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_raise_names_the_parameter_and_changes_nothing(backend):
    Opt = exported("adam")
    model = torch.nn.Linear(3, 2)
    opt = Opt(model.named_parameters(), lr=0.1, nonfinite="raise", backend=backend)
    params = list(model.parameters())
    set_grads(params, 0)
    opt.step()
    before = snapshot(opt, params)
    set_grads(params, 1, poison=1, value=math.inf)
    with pytest.raises(NonFiniteGradientError, match=r"parameter 'bias' has a non-finite "
                                                     r"gradient \(NaN or Inf\); nothing was"):
        opt.step()
    assert_identical(snapshot(opt, params), before)
    unnamed = Opt(make_params(), nonfinite="raise", backend=backend)
    set_grads(unnamed.param_groups[0]["params"], 0, poison=2)
    with pytest.raises(NonFiniteGradientError, match=r"parameter 2 of param group 0 \(shape "):
        unnamed.step()
    assert isinstance(NonFiniteGradientError("x"), FloatingPointError)


@pytest.mark.parametrize("backend", EAGER)
def test_propagate_is_the_default_and_behaves_like_torch(backend):
    opt = exported("adam")(make_params(), lr=0.1, backend=backend)
    assert opt.nonfinite == "propagate"
    params = opt.param_groups[0]["params"]
    reference_params = make_params()
    reference = torch.optim.Adam(reference_params, lr=0.1)
    for s, poison in enumerate([None, 1, None]):
        set_grads(params, s, poison=poison)
        set_grads(reference_params, s, poison=poison)
        opt.step()
        reference.step()
    for mine, theirs in zip(params, reference_params, strict=True):
        assert torch.equal(mine.isnan(), theirs.isnan())
    assert params[1].isnan().any() and not params[0].isnan().any()
    assert opt.state_dict()["skipped_steps"] == 0


def scaler_data(steps: int = 8, poisoned=(2, 5)):
    gen = torch.Generator().manual_seed(1)
    data = []
    for i in range(steps):
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
        data.append((x, y * 1e36 if i in poisoned else y))  # scaled, these overflow float32
    return data


def small_model(device="cpu"):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).to(device)


def scaler_run(Opt, backend: str, data, device="cpu"):
    """Train through a GradScaler; it skips the steps whose scaled gradients overflow."""
    model = small_model(device)
    opt = Opt(model.parameters(), lr=0.01, backend=backend, nonfinite="raise")
    scaler = torch.amp.GradScaler(device, init_scale=2.0**16, growth_interval=1000)
    accepted = []
    for x, y in data:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        before = scaler.get_scale()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        accepted.append(scaler.get_scale() >= before)
    return model, opt, accepted


def check_grad_scaler(backend: str, device: str = "cpu") -> None:
    Opt = exported("adam")
    data = scaler_data()
    model, opt, accepted = scaler_run(Opt, backend, data, device)
    assert accepted == [i not in (2, 5) for i in range(len(data))]
    ref = small_model(device)
    ref_opt = Opt(ref.parameters(), lr=0.01, backend=backend)
    for (x, y), ok in zip(data, accepted, strict=True):
        if ok:  # the reference takes exactly the steps the scaler let through
            ref_opt.zero_grad()
            torch.nn.functional.mse_loss(ref(x.to(device)), y.to(device)).backward()
            ref_opt.step()
    # power-of-two scales unscale exactly: the runs are bit-identical
    for mine, theirs in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    steps = {float(s["step"]) for s in opt.state_dict()["state"].values()}
    assert steps == {float(sum(accepted))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_skips_overflowing_steps_and_equals_the_unscaled_run(backend):
    check_grad_scaler(backend)


# =============================================================== the same on a GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", COMPILED_DESIGNS)
def test_skip_on_cuda_leaves_everything_bit_identical(name, backend):
    (opt, params), (twin, twin_params) = trained(name, backend, device="cuda", nonfinite="skip")
    before = snapshot(opt, params)
    set_grads(params, 3, poison=1, value=math.inf)
    opt.step()
    after = snapshot(opt, params)
    assert after["state"].pop("skipped_steps") == 1 + before["state"].pop("skipped_steps")
    assert_identical(after, before, "after a skipped step on CUDA")
    for s in range(3, 6):
        set_grads(params, s)
        set_grads(twin_params, s)
        opt.step()
        twin.step()
    assert_identical([p.detach() for p in params], [p.detach() for p in twin_params])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_on_cuda(backend):
    check_grad_scaler(backend, "cuda")
