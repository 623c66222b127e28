"""Figures of embedding maps and explained variance (drawing only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..style import (
    LITERAL,
    MAX_HEIGHT,
    SEQUENTIAL,
    class_colours,
    data_legend,
    hide_bare_axes,
    new_figure,
)

__all__ = ["plot_embedding_maps", "plot_explained_variance"]


def _is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values.dtype) or values.nunique() <= 20


def _categories(values: pd.Series) -> list[str]:
    """Category labels in natural order (numbers numerically, the rest alphabetically)."""
    unique = pd.unique(values.dropna())
    try:
        unique = sorted(unique)
    except TypeError:
        unique = sorted(unique, key=str)
    return [str(v) for v in unique]


#: Facet words as people write them (kinds and method names in panel titles).
_WORDS = {"cls": "CLS", "pca": "PCA", "tsne": "t-SNE", "umap": "UMAP", "reg": "register",
          "dist": "distillation"}


def _facet_name(name: str, value: object) -> str:
    """A facet's title: ``layer 3``; a method or kind by itself, spelled for people."""
    text = " ".join(_WORDS.get(w.lower(), w) for w in str(value).split(" "))
    return f"{name} {text}" if name == "layer" else text


def _scatter(ax, panel: pd.DataFrame, color: str, cats: list | None, norm) -> object:
    """One scatter of a panel's points. Categorical colours: the points sorted by category
    (stable), so that one collection draws them in the order one collection per category
    would, each category over the ones before it; points without a category are not drawn."""
    if cats is not None:
        code = pd.Categorical(panel[color].astype(str), categories=cats).codes
        order = np.argsort(code, kind="stable")
        order = order[code[order] >= 0]  # a missing value has no category and no point
        colours = np.asarray([to_rgba(c) for c in class_colours(len(cats))])
        ax.scatter(panel["x"].to_numpy()[order], panel["y"].to_numpy()[order], s=3, lw=0,
                   color=colours[code[order]], rasterized=True)
        return None
    return ax.scatter(panel["x"], panel["y"], c=panel[color].astype(float), s=3, lw=0,
                      cmap=SEQUENTIAL, norm=norm, rasterized=True)


def plot_embedding_maps(coords: pd.DataFrame, color: str, rows: str = "panel",
                        cols: str = "layer", width: str | float = "double") -> Figure:
    """Small multiples of 2-D embedding maps.

    Parameters
    ----------
    coords : pandas.DataFrame
        Columns ``x``, ``y``, ``color`` and the facet columns ``rows`` and ``cols``.
    color : str
        Column that colours the points (categorical: legend; numeric: colour bar).
    rows, cols : str
        Facet columns.
    """
    from matplotlib.colors import Normalize

    row_vals = list(dict.fromkeys(coords[rows]))
    col_vals = list(dict.fromkeys(coords[cols]))
    w = 6.8 if width == "double" else 3.3 if width == "single" else float(width)
    aspect = len(row_vals) / max(1, len(col_vals)) * 1.02 + 0.08
    # many rows: narrower panels, never taller than a page with its titles and legend (0.7 in)
    w = min(w, (MAX_HEIGHT - 0.7) / aspect)
    fig, axes = new_figure(w, aspect=aspect, nrows=len(row_vals),
                           ncols=len(col_vals), squeeze=False)
    cats = _categories(coords[color]) if _is_categorical(coords[color]) else None
    norm = None if cats else Normalize(coords[color].astype(float).min(),
                                       coords[color].astype(float).max())
    mappable = None
    panels = dict(iter(coords.groupby([rows, cols], sort=False)))
    for i, rv in enumerate(row_vals):
        for j, cv in enumerate(col_vals):
            ax = axes[i, j]
            panel = panels.get((rv, cv), coords.iloc[:0])
            if len(panel):
                mappable = _scatter(ax, panel, color, cats, norm) or mappable
                if len(panel) > 1 and panel["x"].nunique() == 1 and panel["y"].nunique() == 1:
                    # e.g. CLS before the first block: one point hides every colour but the last
                    ax.text(0.5, 0.1, "all vectors equal", transform=ax.transAxes,
                            ha="center", fontsize="small", color="0.3")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_facet_name(cols, cv), **LITERAL)
            if j == 0:
                ax.set_ylabel(_facet_name(rows, rv), **LITERAL)
    hide_bare_axes(axes)
    if cats:
        # one entry per category, also for categories absent from the first panel
        handles = [Line2D([], [], linestyle="", marker="o", markersize=5, markeredgewidth=0,
                          color=c) for c in class_colours(len(cats))]
        data_legend(fig, handles, cats, title=color, loc="outside lower center",
                    ncol=min(len(cats), 10 if w > 5 else 5), by_rows=True)
    elif mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.8).set_label(str(color), **LITERAL)
    return fig


def plot_explained_variance(frame: pd.DataFrame, max_components: int = 20) -> Figure:
    """Cumulative explained-variance ratio vs number of components, one line per layer.

    ``frame`` has columns ``layer``, ``kind``, ``component`` (1-based) and ``cumulative``.
    A layer whose shares are all NaN (its vectors are all equal: no variance) has no line, and
    its legend entry says so.
    """
    kinds = list(dict.fromkeys(frame["kind"]))
    fig, axes = new_figure("double" if len(kinds) > 1 else "single", aspect=0.4 if
                           len(kinds) > 1 else 0.75, ncols=len(kinds), squeeze=False)
    layers = sorted(frame["layer"].unique())
    cmap = __import__("matplotlib").colormaps[SEQUENTIAL]
    flat: dict[int, list[str]] = {}  # layer: kinds whose shares are NaN (no variance)
    for ax, kind in zip(axes[0], kinds):
        handles = []
        for k, layer in enumerate(layers):
            sub = frame[(frame["kind"] == kind) & (frame["layer"] == layer)]
            sub = sub[sub["component"] <= max_components]
            handles += ax.plot(sub["component"], sub["cumulative"],
                               color=cmap(k / max(1, len(layers) - 1)))
            if len(sub) and sub["cumulative"].isna().all():
                flat.setdefault(layer, []).append(_facet_name("kind", kind))
        ax.set_title(_facet_name("kind", kind), **LITERAL)
        ax.set_xlabel("principal components")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_ylabel("cumulative explained variance (fraction)")
        ax.set_ylim(0, 1.02)
    names = [_layer_name(layer, flat.get(layer, []), len(kinds) == 1) for layer in layers]
    data_legend(axes[0, -1], handles, names, loc="lower right",
                ncol=1 if len(layers) < 7 else 2)
    return fig


def _layer_name(layer: int, flat_kinds: list[str], one_kind: bool) -> str:
    """Legend entry of ``layer``; it says in which panels the layer's vectors are all equal."""
    if not flat_kinds:
        return f"layer {layer}"
    where = "" if one_kind else f"{', '.join(flat_kinds)}: "
    return f"layer {layer} ({where}all vectors equal)"
