"""Attention figures: per-layer/head maps over the image and mean attention distance.

Every function takes a result frame (from :mod:`probing.attention`) and returns a Figure; none
computes a statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..errors import DataError
from ..frames import require_columns
from ..style import (
    LITERAL,
    MAX_HEIGHT,
    SEQUENTIAL,
    WIDTHS,
    class_colours,
    data_legend,
    hide_bare_axes,
    image_caption,
    new_figure,
    page_rows,
)

__all__ = [
    "attention_grid_pages",
    "display_image",
    "panel_grids",
    "plot_attention_distance",
    "plot_attention_grid",
    "plot_multihead",
    "show_map",
]


def display_image(image: object) -> np.ndarray:
    """An image as ``(H, W)`` or ``(H, W, C)`` in [0, 1] for ``imshow``.

    Accepts ``(C, H, W)`` tensors/arrays (e.g. preprocessed inputs) and rescales min-max for
    display only.
    """
    img = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def show_map(ax, grid: np.ndarray, image: object | None = None, alpha: float = 0.6,
             vmin: float | None = None, vmax: float | None = None, cmap: str = SEQUENTIAL,
             norm: object | None = None):
    """Draw a ``(rows, cols)`` map on ``ax``, stretched over ``image`` when given.

    ``cmap`` and ``norm`` (e.g. a ``TwoSlopeNorm`` centred at 0; then ``vmin``/``vmax`` are
    not passed) go to ``imshow``. Returns the map's image artist (for a colour bar).
    """
    ax.set_xticks([])
    ax.set_yticks([])
    scale = {"norm": norm} if norm is not None else {"vmin": vmin, "vmax": vmax}
    if image is None:
        return ax.imshow(grid, cmap=cmap, interpolation="nearest", **scale)
    img = display_image(image)
    h, w = img.shape[:2]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
    return ax.imshow(grid, cmap=cmap, alpha=alpha, extent=(0, w, h, 0),
                     interpolation="nearest", **scale)


def _grid(frame: pd.DataFrame) -> np.ndarray:
    """The ``(rows, cols)`` map of one panel's ``row, col, value`` rows: the values at their
    sorted row and column positions, NaN where a cell has no row (``frame.pivot``'s grid)."""
    rows, r = np.unique(frame["row"].to_numpy(), return_inverse=True)
    cols, c = np.unique(frame["col"].to_numpy(), return_inverse=True)
    values = frame["value"].to_numpy()
    if len(np.unique(r * len(cols) + c)) < len(values):
        raise DataError("a map has two values for one (row, col) cell; pass one row per cell.")
    grid = np.full((len(rows), len(cols)), np.nan, dtype=np.result_type(values, np.float32))
    grid[r, c] = values
    return grid


class _Grids(dict):
    """Panel maps by key; a missing panel is a DataError naming it."""

    def __missing__(self, key: tuple) -> np.ndarray:
        raise DataError(f"the frame has no map for {dict(zip(self.keys_, key))}; pass rows "
                        "for every panel shown.")


def panel_grids(frame: pd.DataFrame, keys: list[str]) -> dict[tuple, np.ndarray]:
    """``{key values: (rows, cols) map}`` of every panel of ``frame``, one group per
    combination of the ``keys`` columns (:func:`_grid` of each)."""
    out = _Grids((key if isinstance(key, tuple) else (key,), _grid(g))
                 for key, g in frame.groupby(keys, sort=False))
    out.keys_ = list(keys)
    return out


def _one_image(frame: pd.DataFrame, image_id: object | None) -> pd.DataFrame:
    require_columns(frame, ("image_id", "layer", "head", "row", "col", "value"), "frame",
                    "pass attention_map_frame()'s output")
    if image_id is None:
        image_id = frame["image_id"].iloc[0]
    sub = frame[frame["image_id"] == image_id]
    if sub.empty:
        raise DataError(f"image_id {image_id!r} is not in the frame; pass one of its image ids.")
    return sub


def _page_title(image_id: object, label: object, prediction: object, page: int,
                n_pages: int) -> str:
    caption = image_caption(label, prediction)
    title = f"image {image_id}" + (f": {caption}" if caption else "")
    return title + (f" (page {page} of {n_pages})" if n_pages > 1 else "")


def _grid_geometry(n_heads: int) -> tuple[float, float]:
    """Figure width and panel size of the layers x heads grid, inches."""
    # room for row labels and the colour bar; few heads get panels of at most 1.3 in
    panel = min(1.3, (WIDTHS["double"] - 0.9) / max(n_heads, 1))
    return panel * max(n_heads, 1) + 0.9, panel


def attention_grid_pages(frame: pd.DataFrame, max_height: float = MAX_HEIGHT) -> list[list]:
    """The layers on each page of :func:`plot_attention_grid` for one image's ``frame``.

    Returns
    -------
    list of list
        Layers per page, in order; every layer of the frame on exactly one page.
    """
    layers = sorted(frame["layer"].unique())
    _, panel = _grid_geometry(frame["head"].nunique())
    rows = page_rows(len(layers), panel * 1.04, extra=0.45, max_height=max_height)
    return [[layers[r] for r in page] for page in rows]


def plot_attention_grid(
    frame: pd.DataFrame, image: object | None = None, image_id: object | None = None,
    alpha: float = 0.6, label: object | None = None, prediction: object | None = None,
    max_height: float = MAX_HEIGHT,
) -> list[Figure]:
    """Layers x heads grid of one image's attention maps, overlaid on the image, in pages.

    Layers (rows) are split into several figures when the grid would be taller than
    ``max_height``; every page has the same colour scale, its colour bar and a title naming the
    image, its true label and the model's prediction.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.attention_map_frame` output.
    image : array-like, optional
        The image ``(H, W, C)`` or ``(C, H, W)``; maps are drawn alone when None.
    image_id : optional
        Which image of the frame (the first by default).
    alpha : float
        Opacity of the maps over the image.
    label, prediction : optional
        The image's true label and the model's predicted class, shown in the title.
    max_height : float
        Tallest page, inches.

    Returns
    -------
    list of matplotlib.figure.Figure
        One figure per page, layers in order.
    """
    sub = _one_image(frame, image_id)
    image_id = sub["image_id"].iloc[0]
    heads = sorted(sub["head"].unique())
    width, panel = _grid_geometry(len(heads))
    pages = attention_grid_pages(sub, max_height)
    vmax = float(sub["value"].max())
    grids = panel_grids(sub, ["layer", "head"])
    figures = []
    for k, layers in enumerate(pages, 1):
        height = len(layers) * panel * 1.04 + 0.45
        fig, axes = new_figure(width, aspect=height / width, nrows=len(layers),
                               ncols=len(heads), squeeze=False)
        im = None
        for i, layer in enumerate(layers):
            for j, head in enumerate(heads):
                ax = axes[i, j]
                im = show_map(ax, grids[layer, head], image, alpha, 0.0, vmax)
                if i == 0:
                    ax.set_title(f"head {head}", **LITERAL)
                if j == 0:
                    ax.set_ylabel(f"layer {layer}", **LITERAL)
        hide_bare_axes(axes)
        fig.colorbar(im, ax=axes, shrink=min(0.8, 3.0 / height), label="attention weight")
        fig.suptitle(_page_title(image_id, label, prediction, k, len(pages)), fontsize=8,
                     **LITERAL)
        figures.append(fig)
    return figures


#: most panels in one row of the multi-head figure; more heads wrap onto further rows
_MULTIHEAD_COLUMNS = 8


def plot_multihead(
    frame: pd.DataFrame, layer: int | None = None, image: object | None = None,
    image_id: object | None = None, alpha: float = 0.6, label: object | None = None,
    prediction: object | None = None,
) -> Figure:
    """Multi-head attention visualisation: the image, then one panel per head of one layer.

    Panels wrap onto further rows beyond 8 per row.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.attention_map_frame` output.
    layer : int, optional
        Layer to show (the last by default).
    image, image_id, alpha
        As in :func:`plot_attention_grid`.
    label, prediction : optional
        The image's true label and the model's predicted class, shown under the image.
    """
    sub = _one_image(frame, image_id)
    image_id = sub["image_id"].iloc[0]
    layer = int(sub["layer"].max()) if layer is None else layer
    sub = sub[sub["layer"] == layer]
    if sub.empty:
        raise DataError(f"layer {layer} is not in the frame; pass one of its layers.")
    heads = sorted(sub["head"].unique())
    n = len(heads) + (image is not None)
    ncols = min(n, _MULTIHEAD_COLUMNS)
    nrows = -(-n // ncols)
    width = WIDTHS["double"]
    panel = (width - 0.7) / ncols
    height = nrows * panel * 1.1 + 0.5
    fig, axes = new_figure(width, aspect=height / width, nrows=nrows, ncols=ncols,
                           squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.set_axis_off()
    axes = axes[:n]
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(display_image(image), cmap="gray" if display_image(image).ndim == 2 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"image {image_id}", **LITERAL)
        ax.set_xlabel(image_caption(label, prediction), **LITERAL)
    vmax = float(sub["value"].max())
    im = None
    grids = panel_grids(sub, ["head"])
    for ax, head in zip(axes, heads):
        im = show_map(ax, grids[head,], image, alpha, 0.0, vmax)
        ax.set_title(f"head {head}", **LITERAL)
        ax.set_xlabel(" ")  # as the captioned image: the panels of a row align
    hide_bare_axes(axes)
    fig.suptitle(f"layer {layer}", fontsize=8, **LITERAL)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return fig


#: one marker per head (cycled beyond 12 heads); colour also tells heads apart
_HEAD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def plot_attention_distance(frame: pd.DataFrame, jitter: float = 0.0,
                            uniform_px: float | None = None) -> Figure:
    """Mean attention distance per head against depth (ViT paper, Fig. 7 right).

    Each head has its own marker and colour, listed in the legend; with a ``model`` column the
    colour tells models apart and the marker heads.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.mean_attention_distance` summary (``layer, head,
        distance_px``); one dot per head, with a ``ci_low``..``ci_high`` whisker when present.
        May hold a ``model`` column (one colour per model).
    jitter : float
        Horizontal offset between heads of a layer, in layers (0: stacked as in the paper).
    uniform_px : float, optional
        Mean distance under uniform attention (pixels), drawn as a labelled dashed line.
    """
    if not {"layer", "head", "distance_px"} <= set(frame.columns):
        raise DataError(
            "frame lacks layer/head/distance_px; pass mean_attention_distance()'s output."
        )
    heads = sorted(frame["head"].unique())
    models = list(pd.unique(frame["model"])) if "model" in frame.columns else [None]
    per_head_colour = models == [None]
    head_colours = class_colours(len(heads)) if per_head_colour else ["0.35"] * len(heads)
    model_colours = class_colours(len(models))
    rows = -(-len(heads) // 4) + (len(models) > 1) + (uniform_px is not None)
    fig, ax = new_figure("single", aspect=0.8 + 0.06 * rows)
    n_heads = max(len(heads), 1)
    handles, names = [], []
    for m, model in enumerate(models):
        g_model = frame if model is None else frame[frame["model"] == model]
        for h, head in enumerate(heads):
            g = g_model[g_model["head"] == head]
            x = g["layer"].to_numpy(float) + jitter * ((h + 0.5) / n_heads - 0.5)
            colour = head_colours[h] if per_head_colour else model_colours[m]
            ax.scatter(x, g["distance_px"], s=12, marker=_HEAD_MARKERS[h % len(_HEAD_MARKERS)],
                       color=colour, alpha=0.85, linewidths=0)
            if {"ci_low", "ci_high"} <= set(g.columns):  # 95% interval whiskers
                ax.vlines(x, g["ci_low"], g["ci_high"], color=colour, alpha=0.6, linewidth=0.6)
    if not per_head_colour:
        for m, model in enumerate(models):
            handles.append(Line2D([], [], linestyle="", marker="s", color=model_colours[m]))
            names.append(model)
    for h, head in enumerate(heads):
        handles.append(Line2D([], [], linestyle="", marker=_HEAD_MARKERS[h % len(_HEAD_MARKERS)],
                              color=head_colours[h], markersize=4))
        names.append(f"head {head}")
    top = float(frame["distance_px"].max())
    if "ci_high" in frame.columns and np.isfinite(frame["ci_high"]).any():
        top = max(top, float(np.nanmax(frame["ci_high"])))
    if uniform_px is not None:
        handles.append(ax.axhline(uniform_px, color="0.4", linestyle="--", linewidth=0.8))
        names.append(f"uniform ({uniform_px:.1f} px)")
        top = max(top, float(uniform_px))
    data_legend(fig, handles, names, loc="outside lower center", ncol=4, by_rows=True,
                handletextpad=0.2, columnspacing=0.8)
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_ylim(0, top * 1.08 or 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig
