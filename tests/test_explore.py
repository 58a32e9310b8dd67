"""``ctopt.explore``: the sliders drive the plotted data, checked against closed forms derived
here independently; and the explorer works inside a real Jupyter kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ctopt

pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def heavy_ball():
    return ctopt.explore(ctopt.zoo.get("heavy_ball"), values={"lr": 0.1}, resolution=41)


def test_bode_and_poles_follow_the_momentum_slider(heavy_ball):
    mu = 0.6
    heavy_ball.sliders["momentum"].value = mu           # as a user drags the slider
    w, mag_db = heavy_ball.data["bode"]["buf"]
    expected = np.abs(1 / (1 - mu * np.exp(-1j * w)))  # buf <- mu*buf + g: H = z/(z - mu)
    np.testing.assert_allclose(10 ** (mag_db / 20), expected, rtol=1e-9)
    np.testing.assert_allclose(heavy_ball.data["poles"]["buf"], [mu])
    np.testing.assert_allclose(heavy_ball.data["zeros"]["buf"], [0.0], atol=1e-12)


def test_closed_loop_poles_and_verdict_follow_the_curvature(heavy_ball):
    lr, mu = 0.1, 0.6
    for h, stable in ((10.0, True), (35.0, False)):   # stable iff lr*h < 2*(1 + mu) = 3.2
        heavy_ball.set(momentum=mu, h=h)
        expected = np.roots([1, -(1 + mu - lr * h), mu])
        got = np.asarray(heavy_ball.data["loop_poles"])
        np.testing.assert_allclose(np.sort_complex(got), np.sort_complex(expected), atol=1e-9)
        label, ok = heavy_ball.data["verdicts"][-1]
        assert label.startswith("closed loop stable") and ok is stable
        assert ("&#10003;" if stable else "&#10007;") in heavy_ball.status.value


def test_region_is_the_heavy_ball_triangle(heavy_ball):
    heavy_ball.set(momentum=0.9, h=1.0)
    (X, Y, mask), point, axes = (heavy_ball.data[k] for k in ("region", "point", "region_axes"))
    assert axes == ("lr*h", "momentum")
    assert point == pytest.approx((0.1, 0.9))
    margin = np.minimum(X, 2 * (1 + Y) - X)       # > 0 inside: 0 < lr*h < 2*(1 + momentum)
    away = np.abs(margin) > 1e-6
    assert away.sum() > 0.9 * mask.size
    np.testing.assert_array_equal(mask[away], (margin > 0)[away])
    assert mask.any() and not mask.all()


def test_sliders_refuse_values_outside_the_domain(heavy_ball):
    with pytest.raises(ctopt.HyperparameterError, match=r"momentum.*\[0, 1\)"):
        heavy_ball.set(momentum=1.5)
    with pytest.raises(ctopt.CtoptError, match="unknown slider"):
        heavy_ball.set(beta9=0.1)


def test_set_widens_a_slider_instead_of_clamping(heavy_ball):
    heavy_ball.set(lr=5.0)
    assert heavy_ball.values["lr"] == pytest.approx(5.0)


def test_adamssm_validity_verdict_and_region():
    ex = ctopt.explore(ctopt.zoo.get("adamssm"), resolution=31)
    verdicts = dict(ex.data["verdicts"])
    assert verdicts["v: nonnegative impulse response"] is True
    ex.set(beta2=0.9, pole=0.5, zero=0.95)              # zero > max(beta2, pole): invalid
    assert dict(ex.data["verdicts"])["v: nonnegative impulse response"] is False
    (X, Y, mask), point, axes = ex.data["validity_region"]
    assert axes == ("pole", "zero") and point == (0.5, 0.95)
    np.testing.assert_array_equal(mask, np.maximum(0.9, X) >= Y)
    assert set(ex.data["bode"]) == {"m", "v"}           # the moments, not realisation states


def test_explorer_in_a_jupyter_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import json, ctopt\nex = ctopt.explore(ctopt.zoo.get('sgd'), resolution=21)\nex",
        "ex.sliders['lr'].value = 0.05\nex.sliders['h'].value = 50.0\n"
        "print(json.dumps(ex.data['verdicts'][-1]))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = nb.cells[0].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in shown     # a live widget, not text
    label, ok = json.loads(nb.cells[1].outputs[0]["text"])
    assert label == "closed loop stable at lr*h = 2.5" and ok is False
