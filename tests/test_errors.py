"""The error taxonomy: no bare ``CtoptError`` is raised anywhere in the package, and each
specific class is raised where the docs promise it, carrying what it names."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import sympy as sp

import ctopt
from ctopt import errors
from ctopt.analysis.certificates import lyapunov
from ctopt.analysis.convergence import tune, worst_case_rate
from ctopt.analysis.iqc import lurie_system
from ctopt.analysis.lyapunov_check import check_lyapunov
from ctopt.analysis.recheck import exact_definite, to_fraction
from ctopt.analysis.stability import characteristic_polynomial, stability_conditions
from ctopt.analysis.validity import filter_validity
from ctopt.errors import (
    CtoptError,
    ExpressionError,
    HyperparameterError,
    InternalError,
    MissingValuesError,
    OptionError,
)
from ctopt.filters import z

PACKAGE = Path(ctopt.__file__).parent
alpha, h, beta = sp.symbols("alpha h beta", real=True)


def _bare_raises(tree: ast.AST) -> list[int]:
    """Lines of ``raise CtoptError(...)`` / ``raise CtoptError`` / ``raise errors.CtoptError(...)``."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = exc.id if isinstance(exc, ast.Name) else getattr(exc, "attr", None)
        if name == "CtoptError":
            out.append(node.lineno)
    return out


def test_the_bare_raise_detector_finds_one():
    tree = ast.parse("def f():\n    raise CtoptError('x')\n\ndef g():\n    raise errors.CtoptError\n")
    assert _bare_raises(tree) == [2, 5]
    assert _bare_raises(ast.parse("raise OptionError('x')\n")) == []


def test_no_bare_ctopt_error_is_raised_in_the_package():
    found = {str(path.relative_to(PACKAGE)): lines for path in sorted(PACKAGE.rglob("*.py"))
             if (lines := _bare_raises(ast.parse(path.read_text(), filename=str(path))))}
    assert found == {}


def test_every_class_is_a_ctopt_error_of_the_right_builtin_kind():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), CtoptError)
    assert issubclass(MissingValuesError, HyperparameterError)
    assert issubclass(OptionError, ValueError) and issubclass(ExpressionError, ValueError)
    assert issubclass(InternalError, RuntimeError)


# ----------------------------------------------------------------------- missing values
def test_missing_values_carries_the_names_in_one_wording():
    err = MissingValuesError(["lr", "h", "lr"], "to compute a rate")
    assert err.names == ("lr", "h")
    assert str(err) == "values needed for ['lr', 'h'] to compute a rate"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MissingValuesError and back.names == err.names and str(back) == str(err)


@pytest.mark.parametrize("case", ["stability", "rate", "tune", "certificate", "lurie"])
def test_missing_values_is_raised_by_every_analysis_that_needs_numbers(case):
    hb = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    gd = sp.Matrix([[1 - alpha * h]])
    calls = {
        "stability": (lambda: stability_conditions(gd).holds(alpha=1.0), ["h"]),
        "rate": (lambda: worst_case_rate(hb, 1, 10, lr=0.1), ["momentum"]),
        "tune": (lambda: tune(hb, 1, 10, params=["lr"]), ["momentum"]),
        "certificate": (lambda: lyapunov(gd).P_at(alpha=0.5), ["h"]),
        "lurie": (lambda: lurie_system(hb, lr=0.1), ["momentum"]),
    }
    call, names = calls[case]
    with pytest.raises(MissingValuesError, match=r"^values needed for \[") as info:
        call()
    assert list(info.value.names) == names


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("case", ["plot kind", "image format", "analysis", "problem", "filter",
                                  "tune names"])
def test_unknown_options_are_an_option_error_naming_what_is_allowed(case, tmp_path):
    from ctopt.report import analyze, save_plot

    sgd = ctopt.zoo.get("sgd")
    calls = {
        "plot kind": (lambda: save_plot(sgd, "nyquist", tmp_path / "a.png"), "allowed: bode"),
        "image format": (lambda: save_plot(sgd, "bode", tmp_path / "a.txt"), r"\.png"),
        "analysis": (lambda: analyze(sgd, include=["jury"]), "known: "),
        "problem": (lambda: check_lyapunov(sgd, sp.Symbol("theta") ** 2, "convex"),
                    "available: 'quadratic'"),
        "filter": (lambda: filter_validity(42), "Design or a Filter"),
        "tune names": (lambda: tune(ctopt.zoo.get("heavy_ball"), 1, 10,
                                    params=["lr", "momentum", "dampening"]), "one or two"),
    }
    call, match = calls[case]
    with pytest.raises(OptionError, match=match):
        call()
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- expressions
@pytest.mark.parametrize("case", ["not square", "not polynomial", "no z", "not inequality",
                                  "lyapunov not square", "unknown V symbol", "not symmetric",
                                  "not finite"])
def test_analysis_inputs_of_the_wrong_form_are_an_expression_error(case):
    calls = {
        "not square": (lambda: characteristic_polynomial(sp.Matrix([[1, 2]])), "square"),
        "not polynomial": (lambda: characteristic_polynomial(sp.sin(z)), "not a polynomial"),
        "no z": (lambda: characteristic_polynomial(alpha + 1), "no variable z"),
        "not inequality": (lambda: stability_conditions(z - alpha, assumptions={"a": 1}),
                           "sympy relations"),
        "lyapunov not square": (lambda: lyapunov(sp.Matrix([[1, 2]])), "square"),
        "unknown V symbol": (lambda: check_lyapunov(ctopt.zoo.get("sgd"), sp.Symbol("q") ** 2),
                             r"\['q'\]"),
        "not symmetric": (lambda: exact_definite([[1, 2], [0, 1]]), "square symmetric"),
        "not finite": (lambda: to_fraction(float("inf")), "not finite"),
    }
    call, match = calls[case]
    with pytest.raises(ExpressionError, match=match):
        call()


def test_a_failed_self_check_is_an_internal_error(monkeypatch):
    import ctopt.analysis.certificates as certificates

    monkeypatch.setattr(certificates, "_solves", lambda A, P, Q: False)
    with pytest.raises(InternalError, match="Stein equation"):
        lyapunov(sp.Matrix([[sp.Rational(1, 3) - alpha / 7]]))


def test_the_command_line_reports_an_internal_error_as_a_bug(monkeypatch, capsys):
    from ctopt import cli

    def broken(args, design, values):
        raise InternalError("the symbolic P does not satisfy the Stein equation (a bug in ctopt)")

    monkeypatch.setitem(cli._COMMANDS, "show", broken)
    assert cli.main(["show", "sgd"]) == cli.EXIT_INTERNAL
    assert "internal error in 'show'" in capsys.readouterr().err
