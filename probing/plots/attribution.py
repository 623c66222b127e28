"""Attribution figures: maps by method, faithfulness curves, sanity-check curves.

Every function takes a result frame (from :mod:`probing.attribution` or
:func:`probing.attention.relevance_frame`) and returns a Figure; none computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import DataError
from ..frames import require_columns
from ..style import (
    DIVERGING,
    LITERAL,
    MAX_HEIGHT,
    SEQUENTIAL,
    WIDTHS,
    data_legend,
    hide_bare_axes,
    image_caption,
    method_colour,
    method_name,
    method_order,
    new_figure,
    page_rows,
)
from .attention import display_image, panel_grids, show_map

__all__ = ["SIGNED_METHODS", "method_map_pages", "plot_faithfulness", "plot_method_maps",
           "plot_sanity"]

#: methods whose maps are signed (evidence for and against the class): drawn on a diverging
#: colour map centred at 0; so is any map with negative values
SIGNED_METHODS = frozenset({"integrated_gradients", "layer_integrated_gradients", "occlusion",
                            "feature_ablation", "input_x_gradient", "saliency_signed"})


def _column_scale(values: np.ndarray, signed: bool) -> tuple[str, object]:
    """Colour map and norm of one method's maps: diverging and symmetric about 0 when signed,
    sequential from 0 (or the minimum, when negative) otherwise."""
    finite = values[np.isfinite(values)]
    if signed:
        top = float(np.abs(finite).max()) if finite.size else 1.0
        top = top or 1.0
        return DIVERGING, TwoSlopeNorm(vcenter=0.0, vmin=-top, vmax=top)
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    return SEQUENTIAL, Normalize(lo, hi if hi > lo else lo + 1.0)


def _lookup(values: Mapping | Sequence | None, image_id: object, i: int) -> object:
    """The value of image ``image_id`` (the ``i``-th shown) in a mapping or a sequence."""
    if values is None:
        return None
    if isinstance(values, Mapping):
        return values.get(image_id)
    return values[i] if i < len(values) else None


_MAX_PANEL = 1.3  # inches: few columns get panels of this size, not the whole page width
_MAPS_EXTRA = 0.95  # inches a page of maps needs for method titles and colour bars


def _maps_geometry(ncols: int) -> tuple[float, float]:
    """Figure width and panel size of the images x methods grid, inches."""
    panel = min(_MAX_PANEL, (WIDTHS["double"] - 0.4) / max(ncols, 1))
    return panel * max(ncols, 1) + 0.4, panel


def method_map_pages(image_ids: Sequence, n_methods: int, with_images: bool = True,
                     max_height: float = MAX_HEIGHT) -> list[list]:
    """The image ids on each page of :func:`plot_method_maps`.

    Parameters
    ----------
    image_ids : sequence
        The images shown, in order.
    n_methods : int
        Methods (map columns) shown.
    with_images : bool
        Whether an image column leads (``images`` passed).
    max_height : float
        Tallest page, inches.

    Returns
    -------
    list of list
        Image ids per page; every id on exactly one page.
    """
    ids = list(image_ids)
    _, panel = _maps_geometry(n_methods + bool(with_images))
    rows = page_rows(len(ids), panel * 1.12, extra=_MAPS_EXTRA, max_height=max_height)
    return [[ids[r] for r in page] for page in rows]


def plot_method_maps(
    frame: pd.DataFrame,
    images: Mapping[object, object] | None = None,
    image_ids: Sequence | None = None,
    methods: Sequence[str] | None = None,
    alpha: float = 0.6,
    labels: Mapping | Sequence | None = None,
    predictions: Mapping | Sequence | None = None,
    units: Mapping[str, str] | None = None,
    max_height: float = MAX_HEIGHT,
) -> list[Figure]:
    """One row per image, one column per method (rollout, gradient rollout, IG, occlusion ...),
    in pages no taller than ``max_height``.

    With ``images``, the first column shows each image with its true label and the model's
    prediction, and unsigned maps are overlaid on it (signed maps are drawn opaque). Each method
    has one colour scale over all images and pages, with its colour
    bar under its column: signed methods (:data:`SIGNED_METHODS`, or any map with negative
    values) on a diverging map centred at 0 with symmetric limits, the others sequential.

    Parameters
    ----------
    frame : pandas.DataFrame
        Tidy maps ``image_id, method, row, col, value`` (several methods concatenated).
    images : dict, optional
        ``{image_id: image}`` drawn under the maps (``(H, W, C)`` or ``(C, H, W)``).
    image_ids, methods : sequence, optional
        Which images and methods, in order (all, in order of appearance, by default).
    alpha : float
        Opacity of the maps over the images.
    labels, predictions : mapping or sequence, optional
        True label and predicted class per image: ``{image_id: value}`` or one value per shown
        image, in order.
    units : mapping, optional
        ``{method: colour-bar label}`` (e.g. ``"logit per patch"``); ``"relevance"`` otherwise.
    max_height : float
        Tallest page, inches.

    Returns
    -------
    list of matplotlib.figure.Figure
        One figure per page, images in order.
    """
    require_columns(frame, ("image_id", "method", "row", "col", "value"), "frame",
                    "pass attribute()'s output")
    ids = list(pd.unique(frame["image_id"])) if image_ids is None else list(image_ids)
    methods = list(pd.unique(frame["method"])) if methods is None else list(methods)
    if not ids or not methods:
        raise DataError("plot_method_maps got no image or no method; pass a non-empty frame.")
    scales = {}
    for method in methods:
        values = frame.loc[frame["method"] == method, "value"].to_numpy(dtype=np.float64)
        signed = str(method) in SIGNED_METHODS or bool((values < 0).any())
        scales[method] = _column_scale(values, signed)
    lead = images is not None
    ncols = len(methods) + lead
    width, panel = _maps_geometry(ncols)
    pages = method_map_pages(ids, len(methods), lead, max_height)
    position = {image_id: n for n, image_id in enumerate(ids)}
    grids = panel_grids(frame, ["image_id", "method"])
    figures = []
    for k, page in enumerate(pages, 1):
        height = len(page) * panel * 1.12 + _MAPS_EXTRA
        fig, axes = new_figure(width, aspect=height / width, nrows=len(page), ncols=ncols,
                               squeeze=False)
        for i, image_id in enumerate(page):
            n = position[image_id]
            image = None if images is None else images.get(image_id)
            if lead:
                ax = axes[i, 0]
                ax.set_xticks([])
                ax.set_yticks([])
                if image is not None:
                    shown = display_image(image)
                    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
                ax.set_xlabel(image_caption(_lookup(labels, image_id, n),
                                            _lookup(predictions, image_id, n)), **LITERAL)
                ax.set_ylabel(f"image {image_id}", **LITERAL)
                if i == 0:
                    ax.set_title("image", **LITERAL)
            for j, method in enumerate(methods, lead):
                grid = grids[image_id, method]
                cmap, norm = scales[method]
                # a signed map is drawn opaque: a diverging map over a coloured image is
                # unreadable; the image is in the first column of the same row
                under = None if cmap == DIVERGING and lead else image
                show_map(axes[i, j], grid, under, alpha, cmap=cmap, norm=norm)
                if lead:  # same decorations as the captioned image: panels of a row align
                    axes[i, j].set_xlabel(" ")
                if i == 0:
                    axes[i, j].set_title(method_name(method), **LITERAL)
                if j == 0:
                    axes[i, j].set_ylabel(f"image {image_id}", **LITERAL)
        hide_bare_axes(axes)
        for j, method in enumerate(methods, lead):
            cmap, norm = scales[method]
            bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, j],
                               location="bottom", shrink=0.9, aspect=12, pad=0.02)
            bar.set_label((units or {}).get(method, "relevance"), fontsize=6, **LITERAL)
            bar.ax.tick_params(labelsize=5.5)
            bar.ax.xaxis.set_major_locator(MaxNLocator(3, symmetric=cmap == DIVERGING))
        if len(pages) > 1:
            fig.suptitle(f"page {k} of {len(pages)}", fontsize=7)
        figures.append(fig)
    return figures


def plot_faithfulness(curves: pd.DataFrame) -> Figure:
    """Mean deletion / insertion curves per method (one panel per mode).

    Parameters
    ----------
    curves : pandas.DataFrame
        A summary ``method, mode, fraction, prob`` (e.g. the mean over images of
        :attr:`FaithfulnessResult.curves`, computed by the caller), with an optional
        ``ci_low``..``ci_high`` band; the ``"random"`` method is drawn dashed grey.
    """
    require_columns(curves, ("method", "mode", "fraction", "prob"), "curves",
                    "pass FaithfulnessResult.curves")
    modes = list(pd.unique(curves["mode"]))
    fig, axes = new_figure("double", aspect=0.38, nrows=1, ncols=len(modes), squeeze=False)
    handles: dict[str, object] = {}
    for ax, mode in zip(axes[0], modes):
        sub = curves[curves["mode"] == mode]
        for k, method in enumerate(method_order(sub["method"])):
            g = sub[sub["method"] == method]
            g = g.sort_values("fraction")
            style = {"color": method_colour(method, k),
                     "linestyle": "--" if method == "random" else "-"}
            (line,) = ax.plot(g["fraction"], g["prob"], **style)
            if {"ci_low", "ci_high"} <= set(g.columns):  # interval band
                ax.fill_between(g["fraction"], g["ci_low"], g["ci_high"], color=style["color"],
                                alpha=0.15, linewidth=0)
            handles.setdefault(method_name(method), line)
        ax.set_title(str(mode), **LITERAL)
        ax.set_xlabel(f"fraction of patches {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("target-class probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, None)
    data_legend(axes[0, -1], list(handles.values()), list(handles))
    return fig


def plot_sanity(summary: pd.DataFrame) -> Figure:
    """Cascading randomisation curves: mean Spearman correlation per method against the
    randomised depth (Adebayo et al. 2018, Fig. 2 style).

    Parameters
    ----------
    summary : pandas.DataFrame
        :attr:`SanityResult.summary` (``method, step, randomized, spearman_mean,
        spearman_std``); the band is ``ci_low``..``ci_high`` when present, else ± std.
    """
    need = {"method", "step", "randomized", "spearman_mean"}
    if not need <= set(summary.columns):
        raise DataError(
            "summary lacks method/step/randomized/spearman_mean; pass SanityResult.summary."
        )
    fig, ax = new_figure("single", aspect=0.95)
    handles, names = [], []
    for k, method in enumerate(method_order(summary["method"])):
        g = summary[summary["method"] == method]
        g = g.sort_values("step")
        color = method_colour(method, k)
        handles += ax.plot(g["step"], g["spearman_mean"], marker="o", color=color)
        names.append(method_name(method))
        if {"ci_low", "ci_high"} <= set(g.columns):  # interval band
            ax.fill_between(g["step"], g["ci_low"], g["ci_high"], color=color, alpha=0.15,
                            linewidth=0)
        elif "spearman_std" in g:
            ax.fill_between(g["step"], g["spearman_mean"] - g["spearman_std"],
                            g["spearman_mean"] + g["spearman_std"], color=color, alpha=0.15,
                            linewidth=0)
    labels = summary.drop_duplicates("step").sort_values("step")
    ax.set_xticks(labels["step"], [str(v) for v in labels["randomized"]], rotation=60, ha="right",
                  **LITERAL)
    ax.axhline(0, color="0.7", linewidth=0.6)
    ax.set_xlabel("randomised up to (cascading, top first)")
    ax.set_ylabel("Spearman rank correlation\nwith original map")
    data_legend(fig, handles, names, loc="outside lower center", ncol=2, by_rows=True)
    return fig
