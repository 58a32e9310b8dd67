"""``ctopt.explore(design)``: sliders over a design's hyperparameters that redraw its Bode and
pole-zero plots, its closed-loop stability region and (for a design with a declared filter) the
filter's validity region, and say which conditions hold at the current values.

Everything symbolic (transfer functions, Jury conditions, validity conditions) is derived once;
a slider move only evaluates numbers, so the plots follow the sliders live. The plotted numbers
are kept in :attr:`Explorer.data`, which is what the tests read. Needs ``ipywidgets`` (the
``jupyter`` extra).

Example:
    >>> import ctopt
    >>> ex = ctopt.explore(ctopt.zoo.get("heavy_ball"))  # doctest: +SKIP
    >>> ex.set(momentum=0.5).data["verdicts"]              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import sympy as sp

from .design import Design, Hyperparameter
from .errors import CtoptError, OptionError, UnsupportedError

__all__ = ["Explorer", "explore"]

_FREQ = np.linspace(1e-3, np.pi, 256)


def explore(design: Design, *, curvature: float = 1.0, values: Mapping[str, float] | None = None,
            resolution: int = 81) -> Explorer:
    """An interactive :class:`Explorer` of ``design`` (display it in Jupyter), starting at
    ``values`` (defaults otherwise) and closed-loop curvature ``curvature``.

    Example:
        >>> import ctopt
        >>> ex = explore(ctopt.zoo.get("sgd"), curvature=2.0)
        >>> ex.set(lr=0.5).data["verdicts"][-1]
        ('closed loop stable at lr*h = 1', True)
    """
    return Explorer(design, curvature=curvature, values=values, resolution=resolution)


class Explorer:
    """Sliders, a live figure and a verdict panel for one design (see :func:`explore`).

    ``sliders`` maps each hyperparameter (and ``"h"``, the curvature) to its widget;
    ``set(**values)`` moves sliders as a user would; ``data`` holds what is plotted: ``"bode"``
    (name -> (w, |H| in dB)), ``"poles"``/``"zeros"`` (name -> complex array), ``"loop_poles"``,
    ``"region"`` ((x, y, stable mask), the current ``"point"``), ``"validity_region"`` and
    ``"verdicts"`` ([(condition, holds)]).
    """

    def __init__(self, design: Design, *, curvature: float = 1.0,
                 values: Mapping[str, float] | None = None, resolution: int = 81):
        try:
            import ipywidgets as widgets
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on the extra
            raise UnsupportedError(
                "ctopt.explore needs ipywidgets: pip install 'ctopt[jupyter]'"
            ) from exc
        from matplotlib.figure import Figure

        from .analysis.transfer import transfer_functions
        from .analysis.validity import filter_validity

        self.design = design
        self.values = design.check_values(**dict(values or {}))
        self.curvature = float(curvature)
        self.resolution = int(resolution)
        internal = {s for f in design.filters for s in f.states[1:]}  # realisation states
        self.tfs = {n: tf for n, tf in transfer_functions(design).items()
                    if n != "theta" and n not in internal}
        self._loop, self._cond, self._frozen = _closed_loop(design)
        self._checks = _validity_checks(filter_validity(design))
        self._plane = _validity_plane(design)
        self.data: dict[str, object] = {}

        self.sliders = {hyper.name: _slider(widgets, hyper) for hyper in design.hyper}
        self.sliders["h"] = widgets.FloatLogSlider(
            value=self.curvature, base=10, min=-4, max=4, step=0.01,
            description="h/r" if self._frozen else "h", readout_format=".3g",
            continuous_update=False,
        )
        for name, s in self.sliders.items():
            if name in self.values:
                s.value = self.values[name]
            s.observe(self._changed, names="value")
        self.status = widgets.HTML()
        self.output = widgets.Output()
        panels = 4 if self._plane else 3
        self.figure = Figure(figsize=(4.2 * panels, 3.6))
        self.axes = self.figure.subplots(1, panels)
        controls = widgets.VBox(list(self.sliders.values()))
        self.widget = widgets.VBox([widgets.HBox([controls, self.status]), self.output])
        self.update()

    # -------------------------------------------------------------------- interaction
    def set(self, **values: float) -> Explorer:
        """Move sliders (hyperparameters by name, ``h`` for the curvature) and redraw.

        Example:
            >>> import ctopt
            >>> ex = explore(ctopt.zoo.get("sgd"))
            >>> ex.set(lr=3.0).data["verdicts"][-1][1]
            False
        """
        unknown = sorted(set(values) - set(self.sliders))
        if unknown:
            raise OptionError(f"unknown slider(s) {unknown}; sliders: {list(self.sliders)}")
        for name, value in values.items():
            if name in self.values:
                self.design.hyperparameters[name].check(value)
        self._batch = True
        try:
            for name, value in values.items():
                _fit(self.sliders[name], float(value))
                self.sliders[name].value = value
        finally:
            self._batch = False
        self.update()
        return self

    _batch = False

    def _changed(self, change) -> None:
        if not self._batch:
            self.update()

    def update(self) -> None:
        """Read the sliders, recompute every plotted number and redraw."""
        for name in self.values:
            self.values[name] = float(self.sliders[name].value)
        self.curvature = float(self.sliders["h"].value)
        with np.errstate(all="ignore"):  # grids touch the boundaries of the domains
            self.data = self._compute()
        self._draw()
        self.status.value = _verdict_html(self.data["verdicts"])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -------------------------------------------------------------------- numbers
    def _compute(self) -> dict[str, object]:
        v = self.values
        data: dict[str, object] = {"bode": {}, "poles": {}, "zeros": {}, "verdicts": []}
        for name, tf in self.tfs.items():
            try:
                num, den = tf.numeric(**_known(tf, v))
            except CtoptError:
                continue
            resp = np.polyval(num, np.exp(1j * _FREQ)) / np.polyval(den, np.exp(1j * _FREQ))
            data["bode"][name] = (_FREQ, 20 * np.log10(np.maximum(np.abs(resp), 1e-300)))
            data["poles"][name] = np.roots(den) if len(den) > 1 else np.array([])
            data["zeros"][name] = np.roots(num) if len(num) > 1 else np.array([])
        for label, fn, names in self._checks:
            data["verdicts"].append((label, bool(fn(*[v[n] for n in names]))))
        if self._cond is not None:
            x_label = "lr*h/r" if self._frozen else "lr*h"
            point_x = v.get("lr", 1.0) * self.curvature
            env = {**v, "h": self.curvature, "r": 1.0}
            ok = bool(self._cond.holds(**_only(self._cond, env)))
            data["verdicts"].append((f"closed loop stable at {x_label} = {point_x:g}", ok))
            data["loop_poles"] = self._loop.eigenvalues(**_only_loop(self._loop, env))
            data["region"], data["point"], data["region_axes"] = self._region(x_label)
        if self._plane:
            data["validity_region"] = self._validity_region()
        return data

    def _region(self, x_label: str):
        v = self.values
        lr = v.get("lr", 1.0)
        y_name = _region_y(self.design, self._cond)
        y_h = self.design.hyperparameters[y_name]
        y = np.linspace(*_range(y_h, v[y_name]), self.resolution)
        env = {**v, "r": 1.0}
        # x range: up to beyond the largest stable x at the current y
        xs = np.geomspace(1e-4, 1e5, 400)
        stable = self._cond.holds(**_only(self._cond, {**env, "h": xs / lr}))
        x_max = 1.25 * xs[np.asarray(stable, dtype=bool)].max() if np.any(stable) else 4.0
        x = np.linspace(0, x_max, self.resolution)
        X, Y = np.meshgrid(x, y)
        step = Y if y_name == "lr" else lr
        mask = self._cond.holds(**_only(self._cond, {**env, "h": X / step, y_name: Y}))
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), X.shape)
        return (X, Y, mask), (lr * self.curvature, v[y_name]), (x_label, y_name)

    def _validity_region(self):
        x_name, y_name, fn, names = self._plane
        hx, hy = (self.design.hyperparameters[n] for n in (x_name, y_name))
        X, Y = np.meshgrid(np.linspace(*_range(hx, self.values[x_name]), self.resolution),
                           np.linspace(*_range(hy, self.values[y_name]), self.resolution))
        env = {**self.values, x_name: X, y_name: Y}
        mask = np.broadcast_to(np.asarray(fn(*[env[n] for n in names]), dtype=bool), X.shape)
        return (X, Y, mask), (self.values[x_name], self.values[y_name]), (x_name, y_name)

    # -------------------------------------------------------------------- drawing
    def _draw(self) -> None:
        from . import plot

        d = self.data
        ax_bode, ax_pz, ax_region = self.axes[:3]
        for ax in self.axes:
            ax.clear()
        plot._magnitudes(ax_bode, d["bode"])
        plot._poles_and_zeros(ax_pz, d["poles"], d["zeros"], d.get("loop_poles"))
        if "region" in d:
            plot._mask(ax_region, d["region"], d["point"], d["region_axes"],
                       "closed-loop stability")
        else:
            plot._note(ax_region, "no linear closed loop")
        if self._plane:
            plot._mask(self.axes[3], *d["validity_region"], "filter validity")
        self.figure.tight_layout()
        from IPython import get_ipython
        from IPython.display import clear_output, display

        if get_ipython() is not None:  # in a kernel: show the new figure in the output area
            with self.output:
                clear_output(wait=True)
                display(self.figure)


# ------------------------------------------------------------------------ helpers
def _slider(widgets, hyper: Hyperparameter):
    d, value = hyper.domain, hyper.default
    common = {"description": hyper.name, "continuous_update": False, "readout_format": ".4g",
              "style": {"description_width": "110px"}, "tooltip": f"{hyper.doc} {d}"}
    if d.lower is not None and d.upper is not None:
        lo, hi = _range(hyper, value)
        return widgets.FloatSlider(value=value, min=lo, max=hi, step=(hi - lo) / 2000, **common)
    if value > 0 and d.lower is not None and d.lower >= 0:
        centre = math.log10(value)
        return widgets.FloatLogSlider(value=value, base=10, min=centre - 3, max=centre + 3,
                                      step=0.01, **common)
    lo, hi = _range(hyper, value)
    if d.lower is not None and d.lower_closed:
        lo = d.lower  # e.g. weight_decay = 0, feature off
    return widgets.FloatSlider(value=value, min=lo, max=hi, step=(hi - lo) / 1000, **common)


def _fit(slider, value: float) -> None:
    """Widen ``slider``'s range so that it can hold ``value`` (a slider clamps silently)."""
    if hasattr(slider, "base"):  # log slider: min and max are exponents
        exponent = math.log(value, slider.base) if value > 0 else slider.min
        slider.min, slider.max = min(slider.min, exponent), max(slider.max, exponent)
    else:
        slider.min, slider.max = min(slider.min, value), max(slider.max, value)


def _range(hyper: Hyperparameter, value: float) -> tuple[float, float]:
    d = hyper.domain
    if d.lower is not None and d.upper is not None:
        width = d.upper - d.lower
        lo = d.lower + (0 if d.lower_closed else 1e-4 * width)
        hi = d.upper - (0 if d.upper_closed else 1e-4 * width)
        return lo, hi
    if d.lower is not None and d.lower >= 0:
        hi = max(1.0, 10 * value)
        return (d.lower if d.lower_closed and d.lower > 0 else 1e-3 * hi), hi
    return value - 1.0, value + 1.0


def _closed_loop(design: Design):
    import ctopt

    off = {n: 0.0 for n, v in design.defaults.items() if v == 0}
    try:
        loop = ctopt.closed_loop(design, curvature="h", **off)
        cond = ctopt.stability_conditions(loop)
    except CtoptError:
        return None, None, False
    names = {p.name for p in cond.parameters}
    if names - {"h", "r"} - set(design.hyperparameters):
        return None, None, False  # several frozen factors: no single plane
    return loop, cond, "r" in names


def _boolean_fn(cond) -> tuple[object, list[str]]:
    """A numpy function of ``cond``'s parameters (by sorted name) that broadcasts its
    arguments, conjunct by conjunct."""
    params = sorted(cond.free_symbols, key=lambda s: s.name)
    parts = sp.And.make_args(cond)
    fns = [sp.lambdify(params, part, modules="numpy") for part in parts]

    def evaluate(*args):
        out = np.asarray(True)
        for fn in fns:
            out = np.logical_and(out, fn(*args))
        return out

    return evaluate, [p.name for p in params]


def _validity_checks(fv) -> list[tuple[str, object, list[str]]]:
    out = []
    for f in fv.filters:
        for check in f.required:
            fn, names = _boolean_fn(f.conditions[check])
            out.append((f"{f.name}: {check}", fn, names))
    return out


def _validity_plane(design: Design):
    """(x, y, condition fn, its parameter names) of the first declared filter, in the plane of
    the last two hyperparameters its validity depends on; None when there is none."""
    if not design.filters:
        return None
    from .analysis.validity import filter_validity

    name = design.filters[0].output
    check = next(f for f in filter_validity(design).filters if f.name == name)
    cond = sp.And(*(check.conditions[c] for c in check.required))
    order = [hyper.name for hyper in design.hyper if hyper.symbol in cond.free_symbols]
    if len(order) < 2:
        return None
    fn, names = _boolean_fn(cond)
    return order[-2], order[-1], fn, names


def _region_y(design: Design, cond) -> str:
    names = [p.name for p in cond.parameters]
    for hyper in design.hyper:
        if hyper.name in names and hyper.name != "lr" and hyper.domain.upper is not None:
            return hyper.name
    return "lr" if "lr" in names else next(hyper.name for hyper in design.hyper)


def _known(tf, values):
    names = {s.name for s in tf.expr.free_symbols}
    return {n: v for n, v in values.items() if n in names}


def _only(cond, env):
    names = {p.name for p in cond.parameters}
    return {n: v for n, v in env.items() if n in names}


def _only_loop(loop, env):
    names = {p.name for p in loop.parameters}
    return {n: v for n, v in env.items() if n in names}


def _verdict_html(verdicts) -> str:
    rows = "".join(
        f"<li style='color:{'#1a7f37' if ok else '#cf222e'}'>{'&#10003;' if ok else '&#10007;'} "
        f"{_escape(label)}</li>" for label, ok in verdicts
    )
    return f"<b>Conditions at these values</b><ul style='margin:0'>{rows}</ul>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
