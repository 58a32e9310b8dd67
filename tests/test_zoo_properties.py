"""Every zoo design: random in-domain hyperparameters and finite gradients give finite
trajectories (AdamSSM within its validity region pole <= zero <= beta2, see docs/adamssm.md)."""

import math

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import ctopt

# practical ranges inside each domain (the domains themselves are unbounded above)
RANGES = {
    "lr": (1e-5, 1.0),
    "eps": (1e-12, 1e-2),
    "weight_decay": (0.0, 0.1),
    "gamma": (1e-3, 10.0),
    "lr_decay": (0.0, 0.1),
    "initial_accumulator_value": (0.0, 1.0),
    "max_grad_norm": (0.0, 5.0),
}


def draw_values(draw, design):
    values = {}
    for h in design.hyper:
        lo, hi = RANGES.get(h.name, (h.domain.lower, h.domain.upper))
        hi = min(hi, 0.999) if h.domain.upper == 1 else hi
        lo = max(lo, -0.999) if lo is not None and lo < 0 else lo
        values[h.name] = draw(st.floats(lo, hi, allow_nan=False))
        values[h.name] = h.check(values[h.name]) if h.domain.contains(values[h.name]) else h.default
    if design.name == "adamssm":
        p, q, b = sorted(abs(values[n]) for n in ("pole", "zero", "beta2"))
        values.update(pole=p, zero=q, beta2=b)  # pole <= zero <= beta2: a valid filter
    return values


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=False,
)
@given(data=st.data(), name=st.sampled_from(ctopt.zoo.names()), seed=st.integers(0, 2**16))
def test_finite_trajectories(data, name, seed):
    design = ctopt.zoo.get(name)
    values = draw_values(data.draw, design)
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((31, 4)) * rng.choice([1e-3, 1.0, 1e3])
    it = iter(grads)
    traj = ctopt.simulate(design, lambda x: next(it), rng.standard_normal(4), 30, **values)
    assert np.all(np.isfinite(traj)), (name, values)
    assert all(math.isfinite(v) for v in values.values())
