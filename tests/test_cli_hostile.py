"""Hostile command-line arguments: every command refuses them with exit code 2 and one line
naming the argument and its allowed range, never a traceback.

Most cases run in-process (``ctopt.cli.main``), with the command bodies that would do long work
(bench, report, plot, export) replaced by a stub: what is tested is the argument checking that
happens before any work. A few run in a subprocess, exactly as a user types them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctopt
from ctopt import cli
from ctopt.cli import EXIT_USAGE, main

HOSTILE_NUMBERS = ("inf", "-inf", "nan", "1e400", "-1e400", "", " ", "1e", "0x10", "one",
                   "9" * 400, "1_0_", "--")


@pytest.fixture
def stubbed(monkeypatch):
    """The long-running command bodies replaced by one that records that it ran."""
    ran = []
    for name in ("bench", "report", "plot", "export"):
        monkeypatch.setitem(cli._COMMANDS, name, lambda args, design, values: ran.append(1) or 0)
    return ran


def refused(argv: list[str], capsys, names: str) -> str:
    code = main(argv)
    out = capsys.readouterr()
    assert code == EXIT_USAGE, (argv, code, out.err[-400:])
    assert "Traceback" not in out.err + out.out
    err = " ".join(out.err.split())
    assert names in err, (argv, err)
    return err


# (argv, what the message must name)
CASES = [
    (["list", "--lr", "1"], "unrecognized"),
    (["show", "adam", "--lr", "inf"], "--lr"),
    (["show", "adam", "--beta1", "nan"], "--beta1"),
    (["show", "adam", "--beta2", "1e400"], "overflows"),
    (["show", "adam", "--eps", "0"], "'eps' = 0.0 is outside its domain"),
    (["show", "nosuchdesign"], "unknown design"),
    (["show", "missing-file.json"], "missing-file.json"),
    (["check", "adam", "--curvature", "0"], "--curvature"),
    (["check", "adam", "--curvature", "inf"], "--curvature"),
    (["check", "adam", "--curvature", "1e400"], "overflows"),
    (["check", "adam", "--lr", "-1"], "'lr' = -1.0 is outside its domain"),
    (["check", "adam", "--lr", "1e400"], "--lr: '1e400' overflows float64"),
    (["plot", "adam", "--kind", "nope"], "--kind"),
    (["plot", "adam", "--lr", "nan"], "--lr"),
    (["plot", "adam", "-o", "figure.txt"], "--output: 'figure.txt' must end in .png"),
    (["plot", "adam", "-o", ""], "--output"),
    (["export", "adam", "-o", "optimizer.txt"], "--output: 'optimizer.txt' must end in .py"),
    (["report", "-o", __file__], "exists and is not a folder"),
    (["export", "adam", "--lr", "inf"], "--lr"),
    (["export", "adam", "--beta1", "1"], "'beta1' = 1.0 is outside its domain"),
    (["bench", "--numel", "inf"], "--numel: 'inf' is not a whole number"),
    (["bench", "--numel", "nan"], "--numel"),
    (["bench", "--numel", "1e400"], "--numel: '1e400' overflows"),
    (["bench", "--numel", "0"], "--numel: '0' is outside the allowed range"),
    (["bench", "--numel", "1.5"], "--numel"),
    (["bench", "--numel", "99999999999999999999999"], "--numel"),
    (["bench", "--numel", "1e30"], "--numel"),
    (["bench", "--steps", "inf"], "--steps"),
    (["bench", "--steps", "-3"], "--steps"),
    (["bench", "--backend", "fast"], "--backend"),
    (["bench", "nosuchdesign"], "unknown design"),
    (["report", "--epochs", "inf"], "--epochs: 'inf' is not a whole number"),
    (["report", "--epochs", "0"], "--epochs"),
    (["report", "--seeds", "1e9"], "--seeds"),
    (["report", "adam", "--lr", "1e400"], "--lr"),
]


@pytest.mark.parametrize(("argv", "names"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_each_command_refuses_hostile_arguments(argv, names, capsys, stubbed):
    refused(argv, capsys, names)
    assert not stubbed, "the command ran despite a bad argument"


def test_every_command_is_covered():
    assert {argv[0] for argv, _ in CASES} == set(cli._COMMANDS)


COUNT_OPTIONS = [("bench", "--numel", cli.MAX_NUMEL), ("bench", "--steps", cli.MAX_STEPS),
                 ("report", "--epochs", cli.MAX_EPOCHS), ("report", "--seeds", cli.MAX_SEEDS)]
FLOAT_OPTIONS = [("check", "adam", "--curvature"), ("show", "adam", "--lr"),
                 ("check", "adamssm", "--beta2"), ("plot", "sgd", "--lr"),
                 ("export", "rmsprop", "--alpha"), ("report", "adam", "--eps")]

hostile_text = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.eE+-_ infatxINFNA\u0663", max_size=12),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(COUNT_OPTIONS), text=hostile_text)
def test_count_options_fuzzed(option, text, capsys, stubbed):
    """Any string for a count: accepted only when it is a whole number in range, otherwise
    exit 2 naming the option. Never a traceback."""
    command, flag, high = option
    stubbed.clear()
    code = main([command, f"{flag}={text}"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    try:
        number = float(text)
        valid = number == int(number) and 1 <= number <= high and "inf" not in text.lower()
    except (ValueError, OverflowError):
        valid = False
    if valid and len(text) <= 40:
        assert code == 0 and stubbed, (text, out.err)
    else:
        assert code == EXIT_USAGE and not stubbed, (text, code)
        assert flag in out.err


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(FLOAT_OPTIONS), text=hostile_text)
def test_real_options_fuzzed(option, text, capsys, stubbed, monkeypatch):
    """Any string for a real-valued option: a finite value in its range runs the command (show
    and check are stubbed here too: their analyses are tested below), anything else is exit 2
    naming the option."""
    command, design, flag = option
    monkeypatch.setitem(cli._COMMANDS, command, lambda args, d, values: stubbed.append(1) or 0)
    stubbed.clear()
    code = main([command, design, f"{flag}={text}"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert code in (0, EXIT_USAGE), (text, code, out.err)
    if code == EXIT_USAGE:
        assert flag in out.err and not stubbed
    else:
        assert stubbed


@pytest.mark.parametrize("design", ["sgd", "heavy_ball", "nesterov", "adam"])
@pytest.mark.parametrize("lr", ["0", "1e-300", "1e300"])
def test_check_at_the_edges_of_the_domain_answers(design, lr, capsys):
    """Values inside the domain but at its edges get an answer (a verdict or an undecided note),
    not a crash: with lr = 0 the loop has an eigenvalue 1 and no Lyapunov certificate."""
    code = main(["check", design, "--lr", lr, "--no-proof"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    assert "internal error" not in out.err and "Traceback" not in out.err
    if lr == "0":
        assert code == 1 and "no certificate" in out.out


def ctopt_cmd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "ctopt", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("argv", [("bench", "--numel", "inf"), ("report", "--epochs", "inf"),
                                  ("check", "adam", "--lr", "1e400")])
def test_as_typed_in_a_shell(argv):
    run = ctopt_cmd(*argv)
    assert run.returncode == EXIT_USAGE, run.stderr
    assert "Traceback" not in run.stderr and argv[-2] in run.stderr


def test_an_internal_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    def broken(args, design, values):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli._COMMANDS, "show", broken)
    monkeypatch.delenv("CTOPT_TRACEBACK", raising=False)
    assert main(["show", "sgd"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error in 'show': ZeroDivisionError" in err and "Traceback" not in err
    monkeypatch.setenv("CTOPT_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        main(["show", "sgd"])
    assert ctopt.zoo.names()
