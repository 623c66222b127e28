"""One figure style for the whole toolkit.

Figures are sized for a single journal column (3.3 in) or two columns (6.8 in), use the
colour-blind-safe Okabe-Ito palette for categories and perceptually uniform colormaps for
heatmaps (``viridis`` sequential, ``RdBu_r`` diverging centred on 0), and keep text as text in
vector outputs (``svg.fonttype = "none"``, ``pdf.fonttype = 42``).

Override the style with ``paper_style(overrides={...})``, with :func:`style_overrides` around
figure-making code, or with a run spec's top-level ``style`` table (matplotlib rc names, e.g.
``style = { "font.size" = 9 }``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import matplotlib
from matplotlib.figure import Figure

__all__ = [
    "DIVERGING",
    "OKABE_ITO",
    "SEQUENTIAL",
    "WIDTHS",
    "new_figure",
    "paper_style",
    "style_overrides",
]

#: Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
#: Figure widths in inches.
WIDTHS = {"single": 3.3, "double": 6.8}

_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 220,
    "savefig.bbox": "tight",
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "axes.grid": False,
    "image.cmap": SEQUENTIAL,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "probing",  # stable SVG ids: the same figure gives the same bytes
}
_OVERRIDES: dict[str, object] = {}


@contextmanager
def paper_style(overrides: Mapping[str, object] | None = None) -> Iterator[None]:
    """Context manager applying the toolkit's matplotlib style (plus ``overrides``)."""
    rc = dict(_RC)
    rc["axes.prop_cycle"] = matplotlib.cycler(color=list(OKABE_ITO))
    rc.update(_OVERRIDES)
    rc.update(overrides or {})
    with matplotlib.rc_context(rc):
        yield


@contextmanager
def style_overrides(overrides: Mapping[str, object] | None) -> Iterator[None]:
    """Apply matplotlib rc ``overrides`` to every figure made (and saved) inside the context.

    This is how a run spec's ``style`` table reaches the figures of every analysis.
    """
    saved = dict(_OVERRIDES)
    try:
        bad = [k for k in (overrides or {}) if k not in matplotlib.rcParams]
        if bad:
            from ..errors import ConfigError

            raise ConfigError(
                f"style key {bad[0]!r} is not a matplotlib rcParam; use names such as "
                "'font.size' or 'axes.linewidth'."
            )
        _OVERRIDES.update(overrides or {})
        yield
    finally:
        _OVERRIDES.clear()
        _OVERRIDES.update(saved)


def new_figure(
    width: Literal["single", "double"] | float = "single",
    aspect: float = 0.75,
    nrows: int = 1,
    ncols: int = 1,
    **kwargs: object,
) -> tuple[Figure, object]:
    """Create a figure in the toolkit style.

    Parameters
    ----------
    width : {"single", "double"} or float
        Column width name or a width in inches.
    aspect : float
        Height / width.
    nrows, ncols : int
        Subplot grid, passed to ``Figure.subplots``.
    **kwargs
        Passed to ``Figure.subplots``; ``layout`` (default ``"constrained"``) to the Figure.

    Returns
    -------
    (Figure, axes)
        As ``plt.subplots`` returns them (the figure is not registered with pyplot).
    """
    w = WIDTHS[width] if isinstance(width, str) else float(width)
    layout = kwargs.pop("layout", "constrained")
    with paper_style():
        # a Figure outside pyplot's registry: nothing to close, nothing kept alive by pyplot
        fig = Figure(figsize=(w, w * aspect), layout=layout)
        axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes
