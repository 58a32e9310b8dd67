"""The ``ctopt`` command, driven as a user drives it: in a subprocess, reading its output and
exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import ctopt
from ctopt.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def ctopt_cmd(*args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "ctopt", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


# ----------------------------------------------------------------------------- help and list
def test_help_everywhere(capsys):
    top = ctopt_cmd("--help")
    assert top.returncode == EXIT_OK
    for command in ("list", "show", "plot", "check", "export", "bench", "report"):
        assert command in top.stdout
        # each command's help, in-process (the same code path, without a process per command)
        assert main([command, "--help"]) == EXIT_OK
        assert f"usage: ctopt {command}" in capsys.readouterr().out


def test_design_help_lists_its_hyperparameters_with_ranges():
    out = ctopt_cmd("check", "adamssm", "--help")
    assert out.returncode == EXIT_OK
    for h in ctopt.zoo.get("adamssm").hyper:
        assert f"--{h.name}" in out.stdout
        assert f"allowed {h.domain}" in " ".join(out.stdout.split())


def test_list_names_every_design():
    out = ctopt_cmd("list")
    assert out.returncode == EXIT_OK
    listed = [line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()]
    for name in ctopt.zoo.names():
        assert name in listed


# ----------------------------------------------------------------------------- bad input
def test_unknown_design_lists_valid_names_and_suggests_one():
    out = ctopt_cmd("show", "adamw2")
    assert out.returncode == EXIT_USAGE
    err = " ".join(out.stderr.split())
    assert "unknown design 'adamw2'" in err
    assert "Did you mean 'adamw'?" in err
    for name in ctopt.zoo.names():
        assert name in err


def test_value_outside_its_domain_names_the_allowed_range():
    out = ctopt_cmd("check", "adam", "--beta2", "1.5")
    assert out.returncode == EXIT_USAGE
    assert "beta2" in out.stderr and "[0, 1)" in out.stderr
    out = ctopt_cmd("check", "adam", "--lr", "fast")
    assert out.returncode == EXIT_USAGE
    assert "'fast' is not a number" in out.stderr


def test_unknown_hyperparameter_suggests_the_close_one():
    out = ctopt_cmd("check", "adam", "--beta3", "0.9")
    assert out.returncode == EXIT_USAGE
    assert "Did you mean --beta2?" in out.stderr
    assert "--weight_decay" in out.stderr


def test_bad_command_and_bad_choice_fail():
    assert ctopt_cmd("frobnicate").returncode == EXIT_USAGE
    out = ctopt_cmd("plot", "adam", "--kind", "nyquist")
    assert out.returncode == EXIT_USAGE
    assert "bode" in out.stderr and "root-locus" in out.stderr
    out = ctopt_cmd("show")
    assert out.returncode == EXIT_USAGE
    assert "a design NAME is required" in out.stderr
    out = ctopt_cmd("plot", "adam", "-o", "figure.txt")
    assert out.returncode == EXIT_USAGE
    assert ".png, .svg or .pdf" in out.stderr


# ----------------------------------------------------------------------------- show and check
def test_show_prints_equations_transfer_functions_and_conditions():
    out = ctopt_cmd("show", "adam")
    assert out.returncode == EXIT_OK, out.stderr
    assert "v <- beta2*v" in out.stdout                           # the box
    assert "H_v(z) = z*(1 - beta2)/(-beta2 + z)" in out.stdout     # its g**2 -> v filter
    assert "Jury" in out.stdout                                    # the closed-loop conditions


def test_check_reports_the_stable_curvature_range_with_its_proof():
    # heavy ball: stable iff 0 < lr*h < 2*(1 + momentum)
    lr, mu = 0.1, 0.5
    out = ctopt_cmd("check", "heavy_ball", "--lr", str(lr), "--momentum", str(mu))
    assert out.returncode == EXIT_OK, out.stderr
    assert f"h in (0, {2 * (1 + mu) / lr:g})" in out.stdout
    assert "-- proof: closed-loop stability (Jury) --" in out.stdout


def test_check_fails_with_exit_1_when_a_condition_fails():
    stable = ctopt_cmd("check", "sgd", "--lr", "0.5", "--curvature", "3", "--no-proof")
    unstable = ctopt_cmd("check", "sgd", "--lr", "0.5", "--curvature", "5", "--no-proof")
    assert stable.returncode == EXIT_OK, stable.stdout + stable.stderr
    assert unstable.returncode == EXIT_FAILED
    assert "FAILED" in unstable.stdout


def test_check_refuses_an_adamssm_zero_that_breaks_nonnegativity():
    out = ctopt_cmd("check", "adamssm", "--zero", "0.9999", "--no-proof")
    assert out.returncode == EXIT_FAILED
    assert "nonnegative impulse response" in out.stdout.split("FAILED:")[1]


# ----------------------------------------------------------------------------- plot, export
@pytest.mark.parametrize("kind", ["bode", "pole-zero", "root-locus", "region"])
def test_plot_writes_an_image(kind, tmp_path):
    out = ctopt_cmd("plot", "heavy_ball", "--kind", kind, "-o", "fig.png", cwd=tmp_path)
    assert out.returncode == EXIT_OK, out.stderr
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_writes_a_module_that_runs_with_torch_alone(tmp_path):
    out = ctopt_cmd("export", "adam", "--lr", "0.01", "-o", "my_adam.py", cwd=tmp_path)
    assert out.returncode == EXIT_OK, out.stderr
    assert (tmp_path / "my_adam.py").exists() and "from my_adam import Adam" in out.stdout
    # the exported file, against torch.optim.Adam, in a process that cannot import ctopt
    script = textwrap.dedent("""
        import importlib.util, sys, torch
        sys.modules["ctopt"] = None  # any import of ctopt fails
        spec = importlib.util.spec_from_file_location("my_adam", "my_adam.py")
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        cls = mod.Adam
        torch.manual_seed(0)
        a = torch.randn(5, dtype=torch.float64, requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        mine, ref = cls([a]), torch.optim.Adam([b], lr=0.01)
        for _ in range(10):
            for p, o in ((a, mine), (b, ref)):
                o.zero_grad(); (p ** 2).sum().backward(); o.step()
        print(float((a - b).abs().max()))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip()) < 1e-12


def test_export_refuses_a_non_python_file(tmp_path):
    out = ctopt_cmd("export", "adam", "-o", "adam.txt", cwd=tmp_path)
    assert out.returncode == EXIT_USAGE
    assert ".py" in out.stderr


def test_a_design_file_works_like_a_zoo_name(tmp_path):
    ctopt.save_design(ctopt.zoo.get("heavy_ball"), tmp_path / "hb.json")
    out = ctopt_cmd("check", "hb.json", "--lr", "0.1", "--no-proof", cwd=tmp_path)
    assert out.returncode == EXIT_OK, out.stderr
    assert "h in (0, 38)" in out.stdout


def test_a_bad_design_file_is_refused_by_name(tmp_path):
    (tmp_path / "bad.json").write_text('{"format": "pickle"}')
    for name, expected in (("missing.json", "No such file"), ("bad.json", "not a ctopt design")):
        out = ctopt_cmd("show", name, cwd=tmp_path)
        assert out.returncode == EXIT_USAGE
        assert expected in out.stderr


def test_bench_times_against_torch(tmp_path):
    out = ctopt_cmd("bench", "adam", "--numel", "10000", "--steps", "3", "--backend", "forloop",
                    cwd=tmp_path)
    assert out.returncode == EXIT_OK, out.stderr
    assert "torch" in out.stdout and "ctopt forloop" in out.stdout


# ----------------------------------------------------------------------------- report
def test_report_writes_the_whole_story(tmp_path):
    out = ctopt_cmd("report", "-o", "rep", "--epochs", "1", "--seeds", "1", cwd=tmp_path)
    assert out.returncode == EXIT_OK, out.stderr
    assert "stage failed" not in out.stderr
    folder = tmp_path / "rep"
    text = (folder / "report.md").read_text()
    for heading in ("# ctopt report: `adamssm`", "## Summary", "## Design", "## Transfer functions",
                    "## Moment-filter validity", "## Closed-loop stability",
                    "## Lyapunov certificate", "## Figures", "## Exported optimizer",
                    "## Training on real data"):
        assert heading in text
    assert "This stage failed" not in text
    for fig in ("bode", "pole-zero", "root-locus", "region", "training"):
        assert (folder / "figures" / f"{fig}.png").stat().st_size > 1000
    assert (folder / "adamssm_optimizer.py").exists()
    assert "adam (torch.optim)" in text and "adamssm (ctopt)" in text
