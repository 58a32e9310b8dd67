"""Checkpoints: save mid-training, resume in a fresh process, continue bit-identically.

The test trains a small float32 model with an exported optimizer and an LR scheduler, saves a
checkpoint, and keeps training. A fresh Python process (this file run as a script) rebuilds the
model and optimizer from scratch, loads the checkpoint with ``torch.load(weights_only=True)`` and
trains the same remaining steps. Every parameter after every resumed step must equal the
uninterrupted run bit for bit, for every backend.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ctopt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread

SAVE_AT, STOP = 4, 10
#: (design, hyperparameters, backends); one design skips a non-finite step before the checkpoint
CONFIGS = [
    ("adam", dict(lr=0.01, weight_decay=0.01), ("forloop", "foreach", "compiled")),
    ("adan", dict(lr=0.01, max_grad_norm=1.0, weight_decay=0.02), ("forloop", "foreach",
                                                                   "compiled")),
    ("amsgrad", dict(lr=0.01), ("forloop", "foreach")),
    ("adagrad", dict(lr=0.05, lr_decay=0.01), ("forloop", "foreach")),
    ("heavy_ball", dict(lr=0.05, dampening=0.1), ("forloop", "foreach")),
    ("dgclip", dict(lr=0.2, gamma=0.5, delta=0.05), ("forloop", "foreach", "compiled")),
]
CASES = [(name, backend) for name, _, backends in CONFIGS for backend in backends]
#: the default run compiles one design (a fresh process pays torch.compile's start-up once)
QUICK = [case for case in CASES if case[1] != "compiled" or case[0] == "adam"]
POISONED_STEP = {"adam": 2}  # a NaN gradient at this step is skipped (nonfinite="skip")


def model_for(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def batch(step: int):
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(32, 5, generator=gen), torch.randn(32, 2, generator=gen)


@functools.cache
def exported(name: str) -> type:
    return ctopt.to_torch(ctopt.zoo.get(name))


def build(name: str, backend: str, seed: int):
    settings = next(h for n, h, _ in CONFIGS if n == name)
    model = model_for(seed)
    Opt = exported(name)
    opt = Opt(model.parameters(), backend=backend, nonfinite="skip", **settings)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STOP)
    return model, opt, scheduler


def train(model, opt, scheduler, name: str, start: int, stop: int) -> list[list[torch.Tensor]]:
    trajectory = []
    for step in range(start, stop):
        x, y = batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if POISONED_STEP.get(name) == step:
            next(model.parameters()).grad[0, 0] = math.nan
        opt.step()
        scheduler.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory



def resume(folder: Path, cases: list[tuple[str, str]]) -> None:
    """The fresh process: rebuild everything, load every checkpoint, finish training."""
    out = {}
    for name, backend in cases:
        model, opt, scheduler = build(name, backend, seed=12345)  # different initial weights
        checkpoint = torch.load(folder / f"{name}-{backend}.pt", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        out[f"{name}-{backend}"] = {
            "trajectory": train(model, opt, scheduler, name, checkpoint["step"], STOP),
            "skipped_steps": opt.state_dict()["skipped_steps"],
        }
    torch.save(out, folder / "resumed.pt")


@pytest.mark.parametrize("cases", [
    pytest.param(QUICK, id="eager+adam-compiled"),
    pytest.param([c for c in CASES if c not in QUICK], id="more-compiled", marks=pytest.mark.slow),
])
def test_resume_in_a_fresh_process_is_bit_identical(tmp_path, cases):
    uninterrupted = {}
    for name, backend in cases:
        model, opt, scheduler = build(name, backend, seed=0)
        train(model, opt, scheduler, name, 0, SAVE_AT)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": SAVE_AT},
                   tmp_path / f"{name}-{backend}.pt")
        uninterrupted[f"{name}-{backend}"] = {
            "trajectory": train(model, opt, scheduler, name, SAVE_AT, STOP),
            "skipped_steps": opt.state_dict()["skipped_steps"],
        }
    done = subprocess.run([sys.executable, __file__, str(tmp_path), json.dumps(cases)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert set(resumed) == set(uninterrupted)
    mismatches = []
    for key, expected in uninterrupted.items():
        got = resumed[key]
        assert got["skipped_steps"] == expected["skipped_steps"], key
        assert len(got["trajectory"]) == STOP - SAVE_AT
        for step, (mine, theirs) in enumerate(zip(got["trajectory"], expected["trajectory"],
                                                  strict=True)):
            if not all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True)):
                mismatches.append(f"{key} at resumed step {step}")
                break
    assert not mismatches, mismatches
    assert all(v["skipped_steps"] == (k.startswith("adam-")) for k, v in uninterrupted.items())


def test_checkpoint_holds_only_plain_data(tmp_path):
    """Loadable with weights_only=True, and the optimizer state is tensors, numbers, strings."""
    model, opt, scheduler = build("adan", "foreach", seed=0)
    train(model, opt, scheduler, "adan", 0, 3)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert set(loaded["state"][0]) == {"step", "exp_avg", "exp_avg_diff", "exp_avg_sq",
                                       "pre_grad"}
    assert loaded["state"][0]["step"].dtype == torch.float32
    fresh_model, fresh_opt, _ = build("adan", "foreach", seed=1)
    fresh_opt.load_state_dict(loaded)
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(fresh_opt.state_dict()["state"][0][key], value), key


if __name__ == "__main__":
    torch.set_num_threads(1)
    resume(Path(sys.argv[1]), [tuple(case) for case in json.loads(sys.argv[2])])
