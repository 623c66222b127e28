"""One figure style for the whole toolkit.

Figures are sized for a single journal column (3.3 in) or two columns (6.8 in), use the
colour-blind-safe Okabe-Ito palette for categories and perceptually uniform colormaps for
heatmaps (``viridis`` sequential, ``RdBu_r`` diverging centred on 0), and keep text as text in
vector outputs (``svg.fonttype = "none"``, ``pdf.fonttype = 42``). No figure is taller than
:data:`MAX_HEIGHT` (map grids are split into pages, :func:`page_rows`); classes get
:func:`class_colours` (distinct up to 20), methods one colour in every figure
(:data:`METHOD_COLOURS`, :func:`method_colour`).

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
import numpy as np
from matplotlib.figure import Figure
from matplotlib.legend import Legend

__all__ = [
    "DIVERGING",
    "LITERAL",
    "MAX_HEIGHT",
    "METHOD_COLOURS",
    "OKABE_ITO",
    "SEQUENTIAL",
    "WIDTHS",
    "class_colours",
    "hide_bare_axes",
    "data_legend",
    "image_caption",
    "method_colour",
    "method_name",
    "method_order",
    "page_rows",
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
#: Tallest figure in inches (a journal page less its margins and caption): taller map grids are
#: split into several figures (pages).
MAX_HEIGHT = 9.0

#: One colour per attribution / explanation method, the same in every figure (maps, faithfulness,
#: sanity check); ``random`` (the reference order) is grey. Other methods get
#: :func:`method_colour`'s fallback.
METHOD_COLOURS: Mapping[str, str] = MappingProxyType({
    "rollout": OKABE_ITO[0],
    "gradient_rollout": OKABE_ITO[1],
    "integrated_gradients": OKABE_ITO[2],
    "layer_integrated_gradients": OKABE_ITO[5],
    "occlusion": OKABE_ITO[3],
    "feature_ablation": OKABE_ITO[4],
    "saliency": OKABE_ITO[7],
    "input_x_gradient": OKABE_ITO[6],
    "random": "0.5",
})
#: the toolkit's method names, shown with spaces; any other name is drawn as it is
_METHOD_NAMES = {"gradient_rollout": "gradient rollout",
                 "integrated_gradients": "integrated gradients",
                 "layer_integrated_gradients": "layer integrated gradients",
                 "feature_ablation": "feature ablation", "input_x_gradient": "input x gradient"}



def method_colour(method: object, fallback_index: int = 0) -> object:
    """The colour of ``method`` in every figure (:data:`METHOD_COLOURS`); an unknown method gets
    a colour of the tab10 palette that no known method uses, chosen by ``fallback_index``."""
    if str(method) in METHOD_COLOURS:
        return METHOD_COLOURS[str(method)]
    spare = [matplotlib.colormaps["tab10"](i) for i in (4, 5, 6, 8, 9)]
    return spare[fallback_index % len(spare)]


def method_order(methods: Sequence[object]) -> list:
    """``methods`` without repeats in one order for every figure: those of
    :data:`METHOD_COLOURS` in its order (``random`` last), then the others as given."""
    unique = list(dict.fromkeys(methods))
    known = [m for m in METHOD_COLOURS if m != "random"]

    def rank(m: object) -> tuple[int, int]:
        if str(m) == "random":
            return (2, 0)
        if str(m) in known:
            return (0, known.index(str(m)))
        return (1, unique.index(m))

    return sorted(unique, key=rank)


def method_name(method: object) -> str:
    """How a method is named in figures: the toolkit's names with spaces, others as given."""
    return _METHOD_NAMES.get(str(method), str(method))


def class_colours(n: int) -> list:
    """``n`` distinct colours for categories (classes), in order.

    Okabe-Ito (colour-blind safe) up to 8 categories; matplotlib's ``tab10`` up to 10; ``tab20``
    up to 20, its dark shades first so that neighbouring classes never get a light and a dark
    shade of one hue; beyond 20, evenly spaced hues of ``hsv`` (distinct, hard to tell apart).

    Parameters
    ----------
    n : int
        Number of categories.

    Returns
    -------
    list
        ``n`` matplotlib colours, no two equal.
    """
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        tab20 = matplotlib.colormaps["tab20"]
        return [tab20(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    hsv = matplotlib.colormaps["hsv"]
    return [hsv(i / n) for i in range(n)]


def image_caption(label: object | None = None, prediction: object | None = None) -> str:
    """The text under an image panel: its true label and the model's prediction.

    ``"label cross, pred cross"``; either part is left out when None; ``""`` when both are.
    """
    parts = ([] if label is None else [f"label {label}"]) + \
        ([] if prediction is None else [f"pred {prediction}"])
    return ", ".join(parts)


def page_rows(n_rows: int, row_height: float, extra: float = 0.0,
              max_height: float = MAX_HEIGHT) -> list[range]:
    """Split ``n_rows`` rows of panels into pages no taller than ``max_height``.

    Parameters
    ----------
    n_rows : int
        Rows of panels to draw.
    row_height : float
        Height of one row, inches.
    extra : float
        Height a page needs besides its rows (titles, colour bars), inches.
    max_height : float
        Tallest page, inches (:data:`MAX_HEIGHT`).

    Returns
    -------
    list of range
        Consecutive row indices per page, at least one row per page, rows spread evenly.
    """
    per_page = max(1, int((max_height - extra) // row_height))
    n_pages = max(1, -(-n_rows // per_page))
    size = -(-n_rows // n_pages)  # even pages: 7 rows at 6 a page -> 4 + 3, not 6 + 1
    return [range(i, min(i + size, n_rows)) for i in range(0, n_rows, size)] or [range(0)]


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
    by_rows: bool = False,
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
    by_rows : bool
        With ``ncol > 1``, place the entries row by row (left to right, then down) instead of
        matplotlib's column by column.
    **kwargs
        Passed to ``legend`` (``loc``, ``ncol``, ``markerscale`` ...).

    Returns
    -------
    matplotlib.legend.Legend
    """
    texts = [str(label) for label in labels]
    handles = list(handles)
    if len(texts) != len(handles):
        from .errors import DataError

        raise DataError(f"data_legend got {len(handles)} handles for {len(texts)} labels; "
                        "pass one label per handle.")
    ncol = int(kwargs.get("ncol", 1))
    if by_rows and ncol > 1 and len(texts) > ncol:
        # matplotlib fills columns first (np.array_split of the entries): order the entries so
        # that they read left to right, row by row
        rows = -(-len(texts) // ncol)
        order = [r * ncol + c for c in range(ncol) for r in range(rows)
                 if r * ncol + c < len(texts)]
        handles, texts = [handles[k] for k in order], [texts[k] for k in order]
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


def hide_bare_axes(axes: object) -> None:
    """Hide every x / y axis of ``axes`` (one Axes or an array of them) that shows nothing:
    no tick and no label.

    What is drawn stays the same; a hidden axis is skipped when the figure is laid out,
    measured and drawn, where matplotlib would otherwise walk its (empty) ticks and label in
    every pass. Call it once the labels are set: a label set afterwards on a hidden axis is
    not shown (``axis.set_visible(True)`` shows it again).

    Parameters
    ----------
    axes : matplotlib.axes.Axes or array of them
        Any shape (``Figure.subplots`` output); raveled.
    """
    for ax in np.ravel(axes):
        for axis in (ax.xaxis, ax.yaxis):
            if not (axis.get_label_text() or len(axis.get_majorticklocs())
                    or len(axis.get_minorticklocs())):
                axis.set_visible(False)
