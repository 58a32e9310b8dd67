"""The GPU benchmark runs before a GPU is at hand: ``bench_gpu.py --device cpu`` prints every
table it prints on CUDA (CUDA's events, sync check and graphs left out) without an error, and
``gpu_check.sh`` runs the CUDA tests and the benchmark and writes their logs. Nothing timed is
checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_gpu_dry_run_prints_every_table():
    res = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu",
                          "--quick", "--lists", "one", "--reps", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Traceback" not in out
    for heading in ("## (1) share of HBM bandwidth", "## (2) Adam on real parameter lists",
                    "## (3) bfloat16", "## (4) CUDA-graph capture"):
        assert heading in res.stdout, out
    rows = [line for line in res.stdout.splitlines() if line.startswith("| one tensor |")]
    assert any("ctopt adam auto" in row for row in rows) and any("torch fused" in row
                                                                 for row in rows), out


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check is the real one")
def test_gpu_check_runs_the_cuda_tests_and_the_benchmark(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    logs = {f.name: f.read_text() for f in (tmp_path / "out").iterdir()}
    assert set(logs) == {"env.txt", "gpu_tests.log", "bench_gpu.md"}
    assert "skipped" in logs["gpu_tests.log"] and "failed" not in logs["gpu_tests.log"]
    assert "CUDA is not available" in logs["bench_gpu.md"]
    assert "tests exit 0, bench exit 0" in logs["env.txt"]
