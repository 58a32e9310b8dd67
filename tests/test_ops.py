"""The expression language (ctopt.ops) is the one table its consumers read: a function added there
(tanh) is allowed, analysed, evaluated, printed on every backend and stored in design files; the
compiler runs without torch, and the runtime is plain modules shared with standalone exports."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt import ops
from ctopt.design import ALLOWED_FUNCTIONS, POSITIVE, REAL, UNIT, DesignBuilder, g, k, theta
from ctopt.errors import UnsupportedError
from ctopt.export.source import RUNTIME_MODULES, class_name, runtime_modules
from ctopt.export.verify import TOLERANCE, check_module, run_exported, run_oracle, trajectory_error
from ctopt.filters import z
from ctopt.serialize import NODE_TYPES, load_design, save_design

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8


def tanh_momentum() -> ctopt.Design:
    """Momentum on a softly clipped gradient, ``scale * tanh(g / scale)`` (the moment filters
    ``tanh(g / scale)``, so that its DC gain is 1)."""
    b = DesignBuilder("tanh_momentum", doc="momentum on a tanh-clipped gradient")
    lr = b.hyper("lr", 0.05, POSITIVE, "learning rate", role="lr")
    beta = b.hyper("beta", 0.9, UNIT, "EMA coefficient", role="ema")
    scale = b.hyper("scale", 0.5, POSITIVE, "clip scale")
    m = b.filter("m", (1 - beta) * z / (z - beta), input=sp.tanh(g / scale))
    b.update(theta - lr * scale * m / m.step_response(k))
    return b.build()


# --------------------------------------------------------------------------- the table itself
def test_every_consumer_knows_every_function():
    names = {f.tag for f in ops.FUNCTIONS}
    assert {f.sympy for f in ops.FUNCTIONS} <= set(ALLOWED_FUNCTIONS)
    assert names <= set(NODE_TYPES)
    assert {m.tag for m in ops.MINMAX.values()} | {r.tag for r in ops.RELATIONS.values()} \
        | {op.tag for op in ops.LOGIC.values()} <= set(NODE_TYPES)
    assert set(ops.REDUCTIONS) == set(ctopt.design.REDUCTION_KINDS)


def test_printed_helpers_are_runtime_names():
    """Every helper a printed function calls is a global of generated code (runtime.__all__)."""
    from ctopt.export import runtime

    templates = [f.scalar for f in ops.FUNCTIONS] + [f.tensor for f in ops.FUNCTIONS]
    templates += [m.scalar for m in ops.MINMAX.values()]
    called = {t.split("(")[0].split(".")[0] for t in templates}
    assert called <= set(runtime.__all__) | set(dir(builtins))


@pytest.mark.parametrize("function", ops.FUNCTIONS, ids=lambda f: f.tag)
def test_numpy_and_torch_agree_on_each_function(function):
    """Each entry's numpy evaluation and its printed torch code compute the same values, NaN
    and infinities included."""
    import torch

    from ctopt.export import runtime

    x = np.array([-1e300, -3.0, -0.5, 0.0, 0.25, 2.0, 700.0, 1e300, np.inf, -np.inf, np.nan])
    with np.errstate(all="ignore"):
        want = function.numpy(x)
    got = eval(function.tensor.format(x="x"), dict(vars(runtime)), {"x": torch.tensor(x)})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-15, atol=0)
    scalar = [eval(function.scalar.format(x=repr(float(v)) if np.isfinite(v) else f"float('{v}')"),
                   dict(vars(runtime))) for v in x]
    np.testing.assert_allclose(np.array(scalar, dtype=float), want, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- tanh, end to end
def test_a_tanh_design_analyses():
    design = tanh_momentum()
    assert design.filters[0].input == sp.tanh(g / design.hyperparameters["scale"].symbol)
    result = ctopt.filter_validity(design)
    assert result.ok, str(result)
    beta = design.hyperparameters["beta"].symbol
    tf = ctopt.transfer_function(design, output="m", input="tanh(g/scale)")
    assert sp.simplify(tf.expr - (1 - beta) * z / (z - beta)) == 0


@pytest.mark.parametrize("backend", ["forloop", "foreach", "compiled"])
def test_a_tanh_design_exports_equal_to_the_oracle(backend):
    design = tanh_momentum()
    cls = ctopt.to_torch(design)
    if backend == "compiled" and not ctopt.export.compiled.CompiledRunner(object).available():
        pytest.skip("torch.compile has no compiler here")
    reference = run_oracle(design, STEPS)
    assert trajectory_error(reference[-1:], reference[:1]) > 1e-3  # it moves
    for maximize in (False, True):
        ours = run_exported(cls, STEPS, maximize=maximize, backend=backend)
        assert trajectory_error(ours, run_oracle(design, STEPS, maximize=maximize)) <= TOLERANCE


def test_a_tanh_design_round_trips_through_a_file_and_a_standalone_module(tmp_path):
    design = tanh_momentum()
    save_design(design, tmp_path / "tanh.json")
    loaded = load_design(tmp_path / "tanh.json")
    assert loaded.equations() == design.equations()
    assert loaded.filters == design.filters
    assert '"op": "tanh"' in (tmp_path / "tanh.json").read_text()
    x0 = np.linspace(-2.0, 2.0, 5)
    grad = lambda x: 3 * x  # noqa: E731
    assert np.array_equal(ctopt.simulate(design, grad, x0, 20), ctopt.simulate(loaded, grad, x0, 20))
    path = tmp_path / "tanh_opt.py"
    text = ctopt.export_source(loaded, path)
    assert text == ctopt.export_source(design)
    assert check_module(path, design, class_name(design)) <= TOLERANCE


def test_the_oracle_evaluates_tanh_like_numpy():
    x = sp.Symbol("x", real=True)
    values = np.array([-30.0, -1.0, 0.0, 0.5, 40.0])
    np.testing.assert_array_equal(ctopt.oracle.evaluate(sp.tanh(2 * x), {x: values}),
                                  np.tanh(2 * values))


# ------------------------------------------------------------------ one steady-state pass
def test_the_lyapunov_steady_state_needs_a_decaying_power():
    """beta**k -> 0 only where beta's domain puts it inside the unit disc: a beta that may be 2
    gives no steady state (the asymptotic pass says so) instead of a silently dropped term."""
    from ctopt.analysis.lyapunov_check import one_step_change

    def design(domain):
        b = DesignBuilder("decay")
        lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
        beta = b.hyper("beta", 0.5, domain)
        b.update(theta - lr * (1 - beta**k) * g)
        return b.build()

    h, lr = sp.Symbol("h", positive=True), sp.Symbol("lr", real=True)
    dv = one_step_change(design(UNIT), theta**2)
    assert sp.simplify(dv - ((theta - lr * h * theta) ** 2 - theta**2)) == 0
    with pytest.raises(UnsupportedError, match="no finite limit"):
        one_step_change(design(REAL), theta**2)


# ------------------------------------------------------------ compiler without torch; runtime
def test_export_source_runs_without_torch(tmp_path):
    """The compiler (design -> program -> source text) imports no torch: export_source works in
    a process where importing torch fails, and its text runs where torch is present."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import ctopt
        text = ctopt.export_source(ctopt.zoo.get("adan"), {str(tmp_path / "adan_opt.py")!r})
        assert "class Adan(GeneratedOptimizer)" in text
        assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m]]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    design = ctopt.zoo.get("adan")
    assert check_module(tmp_path / "adan_opt.py", design, "Adan") <= TOLERANCE


def test_runtime_modules_import_only_torch_the_stdlib_and_each_other():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    for name, text in runtime_modules().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, (name, ast.dump(node))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and node.module in RUNTIME_MODULES, (name, node.module)
                else:
                    assert node.module.split(".")[0] in allowed, (name, node.module)


def test_one_error_hierarchy(tmp_path):
    """ctopt's error bases are the runtime's; a standalone export raises its bundled copies of
    the same classes, and holds the runtime modules verbatim."""
    from ctopt.export import errors as runtime_errors
    from ctopt.export.verify import load_module

    assert ctopt.CtoptError is runtime_errors.CtoptError
    assert ctopt.HyperparameterError is runtime_errors.HyperparameterError
    assert ctopt.errors.UnsupportedError is runtime_errors.UnsupportedError
    path = tmp_path / "sgd_opt.py"
    text = ctopt.export_source(ctopt.zoo.get("sgd"), path)
    assert "# package-only" not in text
    module = load_module(path)
    for name in RUNTIME_MODULES:
        assert module._RUNTIME[name] == (ROOT / "ctopt" / "export" / f"{name}.py").read_text()
    import torch

    with pytest.raises(module.HyperparameterError, match="lr") as info:
        module.Sgd([torch.nn.Parameter(torch.ones(2))], lr=-1.0)
    assert type(info.value).__mro__[1].__name__ == "CtoptError"
    assert issubclass(module.NonFiniteGradientError, module._runtime.CtoptError)
