"""Long runs: 10,000 steps of an exported optimizer in float64 stay within 1e-10 of the float64
oracle, and nothing grows: the state, the live tensors, the process memory and (compiled path)
the number of compiled graphs are measured at step 1,000 and at step 10,000.
"""

from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pytest
import torch

import ctopt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread

STEPS, WARM = 10_000, 1_000
TOLERANCE = 1e-10
N, SPLIT = 8, 5  # 8 coordinates in two tensors: group reductions span both
SETTINGS = {
    "sgd": dict(lr=0.05, weight_decay=0.01), "heavy_ball": dict(lr=0.05, dampening=0.1),
    "nesterov": dict(lr=0.05), "adagrad": dict(lr=0.1, lr_decay=0.001),
    "rmsprop": dict(lr=0.01, momentum=0.5), "adam": dict(lr=0.01, weight_decay=0.01),
    "adamw": dict(lr=0.01), "amsgrad": dict(lr=0.01), "adabelief": dict(lr=0.01),
    "adamssm": dict(lr=0.01), "adan": dict(lr=0.01, max_grad_norm=0.5, weight_decay=0.01),
    "signgd": dict(lr=0.001), "dgclip": dict(lr=0.2, gamma=0.5, delta=0.05),
}
QUICK = [("adam", "foreach")]
SLOW = [(name, backend) for name in SETTINGS for backend in ("forloop", "foreach")
        if (name, backend) not in QUICK] + [("adam", "compiled"), ("dgclip", "compiled")]


def problem(seed: int = 0):
    """A noisy quadratic: gradient h*x + noise_k, the noise fixed in advance for both runs."""
    rng = np.random.default_rng(seed)
    curvature = rng.uniform(0.5, 2.0, N)
    noise = 0.1 * rng.standard_normal((STEPS + 1, N))
    x0 = np.linspace(-1.0, 1.0, N)
    return curvature, noise, x0


def oracle_trajectory(name: str) -> np.ndarray:
    curvature, noise, x0 = problem()
    step = iter(range(1, STEPS + 1))
    return ctopt.simulate(ctopt.zoo.get(name), lambda x: curvature * x + noise[next(step)], x0,
                          STEPS, **SETTINGS[name])


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() wakes deprecated lazy torch objects
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def state_footprint(opt) -> tuple[int, int]:
    """(number of state entries, bytes held by state tensors)."""
    entries, size = 0, 0
    for state in opt.state.values():
        for value in state.values():
            entries += 1
            if isinstance(value, torch.Tensor):
                size += value.numel() * value.element_size()
    return entries, size


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def exported_run(name: str, backend: str):
    curvature, noise, x0 = problem()
    h, noise_t = torch.tensor(curvature), torch.tensor(noise)
    params = [torch.nn.Parameter(torch.tensor(x0[:SPLIT])),
              torch.nn.Parameter(torch.tensor(x0[SPLIT:]))]
    opt = ctopt.to_torch(ctopt.zoo.get(name))(params, backend=backend, **SETTINGS[name])
    trajectory = np.empty((STEPS + 1, N))
    trajectory[0] = x0
    measured = {}
    for k in range(1, STEPS + 1):
        with torch.no_grad():
            grad = h * torch.cat([p.detach() for p in params]) + noise_t[k]
        params[0].grad, params[1].grad = grad[:SPLIT].clone(), grad[SPLIT:].clone()
        opt.step()
        trajectory[k] = torch.cat([p.detach() for p in params]).numpy()
        if k in (WARM, STEPS):
            measured[k] = {"state": state_footprint(opt), "tensors": live_tensors(),
                           "rss": rss_bytes(), "graphs": graphs_compiled()}
    return trajectory, measured



def check(name: str, backend: str) -> None:
    expected = oracle_trajectory(name)
    got, measured = exported_run(name, backend)
    error = np.abs(got - expected).max()
    assert error <= TOLERANCE, f"{name}/{backend}: max |exported - oracle| = {error:.3g}"
    assert np.isfinite(got).all() and np.abs(got[-1] - got[0]).max() > 1e-3  # it did move
    early, late = measured[WARM], measured[STEPS]
    assert late["state"] == early["state"], (early, late)  # same entries, same bytes
    assert late["tensors"] <= early["tensors"], (early, late)
    assert late["graphs"] == early["graphs"], "the compiled path recompiled during the run"
    growth = late["rss"] - early["rss"]
    assert growth < 16 * 2**20, f"process memory grew by {growth / 2**20:.1f} MiB"
    print(f"\n{name}/{backend}: max error {error:.2e}; state {late['state']}; live tensors "
          f"{early['tensors']} -> {late['tensors']}; RSS growth {growth / 2**20:.2f} MiB; "
          f"compiled graphs {late['graphs']}")


@pytest.mark.parametrize(("name", "backend"), QUICK, ids=[f"{n}-{b}" for n, b in QUICK])
def test_ten_thousand_steps_match_the_oracle_without_growth(name, backend):
    check(name, backend)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), SLOW, ids=[f"{n}-{b}" for n, b in SLOW])
def test_every_design_and_backend_for_ten_thousand_steps(name, backend):
    check(name, backend)
