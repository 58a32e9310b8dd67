"""Report figures: Bode, pole-zero, root locus and stability region of a design at given values,
drawn with :mod:`ctopt.plot` and saved to a file (``ctopt plot``, ``ctopt report``).

Example:
    >>> from ctopt.report.figures import KINDS
    >>> KINDS
    ('bode', 'pole-zero', 'root-locus', 'region')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..design import Design
from ..errors import OptionError, UnsupportedError

__all__ = ["KINDS", "save_plot"]

#: The kinds of figure :func:`save_plot` draws.
KINDS = ("bode", "pole-zero", "root-locus", "region")


def save_plot(design: Design, kind: str, path: str | Path,
              values: Mapping[str, float] | None = None) -> Path:
    """Draw ``kind`` (``"bode"``, ``"pole-zero"``, ``"root-locus"`` or ``"region"``) for
    ``design`` at ``values`` and save it to ``path`` (format from the suffix).

    Example:
        >>> import ctopt
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "sgd-region.png"
        >>> save_plot(ctopt.zoo.get("sgd"), "region", path).stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import plot

    kinds = dict(zip(KINDS, (_bode, _pole_zero, _root_locus, _region), strict=True))
    if kind not in kinds:
        raise OptionError(f"unknown plot kind {kind!r}; allowed: {', '.join(kinds)}")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise OptionError(f"cannot tell the image format of {str(path)!r}; use .png, .svg or .pdf")
    values = design.check_values(**dict(values or {}))
    fig = kinds[kind](plot, design, values)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _moments(design: Design) -> dict:
    """Transfer functions of the design's moments (realisation states left out; ``theta``'s
    only when there is no moment)."""
    from ..analysis.transfer import transfer_functions

    internal = {s for f in design.filters for s in f.states[1:]}
    tfs = {n: tf for n, tf in transfer_functions(design).items() if n not in internal}
    moments = {n: tf for n, tf in tfs.items() if n != "theta"}
    return moments or tfs


def _known(tf, values):
    names = {s.name for s in tf.expr.free_symbols}
    return {n: v for n, v in values.items() if n in names}


def _bode(plot, design, values):
    import matplotlib.pyplot as plt

    tfs = _moments(design)
    if not tfs:
        raise UnsupportedError(f"{design.name} has no linear filter to draw")
    fig, (mag, phase) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 5.2))
    for name, tf in tfs.items():
        drawn = plot.bode(tf, ax=(mag, phase), **_known(tf, values))
        drawn.lines[0].set_label(f"H_{name} (from {tf.input})")
    mag.set_title(f"{design.name}: moment filters")
    mag.legend(fontsize=8)
    return fig


def _pole_zero(plot, design, values):
    import matplotlib.pyplot as plt

    tfs = _moments(design)
    if not tfs:
        raise UnsupportedError(f"{design.name} has no linear filter to draw")
    fig, axes = plt.subplots(1, len(tfs), figsize=(4.6 * len(tfs), 4.6), squeeze=False)
    for ax, (name, tf) in zip(axes[0], tfs.items(), strict=True):
        plot.pole_zero(tf, ax=ax, **_known(tf, values))
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"H_{name} (from {tf.input})")
    fig.tight_layout()
    return fig


def _loop_and_range(design, values):
    """The closed loop (features at 0 switched off; a frozen factor r = 1, so h reads h/r) and
    the largest stable curvature at ``values`` (None when unbounded or undecided)."""
    import ctopt

    from ..analysis.maps import radius_curve

    off = {n: 0.0 for n, v in values.items() if v == 0}
    loop = ctopt.closed_loop(design, curvature="h", **off)
    frozen = {r.name: 1.0 for r in loop.frozen}
    if len(frozen) > 1:
        raise UnsupportedError(f"{design.name}'s closed loop has several frozen factors")
    env = {**{n: v for n, v in values.items() if n not in off}, **frozen}
    env = {n: v for n, v in env.items() if n in {p.name for p in loop.parameters}}
    curve = radius_curve(loop, "h", np.geomspace(1e-6, 1e8, 2000), **env)
    h_max = None if curve.stable[-1] else curve.largest_stable
    return loop, env, h_max


def _root_locus(plot, design, values):
    import matplotlib.pyplot as plt

    loop, env, h_max = _loop_and_range(design, values)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    top = 1.5 * h_max if h_max else 10.0 / max(values.get("lr", 1.0), 1e-12)
    plot.root_locus(loop, h=np.linspace(0, top, 600), ax=ax, **env)
    if loop.frozen:
        r, expr = next(iter(loop.frozen.items()))
        ax.set_title(f"{ax.get_title()} (h in units of {r} = {expr})", fontsize=9)
    return fig


def _region(plot, design, values):
    import matplotlib.pyplot as plt

    from ..analysis.maps import radius_curve

    loop, env, _ = _loop_and_range(design, values)
    names = [p.name for p in loop.parameters]
    if "lr" not in names:
        raise UnsupportedError(f"{design.name}'s closed loop has no learning rate to draw")
    y_name = next((hyper.name for hyper in design.hyper if hyper.name in names
                   and hyper.name != "lr" and hyper.domain.upper is not None), None)
    at = {**env, "h": 1.0}
    if y_name is None:  # the learning rate alone: draw the (lr, h) plane
        y_name, ys, values = "h", np.linspace(0.0, 4.0, 60), {**values, "h": 1.0}
    else:
        hyper = design.hyperparameters[y_name]
        upper = hyper.domain.upper - (0 if hyper.domain.upper_closed else 1e-3)
        ys = np.linspace(hyper.domain.lower or 0.0, upper, 60)
    probe = {**at, y_name: values[y_name]}
    probe.pop("lr")
    lr_max = radius_curve(loop, "lr", np.geomspace(1e-6, 1e6, 600), **probe).largest_stable
    lr_max = 1.0 if lr_max is None else lr_max
    xs = np.linspace(lr_max / 200, 1.6 * lr_max, 80)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    rest = {n: v for n, v in at.items() if n not in ("lr", y_name)}
    point = (values["lr"], values[y_name]) if values["lr"] <= xs[-1] else None
    plot.region(loop, ("lr", xs), (y_name, ys), point=point, ax=ax, **rest)
    unit = " (h in units of the frozen r)" if loop.frozen else ""
    where = "" if y_name == "h" else " at h = 1"
    ax.set_title(f"{design.name}: stable region{where}{unit}", fontsize=9)
    return fig
