"""Generated code is collision-free by construction; what the exporter cannot express is refused
at build and at load, by name; ``ctopt export`` checks the module it wrote.

Each test compares against the float64 oracle (``ctopt.export.verify``) on the for-loop and
foreach paths and in the standalone module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.cli import EXIT_FAILED, EXIT_OK, main
from ctopt.design import OPEN_UNIT, POSITIVE, UNIT, DesignBuilder, g, k, theta
from ctopt.errors import DesignError, DesignFileError
from ctopt.export.source import class_name
from ctopt.export.verify import (
    ExportCheckError,
    check_module,
    load_module,
    run_exported,
    run_oracle,
    trajectory_error,
)
from ctopt.filters import z
from ctopt.serialize import design_from_dict, design_to_dict

STEPS = 20


def momentum_with(hyper_name: str, state_name: str = "m", doc: str = "", name: str = "t"):
    """Heavy ball with an extra hyperparameter ``hyper_name`` that scales the gradient."""
    b = DesignBuilder(name, doc=doc)
    lr = b.hyper("lr", 0.05, POSITIVE)
    c = b.hyper(hyper_name, 0.5, UNIT)
    m = b.state(state_name)
    b.assign(m, 0.9 * m + c * g)
    b.update(theta - lr * m)
    return b.build()


def assert_equals_oracle(design, tmp_path, steps: int = STEPS) -> None:
    reference = run_oracle(design, steps)
    assert trajectory_error(reference[-1:], reference[:1]) > 1e-3  # it moves
    cls = ctopt.to_torch(design, check=False)
    for backend in ("forloop", "foreach"):
        assert trajectory_error(run_exported(cls, steps, backend=backend), reference) <= 1e-12
    path = tmp_path / "exported.py"
    ctopt.export_source(design, path, check=False)
    assert check_module(path, design, class_name(design), steps) <= 1e-12


# --------------------------------------------------------------------- names that used to collide
@pytest.mark.parametrize("name", ["s_m", "super", "abs"])
def test_hyperparameter_names_never_collide(name, tmp_path):
    """``s_m`` beside a state ``m`` silently changed the algorithm; ``super`` and ``abs`` broke
    the generated code."""
    assert_equals_oracle(momentum_with(name), tmp_path)


COLLIDING = ("float", "self", "torch", "math", "gsign", "coef", "h", "red", "c0", "c1",
             "theta_new", "m_new", "n_m", "t_m", "h_lr", "r_m", "GeneratedOptimizer", "Hyper",
             "print", "len", "match", "type", "s_m", "super", "abs")


def test_many_colliding_names_at_once(tmp_path):
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    scales = [b.hyper(name, 0.1 + 0.01 * i, UNIT) for i, name in enumerate(COLLIDING)]
    m = b.state("m")
    b.assign(m, 0.9 * m + sp.Add(*[c * g**(1 + i % 2) for i, c in enumerate(scales)]) / 10)
    b.update(theta - lr * m)
    assert_equals_oracle(b.build(), tmp_path)


@pytest.mark.parametrize("state", ["for", "None", "lr_1", "c0", "self", "beta", "h_beta"])
def test_state_names_never_collide(state, tmp_path):
    if state == "beta":
        with pytest.raises(DesignError, match="declared twice, as a hyperparameter and as a state"):
            momentum_with("beta", state_name=state)
        return
    assert_equals_oracle(momentum_with("beta", state_name=state), tmp_path)


def test_temporaries_and_reductions_named_like_generated_names(tmp_path):
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    eps = b.hyper("eps", 1e-3, POSITIVE)
    norm = b.reduction("c1", "l2_norm", g)  # like a coefficient
    m = b.state("theta_new")
    t = b.let("n_theta_new", g / (norm + eps))  # like the new value of state theta_new
    u = b.let("s_theta_new", t * t + 1)  # like the old one
    b.assign(m, 0.9 * m + 0.1 * t * u)
    b.update(theta - lr * (m + t / u))
    assert_equals_oracle(b.build(), tmp_path)


@pytest.mark.parametrize("design_name", ["hyper", "exception", "generated_optimizer", "none",
                                         "compiled_runner"])
def test_class_names_never_shadow_the_runtime(design_name, tmp_path):
    design = momentum_with("beta", name=design_name)
    assert class_name(design) not in ctopt.export.source.module_names()
    assert_equals_oracle(design, tmp_path)


@pytest.mark.parametrize("name", ["params", "betas", "maximize", "backend", "nonfinite",
                                  "reduction_group", "foreach", "fused", "capturable",
                                  "differentiable", "param_names"])
def test_hyperparameters_named_like_the_optimizers_options_are_refused(name):
    with pytest.raises(DesignError, match=f"hyperparameter name '{name}' is reserved"):
        momentum_with(name)


@pytest.mark.parametrize("name", ["for", "class", "None", "True", "import"])
def test_keyword_hyperparameters_are_refused(name):
    with pytest.raises(DesignError, match=f"'{name}' is a Python keyword"):
        momentum_with(name)


# ------------------------------------------------------------------------ names: full match
@pytest.mark.parametrize("bad", ["lr\n", "lr ", "1lr", "_lr", "l-r", "a" * 65, ""])
def test_names_are_checked_by_full_match(bad):
    with pytest.raises(DesignError, match="not a valid identifier"):
        momentum_with(bad)
    data = design_to_dict(momentum_with("beta"))
    data["design"]["hyperparameters"][1]["name"] = bad
    with pytest.raises(DesignFileError, match="not a valid name"):
        design_from_dict(data)


# ---------------------------------------------------------------------- state-dict names
def two_states(first: tuple[str, str | None], second: tuple[str, str | None]):
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    m = b.state(first[0], torch_name=first[1])
    v = b.state(second[0], torch_name=second[1])
    b.assign(m, 0.9 * m + g)
    b.assign(v, 0.9 * v + g**2)
    b.update(theta - lr * m / (sp.sqrt(v) + 1))
    return b.build()


@pytest.mark.parametrize("first, second", [
    (("m", "exp_avg"), ("v", "exp_avg")),  # one torch name twice
    (("m", "v"), ("v", None)),  # a torch name that is another state's name
])
def test_states_sharing_a_state_dict_name_are_refused_naming_both(first, second):
    with pytest.raises(DesignError, match="states 'm' and 'v' share the state-dict name"):
        two_states(first, second)


def test_a_state_stored_as_step_is_refused_at_build_and_at_load():
    with pytest.raises(DesignError, match="state-dict name 'step'"):
        two_states(("step", None), ("v", None))
    with pytest.raises(DesignError, match="state-dict name 'step'"):
        two_states(("m", "step"), ("v", None))
    data = design_to_dict(two_states(("m", None), ("v", "second")))
    data["design"]["states"][1]["torch_name"] = "step"
    with pytest.raises(DesignFileError, match="state-dict name 'step'"):
        design_from_dict(data)
    data["design"]["states"][1]["torch_name"] = "m"
    with pytest.raises(DesignFileError, match="states 'm' and 'v' share"):
        design_from_dict(data)


def test_a_state_named_step_is_fine_under_another_torch_name(tmp_path):
    design = two_states(("step", "counter"), ("v", None))
    assert_equals_oracle(design, tmp_path)
    assert ctopt.to_torch(design).state_keys == ("counter", "v")


# ------------------------------------------------------------------------ constants, docs
@pytest.mark.parametrize("constant", [sp.oo, -sp.oo, sp.nan, sp.zoo, sp.Float("inf"),
                                      sp.Integer(10) ** 400, sp.pi, sp.E, sp.I])
def test_non_finite_or_symbolic_constants_are_refused_by_name(constant):
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    b.update(theta - lr * (g + sp.Mul(constant, theta, evaluate=False)))
    with pytest.raises(DesignError, match="the assignment to 'theta' uses the"):
        b.build()


def test_constants_in_initial_values_and_reductions_are_checked():
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    m = b.state("m", init=sp.oo)
    b.assign(m, m + g)
    b.update(theta - lr * m)
    with pytest.raises(DesignError, match="initial value of state 'm'"):
        b.build()


@pytest.mark.parametrize("doc", ["uses \\N and \\x and \\u and \\", "a '''quoted''' \"\"\"doc\"\"\"",
                                 "tab\there", "ends with a quote\"", "back\\slash\\"])
def test_docs_are_escaped(doc, tmp_path):
    design = momentum_with("beta", doc=doc)
    path = tmp_path / "exported.py"
    ctopt.export_source(design, path)
    cls = getattr(load_module(path), class_name(design))
    assert cls.__doc__.splitlines()[0] == doc.strip().splitlines()[0]
    assert ctopt.to_torch(design).__doc__ == cls.__doc__
    assert_equals_oracle(design, tmp_path)


# ------------------------------------------------------------------------ lines after the update
def test_a_line_after_the_update_may_not_read_theta(tmp_path):
    """The oracle read the new theta there, the generated code the old one: now refused."""
    def build(late: bool):
        b = DesignBuilder("t")
        lr = b.hyper("lr", 0.05, POSITIVE)
        m = b.state("m")
        old = b.let("old", theta)
        b.update(theta - lr * (g + m))
        b.assign(m, 0.5 * m + 0.1 * (theta if late else old))
        return b.build()

    with pytest.raises(DesignError, match="after the parameter update and reads theta"):
        build(True)
    assert_equals_oracle(build(False), tmp_path)  # the old value, kept above the update


# ------------------------------------------------------------------------ filter handles
def test_a_filter_handle_is_an_expression(tmp_path):
    def build(handle_in_expressions: bool):
        b = DesignBuilder("ema_sgd")
        lr = b.hyper("lr", 0.05, POSITIVE)
        beta = b.hyper("beta", 0.9, OPEN_UNIT)
        v = b.filter("v", (1 - beta) * z / (z - beta), input=g)
        out = v if handle_in_expressions else sp.Symbol("v", real=True)
        corrected = b.let("v_hat", out / v.step_response(k))
        b.update(theta - lr * corrected)
        return b.build()

    design = build(True)
    assert design.equations() == build(False).equations()
    assert all(type(s) is sp.Symbol for a in design.assignments for s in a.expr.free_symbols)
    assert_equals_oracle(design, tmp_path)


def test_adamssm_lists_its_bias_correction():
    """The record is 1/s[k], s the second-moment filter's step response (checked against
    scipy's lfilter on a unit step at the defaults)."""
    from scipy.signal import lfilter

    design = ctopt.zoo.get("adamssm")
    (record,) = ctopt.transfer_function(design, output="v").time_varying
    assert record.where == "v_hat" and record.limit == 1
    subs = {sp.Symbol(n, real=True): v for n, v in design.defaults.items()}
    num, den = sp.fraction(sp.cancel(design.filters[0].transfer.xreplace(subs)))
    a = [float(c) for c in sp.Poly(den, z).all_coeffs()]
    b = [float(c) for c in sp.Poly(num, z).all_coeffs()]
    b = [0.0] * (len(a) - len(b)) + b
    response = lfilter(b, a, np.ones(6))
    for step, s_k in enumerate(response, start=1):
        assert float(record.expr.xreplace({**subs, k: step})) == pytest.approx(1 / s_k, rel=1e-9)


# ------------------------------------------------------------------------ ctopt export checks
def test_export_command_checks_the_module_it_wrote(tmp_path, capsys):
    out = tmp_path / "adam_opt.py"
    assert main(["export", "adam", "-o", str(out)]) == EXIT_OK
    assert "equals the float64 oracle" in capsys.readouterr().out
    assert out.exists() and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("breakage", ["syntax", "numbers"])
def test_export_command_fails_when_the_module_is_wrong(breakage, tmp_path, capsys, monkeypatch):
    import ctopt.export as export

    original = export.module_source

    def broken(design, name=None):
        text = original(design, name)
        if breakage == "syntax":
            return text.replace('"""', '"""\\N', 1)  # what an unescaped doc used to write
        return text.replace("c0 = gsign", "c0 = 1.5 * gsign")

    monkeypatch.setattr(export, "module_source", broken)
    out = tmp_path / "sgd_opt.py"
    assert main(["export", "sgd", "-o", str(out)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert ("does not import" if breakage == "syntax" else "differs from the oracle") in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_check_module_names_what_failed(tmp_path):
    design = ctopt.zoo.get("sgd")
    path = tmp_path / "m.py"
    path.write_text("raise ImportError('no')\n")
    with pytest.raises(ExportCheckError, match="does not import"):
        check_module(path, design, "Sgd")
    ctopt.export_source(design, path)
    with pytest.raises(ExportCheckError, match="does not import"):
        check_module(path, design, "NotThere")
    assert check_module(path, design, "Sgd") <= 1e-12


def test_design_files_with_colliding_names_round_trip(tmp_path):
    design = momentum_with("s_m")
    text = ctopt.serialize.design_to_json(design)
    loaded = ctopt.serialize.design_from_json(text)
    assert json.loads(text)["design"]["hyperparameters"][1]["name"] == "s_m"
    assert_equals_oracle(loaded, tmp_path)


def test_a_comparison_of_a_piecewise_is_written_with_and_or(tmp_path):
    """sympy turns ``Piecewise(...) > c`` into ``ITE``, which no printer knew; the builder
    writes it with And/Or/Not, and a design holding ITE is refused by name."""
    b = DesignBuilder("t")
    lr = b.hyper("lr", 0.05, POSITIVE)
    clipped = sp.Piecewise((g, g > 1), (theta, True))
    b.update(theta - lr * sp.Piecewise((g, sp.Gt(clipped, 0.5)), (2 * g, True)))
    design = b.build()
    assert not any(a.expr.atoms(sp.ITE) for a in design.assignments)
    assert_equals_oracle(design, tmp_path)
    raw = ctopt.design.Assignment(theta, theta - sp.Piecewise(
        (g, sp.ITE(g > 1, g > 2, theta > 0)), (0, True)), "update")
    with pytest.raises(DesignError, match="uses the condition ITE"):
        ctopt.design.Design("t", design.hyper, (), (raw,))


def test_a_filter_handle_names_a_failed_numeric_root_finder():
    """A double pole given by float coefficients (as scipy.signal writes it) made sympy's
    ``nroots`` raise mpmath's NoConvergence from ``step_response``."""
    b = DesignBuilder("t")
    transfer = sp.Float(4.0) * z**2 / (sp.Float(25.0) * z**2 - sp.Float(30.0) * z + sp.Float(9.0))
    v = b.filter("v", transfer, input=g**2)
    with pytest.raises(DesignError, match="filter 'v': the roots of .* could not be found"):
        v.step_response(k)
