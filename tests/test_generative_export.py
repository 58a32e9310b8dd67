"""Random designs from the IR: every design it accepts exports to code equal to the float64
oracle, on every path and in the standalone module, or is refused with a named CtoptError.

The designs come from ``tests/strategies.py`` (random states, filters of order 1-3 in five
forms, temporaries, reductions, every allowed function, names drawn to collide). Each accepted
design runs 30 steps of the test problem of :mod:`ctopt.export.verify` in float64 on the
for-loop and foreach paths of ``ctopt.to_torch`` (and with ``maximize=True`` on the for-loop
path), and on the foreach path of the standalone module ``ctopt.export_source`` writes (its
class is the same generated text; the runtime is its own copy); every
trajectory must be within 1e-12 (relative, per step) of the oracle's, up to the first step with
a non-finite value, which must come at the same step in the same entries. Where a design's map
is ill-conditioned (a division by theta, a chaotic recursion), 30 steps amplify rounding beyond
1e-12 although the code is right; such a design passes only if every single step equals the
oracle's step from the same parameter and states to 1e-14 (``step_error``), and is counted
apart ("accepted (rounding amplified by the map)").

The compiled path costs a ``torch.compile`` per design, so it runs on fewer designs, with
``backend="aot_eager"`` (dynamo's graph capture and AOTAutograd, the same graph Inductor
receives, run without Inductor's code generation): 60 designs drawn in the default run, 200
under ``-m slow``. Real Inductor runs on 4 designs drawn under ``-m slow`` only (the zoo's
Inductor kernels are tested in test_export_compiled.py). The default run checks 400 drawn
designs on the eager paths and the standalone module, ``-m slow`` 10,000. Both are
derandomized, so CI sees the same designs every run. A drawn design the IR refuses counts
among them (it must be refused with a named CtoptError); about half are accepted.
"""

from __future__ import annotations

import collections
import os
import tempfile
import warnings

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from strategies import Drawn, designs

import ctopt
from ctopt.design import POSITIVE, DesignBuilder, g, k, theta
from ctopt.errors import CtoptError
from ctopt.export.source import class_name
from ctopt.export.verify import (
    load_module,
    run_exported,
    run_oracle,
    step_error,
    trajectory_error,
)

STEPS = 30
TOLERANCE = 1e-12
STEP_TOLERANCE = 1e-14
EAGER = ("forloop", "foreach")
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def _agree(cls, design, drawn, what: str, maximize: bool = False, **options) -> bool:
    """The path of ``cls`` chosen by ``options`` equals the oracle over STEPS steps. Where the
    trajectories differ by more than TOLERANCE, every single step must still equal the oracle's
    step from the same state to STEP_TOLERANCE (the design's map amplified rounding, e.g. by a
    division by theta); returns True in that case."""
    ours = run_exported(cls, STEPS, maximize=maximize, **options)
    error = trajectory_error(ours, run_oracle(design, STEPS, maximize=maximize))
    if error <= TOLERANCE:
        return False
    local = step_error(cls, design, STEPS, maximize=maximize, **options)
    assert local <= STEP_TOLERANCE, (
        f"{what} differs from the oracle: relative error {error:.3g} over {STEPS} steps, "
        f"{local:.3g} in one step\ndesign:\n{design}\nrecipe: {drawn.recipe}")
    return True


def outcome(drawn, compiled: str | None = None) -> str:
    """Check one drawn design; return ``"accepted"`` or how it was refused."""
    if drawn.error is not None:
        assert isinstance(drawn.error, CtoptError), (
            f"building the design raised {type(drawn.error).__name__}: {drawn.error}\n"
            f"recipe: {drawn.recipe}")
        return f"refused at build ({type(drawn.error).__name__})"
    design = drawn.design
    try:
        cls = ctopt.to_torch(design, check=False)
        text = ctopt.export_source(design, check=False)
    except CtoptError as exc:
        return f"refused at export ({type(exc).__name__})"
    amplified = [_agree(cls, design, drawn, backend, backend=backend) for backend in EAGER]
    amplified.append(_agree(cls, design, drawn, "forloop (maximize)", maximize=True,
                            backend="forloop"))
    # auto on a small model: the flat layout, its kernel the for-loop code on the flat buffers
    amplified.append(_agree(cls, design, drawn, "auto (flat, eager)", backend="auto"))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "exported.py")
        with open(path, "w") as f:
            f.write(text)
        standalone = getattr(load_module(path), class_name(design))
    amplified.append(_agree(standalone, design, drawn, "standalone foreach", backend="foreach"))
    if compiled is not None:
        cls._compiled_fused = torch.compile(cls._fused, backend=compiled, dynamic=True,
                                            fullgraph=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager code
            amplified.append(_agree(cls, design, drawn, f"compiled ({compiled})",
                                    backend="compiled"))
    return "accepted (rounding amplified by the map)" if any(amplified) else "accepted"


def run_designs(examples: int, compiled: str | None = None, **sizes) -> collections.Counter:
    """Check ``examples`` drawn designs; return how many were accepted and how each refusal
    happened (printed, so ``pytest -s`` shows the counts)."""
    counts: collections.Counter = collections.Counter()

    @settings(max_examples=examples, **SETTINGS)
    @given(designs(**sizes))
    def check(drawn):
        counts[outcome(drawn, compiled)] += 1

    check()
    print(f"\n{sum(counts.values())} designs ({compiled or 'eager'}):", dict(counts))
    return counts


def _enough_accepted(counts, share: float = 0.3) -> bool:
    """The property is only worth something when the IR accepts a fair share of the designs."""
    accepted = sum(n for kind, n in counts.items() if kind.startswith("accepted"))
    return accepted >= share * sum(counts.values())


def test_random_designs_export_equal_to_the_oracle():
    assert _enough_accepted(run_designs(400))


def test_random_designs_compiled_equal_to_the_oracle():
    assert _enough_accepted(run_designs(60, "aot_eager", max_states=2, max_lets=2), 0.25)


@pytest.mark.slow
def test_many_random_designs_export_equal_to_the_oracle():
    assert _enough_accepted(run_designs(10_000))


@pytest.mark.slow
def test_many_random_designs_compiled_equal_to_the_oracle():
    assert _enough_accepted(run_designs(200, "aot_eager"))


@pytest.mark.slow
def test_random_designs_inductor_equal_to_the_oracle():
    assert _enough_accepted(run_designs(4, "inductor", max_states=2, max_lets=2), 0.25)


# ------------------------------------------------------------ bugs the generator found, kept
def _built(build) -> Drawn:
    b = DesignBuilder("found")
    lr = b.hyper("lr", 0.1, POSITIVE)
    build(b, lr)
    return Drawn(b.build(), None, [])


def test_found_an_elementwise_choice_between_numbers_kept_float64():
    """``torch.where(c, 1.0, 0.001)`` is float32: the float64 paths lost 8 digits."""
    def build(b, lr):
        q = sp.Piecewise((1, sp.Abs(g * theta) < 1), (sp.Float(1e-3), True))
        b.update(theta - lr * q / (q + 1))

    assert outcome(_built(build)) == "accepted"


def test_found_a_per_step_choice_of_a_number_beside_a_tensor():
    """``_choose(first_step, state, 0.001)`` gave a Python float to ``torch.abs``."""
    def build(b, lr):
        m = b.state("m", sp.Rational(1, 10))
        choice = sp.Piecewise((m, sp.Eq(k, 1)), (sp.Float(1e-3), True))
        b.assign(m, 0.9 * m + 0.1 * (g**2 + sp.Float(0.5)) ** (choice / (sp.Abs(choice) + 1)))
        b.update(theta - lr * m * g)

    assert outcome(_built(build)) == "accepted"


def test_found_a_comparison_of_a_piecewise():
    """sympy writes ``Piecewise(...) >= x`` as ``ITE``, which no printer knew."""
    def build(b, lr):
        m = b.state("m")
        p = sp.Piecewise((sp.sqrt(sp.Abs(m) + sp.Float(1e-3)), g > 0), (g, True))
        b.assign(m, 0.9 * m + 0.1 * g)
        b.update(theta - lr * sp.Piecewise((g, sp.Ge(p, theta)), (m, True)))

    drawn = _built(build)
    assert not any(a.expr.atoms(sp.ITE) for a in drawn.design.assignments)
    assert outcome(drawn) == "accepted"


def test_found_a_comparison_of_an_inlined_temporary():
    """Inlining a temporary ``Piecewise`` into a comparison makes sympy build ``ITE`` inside
    the code generator; it is printed as a choice, with the oracle's semantics."""
    def build(b, lr):
        clipped = b.let("clipped", sp.Piecewise((g, g > 1), (sp.log(sp.Abs(theta)), True)))
        b.update(theta - lr * sp.Piecewise((g, sp.Gt(clipped, sp.Float(0.5))), (2 * g, True)))

    drawn = _built(build)
    program = ctopt.export.codegen.build_program(drawn.design)
    assert any(e.atoms(sp.ITE) for _, e in program.elementwise)
    assert outcome(drawn) == "accepted"


def test_found_a_power_of_an_inlined_product():
    """``s = g**2*c**(2*k)/(|g| + 1)**2`` used once as ``s**2``: inlining it let sympy rewrite
    the power as ``g**4*c**(4*k)/(|g| + 1)**4``, which overflows to inf/inf = nan at |g| ~ 1e90
    where the oracle's ``s**2`` is finite. Such a product stays a temporary."""
    def build(b, lr):
        s = b.let("s", g**2 * lr**(2 * k) / (sp.Abs(g) + 1)**2)
        b.update(theta - lr * (g + lr * (2 * sp.Abs(g) + 1)**3 + s**2))

    drawn = _built(build)
    program = ctopt.export.codegen.build_program(drawn.design)
    assert any(name == "t_s" for name, _ in program.elementwise)
    ours = run_exported(ctopt.to_torch(drawn.design, check=False), 30, backend="forloop")
    assert np.abs(ours[7]).max() > 1e270  # the overflow of g**4 is reached (then nan, as the oracle)
    assert outcome(drawn) == "accepted"


def test_found_an_association_that_overflows_at_the_edge_of_the_float_range():
    """``addcmul_(t, t, value=c)`` computes ``(c*t)*t``, the oracle ``c*(t*t)``; at step 15,
    |theta| ~ 1e307, only ``t*t`` overflows. The eager paths now square first."""
    def build(b, lr):
        beta = b.state("beta")
        b.reduction("v", "l2_norm", g)
        t = b.let("t", (lr - sp.Min(beta, g)) * sp.Max(1, g))
        b.update(theta - 9 * lr * t**2 / 16)
        b.assign(beta, sp.Float(0.9) * beta + sp.Float(0.1) * g / (sp.Abs(g) + 1))

    outcome(_built(build))



def test_found_a_map_that_amplifies_rounding():
    """Dividing by theta makes 30 steps amplify rounding (here ``lerp_``'s, in the momentum)
    past 1e-12 although every step equals the oracle's to rounding: accepted, and counted
    apart."""
    def build(b, lr):
        m = b.state("m")
        b.assign(m, sp.Float(0.9) * m + sp.Float(0.1) * g)
        b.update(theta - lr * (sp.Abs(theta) + 1) * (m - 2) / theta)

    assert outcome(_built(build)) == "accepted (rounding amplified by the map)"


def test_the_property_fails_for_wrong_code():
    design = ctopt.zoo.get("heavy_ball")
    wrong = ctopt.to_torch(design.with_defaults(momentum=0.9 + 1e-9))
    with pytest.raises(AssertionError, match="differs from the oracle"):
        _agree(wrong, design, Drawn(design, None, []), "forloop", backend="forloop")


def test_found_a_rewrite_that_left_a_scalar_in_elementwise_code():
    """Reading the gradient as itself (``g + wd*theta`` is ``g`` when ``wd == 0``) substituted
    with sympy's ``xreplace``, which re-evaluated ``Abs(c/x)`` into ``Abs(c)/x``: ``torch.abs``
    of a float."""
    def build(b, lr):
        c, wd = b.hyper("c", 0.5, POSITIVE), b.hyper("wd", 0.1, POSITIVE)
        m = b.state("m")
        b.assign(m, 0.9 * m + 0.1 * g)
        scalar = sp.Piecewise((sp.Rational(1, 3), sp.Ne(k, 2)), (c, True))
        b.update(theta - lr * sp.Abs(sp.Piecewise((scalar / sp.log(sp.Abs(m) + 1), g > 0),
                                                  (g + wd * theta, True))))

    assert outcome(_built(build)) == "accepted"


def test_found_torch_sign_of_nan_is_zero():
    """``torch.sign(nan)`` is 0: the generated code hid a NaN the oracle propagates."""
    def build(b, lr):
        b.update(theta - lr * sp.Max(sp.Float(1.4), sp.sign(sp.log(g))))

    assert outcome(_built(build)) == "accepted"
    design = _built(build).design
    assert np.isnan(run_oracle(design, 1)[-1]).any()  # the case is really exercised


def test_found_an_alias_of_a_state_read_after_it_was_overwritten():
    """``m <- 0.9*m + 0.1*P/(|P| + 1)`` with ``P`` a per-step choice of ``m`` itself: the
    for-loop path aliased the old ``m`` (``_t1 = s_m``), scaled ``s_m`` in place, then read
    the alias (0.07 % off in one step)."""
    def build(b, lr):
        m = b.state("m", sp.Rational(1, 10))
        choice = sp.Piecewise((sp.Float(0.5), lr > 1), (m, True))
        b.assign(m, 0.9 * m + 0.1 * choice / (sp.Abs(choice) + 1))
        b.update(theta - lr * m * g)

    assert outcome(_built(build)) == "accepted"


def test_found_an_alias_of_a_state_kept_by_a_let_past_the_state_s_own_update():
    """``w <- (x if k == 1 else g)`` read after ``x <- 0.9*x + ...`` (and by theta's update):
    the choice aliased ``s_x`` (``t_w = s_x``), the next line updated ``s_x`` in place, and the
    update read the new ``x`` through ``w`` (0.5 % off in the first step). A choice now copies
    a branch that is a tensor some line overwrites."""
    def build(b, lr):
        x, n = b.state("x", 0), b.state("n", 0)
        w = b.let("w", sp.Piecewise((x, sp.Eq(k, 1)), (g, True)))
        b.assign(x, sp.Float(0.1) * g / (sp.Abs(g) + 1) + sp.Float(0.9) * x)
        b.update(theta - lr * w)
        b.assign(n, sp.Float(0.9) * n + sp.Float(0.1) * w / (sp.Abs(w) + 1))

    assert outcome(_built(build)) == "accepted"


def test_a_swap_through_choices_reads_the_old_states():
    """``t <- (x if k == 1 else g)``, ``x <- (y if k == 1 else x/2)``, ``y <- (t if k == 1 else
    y/2 + g)``: at the first step the states swap. Each choice aliased a state tensor, and the final
    copy into ``s_x`` overwrote what ``y``'s new value pointed at (both states became the old
    ``y``)."""
    def build(b, lr):
        x, y = b.state("x", sp.Rational(1, 4)), b.state("y", sp.Rational(-1, 2))
        t = b.let("t", sp.Piecewise((x, sp.Eq(k, 1)), (g, True)))
        b.assign(x, sp.Piecewise((y, sp.Eq(k, 1)), (x / 2, True)))
        b.assign(y, sp.Piecewise((t, sp.Eq(k, 1)), (y / 2 + g, True)))
        b.update(theta - lr * (x + 3 * y))

    assert outcome(_built(build)) == "accepted"


def test_a_state_holding_the_previous_theta_on_every_path():
    """``prev <- theta`` before theta's update: the compiled kernel's new ``prev`` was theta's
    tensor itself, and its write into the state came after theta's (``s_prev.copy_(theta)``
    copied the new theta: 31 % off in one step). The eager paths were right; the compiled path
    is checked here too."""
    def build(b, lr):
        prev = b.state("prev", 0)
        d = b.let("d", theta - prev)
        b.assign(prev, theta)
        b.update(theta - lr * g + sp.Rational(1, 2) * d)

    assert outcome(_built(build), compiled="aot_eager") == "accepted"


def test_two_states_swapped_on_every_path():
    """``t <- x; x <- y; y <- t``: the compiled kernel wrote ``s_x`` from ``s_y`` and then
    ``s_y`` from what was ``s_x`` (both became the old ``y``)."""
    def build(b, lr):
        x, y = b.state("x", sp.Rational(1, 4)), b.state("y", sp.Rational(-1, 2))
        t = b.let("t", x)
        b.assign(x, y)
        b.assign(y, t)
        b.update(theta - lr * (g + x + 3 * y))

    assert outcome(_built(build), compiled="aot_eager") == "accepted"


@pytest.mark.skipif(not ctopt.export.compiled.CompiledRunner(object).available(),
                    reason="torch.compile has no compiler here")
def test_a_previous_theta_and_a_swap_through_inductor():
    """Both patterns above in one design, through Inductor itself: its ``remove_noop_ops``
    drops a clone of an input written later in the graph (pytorch issue 198131), so the
    compiled kernel copies by double negation (``_copy_of``)."""
    def build(b, lr):
        prev, x, y = b.state("prev", 0), b.state("x", sp.Rational(1, 4)), b.state("y", -1)
        d, t = b.let("d", theta - prev), b.let("t", x)
        b.assign(prev, theta)
        b.assign(x, y)
        b.assign(y, t)
        b.update(theta - lr * (g + x + 3 * y) + sp.Rational(1, 2) * d)

    assert outcome(_built(build), compiled="inductor") == "accepted"


def test_found_a_coefficient_filling_a_tensor_in_the_compiled_kernel():
    """``-1 if (m > 0) | (s < -1) else m`` with ``m`` a group reduction: the elementwise choice's
    last branch filled a tensor with the coefficient (``torch.full_like(n_s, c5)``), a 0-d
    tensor in the compiled kernel, which dynamo could not trace (an unbacked float), so the
    compiled path fell back to eager code with a warning."""
    def build(b, lr):
        m = b.reduction("m", "l2_norm", g)
        s = b.state("s", 0)
        b.assign(s, sp.Float(0.9) * s + sp.Float(0.1) * g / (sp.Abs(g) + 1))
        choice = sp.Piecewise((-1, (m > 0) | (s < -1)), (m, True))
        b.update(theta - lr * (g + choice) / (sp.Abs(g + choice) + 1))

    assert outcome(_built(build), compiled="aot_eager") == "accepted"


def test_found_a_per_step_condition_in_the_compiled_kernel():
    """A per-step condition combined with an elementwise one (``(m <= lr) | (c > 0)``) reached
    the compiled kernel as a float64 0-d tensor: ``bitwise_or`` of bool and double."""
    def build(b, lr):
        c = b.hyper("c", 0.5, POSITIVE)
        m = b.state("m")
        b.assign(m, 0.9 * m + 0.1 * g)
        b.update(theta - lr * sp.Piecewise((m, (m <= lr) | (c > 1)), (g, True)))

    assert outcome(_built(build), compiled="aot_eager") == "accepted"


def test_found_sympy_making_pi_from_an_inlined_log_is_refused_by_name():
    """``log(Piecewise((h, h > -1), (-1, True)))`` with ``h`` inlined: sympy folds ``log(-1)``
    into ``I*pi``, which no generated code can compute (the oracle gives NaN). Not yet
    exported: refused with UnsupportedError instead of an unnamed NotImplementedError."""
    def build(b, lr):
        h = b.let("h", -1.5 * (sp.Abs(g) + 0.5) ** (theta / (sp.Abs(theta) + 1)) - 1)
        choice = sp.Piecewise((h, h > -1), (-1, True))
        b.update(theta + lr * sp.log(choice) / (sp.Abs(sp.log(choice)) + 1))

    assert outcome(_built(build)) == "refused at export (UnsupportedError)"
