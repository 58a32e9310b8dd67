"""The usual step, remembered (ctopt.export.usual): after a steady step the next one checks what
that step relied on and runs the same calls; anything a user changes in between makes it
decline before any write. Checked against torch's own Adam on random sequences of what users
do between steps (hypothesis), and by spies that the remembered step is the one that runs."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.export import direct, usual

pytestmark = pytest.mark.skipif(not ctopt.export.compiled.CompiledRunner(object).available(),
                                reason="torch.compile has no compiler here")

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
SIZES = (6, 5, 4, 3)


def params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in SIZES]


class Spy:
    """Counts the remembered step's outcomes (True: it ran the step; False: it declined)."""

    def __init__(self, monkeypatch):
        self.outcomes: list[bool] = []
        call = usual.UsualStep.__call__

        def spy(memo, opt):
            done = call(memo, opt)
            self.outcomes.append(done)
            return done

        monkeypatch.setattr(usual.UsualStep, "__call__", spy)


def grads(ps, i, fresh=False):
    """Gradient ``i`` of every parameter: written into ``p.grad`` (a backward pass accumulating
    into zeroed gradients), or as a fresh tensor where there is none or ``fresh``."""
    gen = torch.Generator().manual_seed(1000 + i)
    for p in ps:
        g = torch.randn(p.shape, generator=gen)
        if p.grad is None or fresh:
            p.grad = g
        else:
            p.grad.copy_(g)


def holds(opt, p) -> bool:
    return any(q is p for group in opt.param_groups for q in group["params"])


# what a user does between two steps, to ctopt's Adam and torch's alike
EDITS = ("none", "lr", "betas", "fresh grad", "grad data", "no grad", "data", "state data", "state", "step counter",
         "zero_grad none", "zero_grad zeros", "load_state_dict", "group params", "backend")


def edit(kind: str, i: int, opt, ps, extra) -> None:
    j = i % len(ps)
    if kind == "lr":
        opt.param_groups[0]["lr"] = 0.01 * (1 + i % 3)
    elif kind == "betas":
        opt.param_groups[0]["betas"] = (0.8, 0.99)
    elif kind == "fresh grad":
        ps[j].grad = ps[j].grad.clone()
    elif kind == "grad data":  # the gradient tensor kept, its data replaced
        ps[j].grad.data = ps[j].grad.data * 2.0
    elif kind == "no grad":
        ps[j].grad = None
    elif kind == "data":
        ps[j].data = ps[j].data.clone()
    elif kind == "state" and opt.state[ps[j]]:
        opt.state[ps[j]]["exp_avg"] = opt.state[ps[j]]["exp_avg"] * 0.5
    elif kind == "state data" and opt.state[ps[j]]:  # the tensor kept, its data replaced
        opt.state[ps[j]]["exp_avg_sq"].data = opt.state[ps[j]]["exp_avg_sq"] * 4.0
    elif kind == "step counter" and opt.state[ps[j]]:
        opt.state[ps[j]]["step"].fill_(float(i % 2))
    elif kind == "load_state_dict":
        opt.load_state_dict(opt.state_dict())
    elif kind == "group params" and not holds(opt, extra):
        opt.add_param_group({"params": [extra]})
    elif kind == "backend" and isinstance(opt, Adam):
        opt.backend = "foreach" if opt.backend == "compiled" else "compiled"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(EDITS), min_size=4, max_size=12), st.booleans())
def test_random_edits_between_steps_give_torchs_trajectory(monkeypatch, edits, bound):
    """Each step: zero_grad, gradients, maybe one edit, step — to both optimizers alike. The
    trajectories (parameters, moments, step counts) equal torch's Adam throughout. ``bound``
    False: no kernel call is bound to the buffers, as on a GPU, so the usual step makes the
    ordinary call."""
    with monkeypatch.context() as patch:
        if not bound:
            patch.setattr(direct.Kernel, "bind", lambda kernel, *args: None)
        _random_edits(patch, edits, bound)


def _random_edits(monkeypatch, edits, bound):
    spy = Spy(monkeypatch)
    ours, theirs = params(), params()
    extras = [torch.nn.Parameter(torch.ones(7)), torch.nn.Parameter(torch.ones(7))]
    opt = Adam(ours, lr=0.02, backend="compiled")
    ref = torch.optim.Adam(theirs, lr=0.02, foreach=False)
    for i, kind in enumerate(["none", "none", "none", *edits]):
        for o, ps, extra in ((opt, ours, extras[0]), (ref, theirs, extras[1])):
            if kind.startswith("zero_grad"):
                o.zero_grad(set_to_none=kind == "zero_grad none")
            grads(ps + ([extra] if holds(o, extra) else []), i)
            edit(kind, i, o, ps, extra)
            o.step()
    for p, q in zip(ours + extras[:1], theirs + extras[1:], strict=True):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
        assert bool(opt.state.get(p)) == bool(ref.state.get(q))
        for key in ("exp_avg", "exp_avg_sq", "step") if ref.state.get(q) else ():
            torch.testing.assert_close(opt.state[p][key], ref.state[q][key], rtol=2e-5,
                                       atol=1e-6)
    assert spy.outcomes[0] is True  # the third step, as the general one would
    layouts = opt._runner.flat.values() if opt._runner is not None else ()
    assert all((type(layout.bound) is tuple) is bound for layout in layouts if layout.theta
               is not None and layout.bound is not None)


@pytest.mark.parametrize("set_to_none", [False, True])
@pytest.mark.parametrize("replaced", ["grad", "exp_avg", "step"])
def test_a_tensor_whose_data_was_replaced_is_read(set_to_none, replaced):
    """``t.data = u`` keeps the tensor object (a gradient or state: the layout's own view) but
    points it elsewhere: the step reads and writes ``u``, as torch's does."""
    ours, theirs = params(), params()
    opt = Adam(ours, lr=0.02, backend="compiled")
    ref = torch.optim.Adam(theirs, lr=0.02, foreach=False)
    for i in range(7):
        for o, ps in ((opt, ours), (ref, theirs)):
            o.zero_grad(set_to_none=set_to_none)
            grads(ps, i)
            if i in (3, 4):
                t = ps[1].grad if replaced == "grad" else o.state[ps[1]][replaced]
                t.data = t.data * (i - 1.0)
            o.step()
        for p, q in zip(ours, theirs, strict=True):
            torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
            torch.testing.assert_close(opt.state[p]["exp_avg"], ref.state[q]["exp_avg"],
                                       rtol=2e-5, atol=1e-6)
    # steady again, but after set_to_none (fresh tensors) and a counter set apart from the rest
    assert set_to_none or replaced == "step" or opt._usual is not None


def test_plain_steps_run_the_remembered_step_only(monkeypatch):
    """Steady steps run the remembered step and nothing of the general step; a second group
    edited declines the whole step (group 0 is not stepped twice)."""
    spy = Spy(monkeypatch)
    ours, theirs = params(), params()
    opt = Adam([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.03}], lr=0.02,
               backend="compiled")
    ref = torch.optim.Adam([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.03}],
                           lr=0.02, foreach=False)
    general = []
    step = type(opt)._step
    monkeypatch.setattr(type(opt), "_step", lambda o: (general.append(1), step(o))[1])
    for i in range(8):
        for o, ps in ((opt, ours), (ref, theirs)):
            grads(ps, i)
            if i == 5:
                o.param_groups[1]["lr"] = 0.01
            o.step()
    # steps 0-2 set the layouts up (group 0's before group 1 had states), 3 and 4 are
    # remembered, 5 declined (the lr of group 1) and took the general step, 6 and 7 remembered
    assert general == [1, 1, 1, 1] and spy.outcomes == [True, True, False, True, True]
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("change", ["grad_scale", "found_inf", "pending skip", "nonfinite",
                                    "capturable", "state dict"])
def test_what_else_the_step_relies_on_declines_it(monkeypatch, change):
    """Settings and GradScaler's inputs, set between steps, are seen: the remembered step
    declines, nothing written."""
    spy = Spy(monkeypatch)
    ps = params()
    opt = Adam(ps, lr=0.02, backend="compiled")
    for i in range(3):
        grads(ps, i)
        opt.step()
    memo, before = opt._usual, [p.detach().clone() for p in ps]
    assert spy.outcomes == [True]
    if change in ("grad_scale", "found_inf"):
        setattr(opt, change, torch.ones(()))
    elif change == "pending skip":
        opt._pending_skips = [(torch.zeros(()), None, [])]
    elif change == "nonfinite":
        opt.nonfinite = "skip"
    elif change == "capturable":
        opt.capturable = True
    else:
        opt.state[ps[0]] = dict(opt.state[ps[0]])
    assert memo(opt) is False
    assert all(torch.equal(p, q) for p, q in zip(ps, before, strict=True))


def test_a_scaled_step_is_remembered_and_declines_without_the_scale(monkeypatch):
    """GradScaler's inputs set at every step (as its ``step`` does): the remembered step takes
    them in its kernel, equal to torch's fused Adam given the same, a skipped step included; a
    step without them declines, and a bad value is refused with nothing changed."""
    spy = Spy(monkeypatch)
    ours, theirs = params(), params()
    opt = Adam(ours, lr=0.02, backend="compiled")
    ref = torch.optim.Adam(theirs, lr=0.02, fused=True)
    for i in range(7):
        for o, ps in ((opt, ours), (ref, theirs)):
            grads(ps, i)
            for p in ps:
                p.grad.mul_(64.0)
            o.grad_scale, o.found_inf = torch.tensor(64.0), torch.tensor(float(i == 4))
            o.step()
            del o.grad_scale, o.found_inf
    assert spy.outcomes == [True] * 5 and opt._usual.scaled
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
        assert float(opt.state[p]["step"]) == float(ref.state[q]["step"]) == 6.0
    memo, before = opt._usual, [p.detach().clone() for p in ours]
    assert memo(opt) is False  # no scale now: the unscaled kernel is another step
    opt.grad_scale = 64.0  # not a tensor
    with pytest.raises(ctopt.errors.UnsupportedError, match="grad_scale"):
        memo(opt)
    assert all(torch.equal(p, q) for p, q in zip(ours, before, strict=True))
    assert [float(opt.state[p]["step"]) for p in ours] == [6.0] * len(ours)


def test_a_standalone_export_remembers_its_usual_step(tmp_path):
    """The module is bundled with standalone exports, and their steps use it."""
    import importlib.util

    path = tmp_path / "adam_export.py"
    path.write_text(ctopt.export_source(ctopt.zoo.get("adam")))
    spec = importlib.util.spec_from_file_location("adam_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = next(v for k, v in vars(module).items() if isinstance(v, type) and
               issubclass(v, torch.optim.Optimizer) and k != "GeneratedOptimizer" and
               v.__module__ == "adam_export")
    ps = params()
    opt = cls(ps, lr=0.02, backend="compiled")
    for i in range(3):
        grads(ps, i)
        opt.step()
    assert type(opt._usual).__module__ != usual.__name__ and opt._usual(opt) is True


def test_a_training_loop_with_a_scheduler_and_a_checkpoint_remembers_its_steps(monkeypatch):
    """A real loop — backward passes, gradients set to None (the layout's hooks move them into
    the buffer), a cosine lr schedule, an optimizer checkpoint reloaded halfway — equals torch's
    fused Adam doing the same, with most steps the remembered one (a new lr is a new entry: that
    step declines, takes the general step, and is remembered anew)."""
    spy = Spy(monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    twin = copy.deepcopy(model)
    opt = Adam(model.parameters(), lr=0.01, backend="compiled")
    ref = torch.optim.Adam(twin.parameters(), lr=0.01, fused=True)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=6, gamma=0.5) for o in (opt, ref)]
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=gen), torch.randn(8, 2, generator=gen))
               for _ in range(16)]
    for i, (x, y) in enumerate(batches):
        for m, o, schedule in ((model, opt, schedules[0]), (twin, ref, schedules[1])):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
            schedule.step()
            if i == 8:
                o.load_state_dict(copy.deepcopy(o.state_dict()))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
    # the lr halves after steps 6 and 12 (declined there); the reload drops what was remembered
    assert spy.outcomes.count(False) == 2 and spy.outcomes.count(True) == 10
