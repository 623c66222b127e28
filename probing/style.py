"""One figure style for the whole toolkit.

Figures are sized for a single journal column (3.3 in) or two columns (6.8 in), use the
colour-blind-safe Okabe-Ito palette for categories and perceptually uniform colormaps for
heatmaps (``viridis`` sequential, ``RdBu_r`` diverging centred on 0), and keep text as text in
vector outputs (``svg.fonttype = "none"``, ``pdf.fonttype = 42``).

Override the style with ``paper_style(overrides={...})``, with :func:`style_overrides` around
figure-making code, or with a run spec's top-level ``style`` table (matplotlib rc names, e.g.
``style = { "font.size" = 9 }``).

Text that comes from data (label values, class names, column names, image ids, names passed by
a caller) is drawn literally: pass :data:`LITERAL` as Text properties (``ax.set_title(name,
**LITERAL)``, ``ax.set_xticks(ticks, names, **LITERAL)``) and build legends of data labels with
:func:`data_legend`. Only the toolkit's own fixed labels may use mathtext (e.g. ``$R^2$``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Literal

import matplotlib
from matplotlib.figure import Figure
from matplotlib.legend import Legend

__all__ = [
    "DIVERGING",
    "LITERAL",
    "OKABE_ITO",
    "SEQUENTIAL",
    "WIDTHS",
    "data_legend",
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

#: Text properties that draw a string exactly as given: no mathtext (``$...$`` stays two dollar
#: signs and what lies between them) and no TeX even under ``text.usetex``. Use them for every
#: text that comes from data.
LITERAL: Mapping[str, object] = MappingProxyType({"parse_math": False, "usetex": False})


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
            from .errors import ConfigError

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


def data_legend(
    where: object,
    handles: Sequence[object],
    labels: Sequence[object],
    title: object | None = None,
    **kwargs: object,
) -> Legend:
    """A legend whose entry texts (and title) are drawn literally.

    Every label is shown, also one starting with ``_`` (which matplotlib's own legend skips), and
    none is parsed as mathtext or TeX: a class named ``$\\frac{a}$`` is drawn as those characters.

    Parameters
    ----------
    where : matplotlib Axes or Figure
        What the legend belongs to (``where.legend`` is called).
    handles : sequence of Artist
        One artist per entry.
    labels : sequence
        One label per handle; each is drawn as ``str(label)``.
    title : optional
        Legend title, drawn literally (no title when None).
    **kwargs
        Passed to ``legend`` (``loc``, ``ncol``, ``markerscale`` ...).

    Returns
    -------
    matplotlib.legend.Legend
    """
    texts = [str(label) for label in labels]
    if len(texts) != len(handles):
        from .errors import DataError

        raise DataError(f"data_legend got {len(handles)} handles for {len(texts)} labels; "
                        "pass one label per handle.")
    # placeholders that matplotlib never drops or parses; the real texts are set afterwards.
    # Made in the toolkit style, so every legend gets its fonts whoever calls.
    with paper_style():
        legend = where.legend(list(handles), [f"entry {i}" for i in range(len(texts))],
                              **kwargs)
    for text, label in zip(legend.get_texts(), texts):
        text.set_text(label)
        text.update(LITERAL)
    if title is not None:
        legend.set_title(str(title))
        legend.get_title().update(LITERAL)
    return legend
