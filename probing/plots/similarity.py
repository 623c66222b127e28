"""Figures of representation similarity: CKA heatmaps and similarity vs layer.

Draws frames from :mod:`probing.similarity`; computes nothing (pivoting a tidy frame into a
grid is the only reshaping).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..frames import require_columns
from ..style import LITERAL, SEQUENTIAL, class_colours, data_legend, new_figure, paper_style

__all__ = ["plot_cka_heatmap", "plot_similarity_vs_layer"]


def _require(frame: pd.DataFrame, columns: set[str], producer: str) -> None:
    require_columns(frame, sorted(columns), "frame", f"pass {producer} output")


def plot_cka_heatmap(
    result: pd.DataFrame,
    value: str = "value",
    label_a: str = "layer",
    label_b: str | None = None,
    title: str | None = None,
) -> Figure:
    """Layer x layer heatmap of CKA (viridis, colour scale fixed to 0..1).

    Parameters
    ----------
    result : pandas.DataFrame
        Output of :func:`probing.similarity.layer_similarity` or
        :func:`~probing.similarity.layer_mutual_knn` (one ``metric``).
    value : str
        Column to draw; the colour bar is named after the frame's ``metric``.
    label_a, label_b : str
        Axis labels for ``layer_a`` (rows, y axis) and ``layer_b`` (columns, x axis).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _require(result, {"layer_a", "layer_b", value}, "layer_similarity")
    # dropna=False keeps layers whose values are all NaN (a constant representation) as blanks
    grid = result.pivot_table(index="layer_a", columns="layer_b", values=value, aggfunc="first",
                              dropna=False)
    with paper_style():
        return _draw_heatmap(result, grid, value, label_a, label_b, title)


def _draw_heatmap(result, grid, value, label_a, label_b, title) -> Figure:
    fig, ax = new_figure("single", aspect=0.9)
    image = ax.imshow(grid.to_numpy(dtype=np.float64), cmap=SEQUENTIAL, vmin=0.0, vmax=1.0,
                      origin="lower", aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(grid.shape[1]), [str(v) for v in grid.columns], **LITERAL)
    ax.set_yticks(np.arange(grid.shape[0]), [str(v) for v in grid.index], **LITERAL)
    ax.set_xlabel(str(label_b or label_a), **LITERAL)
    ax.set_ylabel(str(label_a), **LITERAL)
    debiased = "debiased" in result and bool(result["debiased"].any())
    names = {"cka": "debiased linear CKA" if debiased else "linear CKA",
             "mutual_knn": "mutual k-NN overlap"}
    metric = str(result["metric"].iloc[0]) if "metric" in result and len(result) else value
    fig.colorbar(image, ax=ax).set_label(names.get(metric, metric), **LITERAL)
    if title:
        ax.set_title(str(title), **LITERAL)
    return fig


def plot_similarity_vs_layer(
    result: pd.DataFrame,
    value: str = "value",
    group: str | None = None,
    ylabel: str = "cosine similarity",
    title: str | None = None,
) -> Figure:
    """A similarity per layer, with its interval band when ``ci_low``/``ci_high`` are present.

    Parameters
    ----------
    result : pandas.DataFrame
        A tidy frame with ``layer`` and ``value`` columns, e.g.
        :func:`probing.similarity.cls_patch_cosine` output, or the ``layer_a == layer_b`` rows of
        a two-model :func:`~probing.similarity.layer_similarity`.
    value : str
        Column to draw.
    group : str, optional
        Column whose values get one line each (e.g. ``"metric"`` or a model name).
    ylabel : str
        y-axis label, with units where they apply.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    layer = "layer" if "layer" in result else "layer_a"
    _require(result, {layer, value}, "cls_patch_cosine or layer_similarity")
    with paper_style():  # draw in the toolkit style, so the legend gets its fonts too
        fig, ax = new_figure("single", aspect=0.7)
        groups = [(None, result)] if group is None else list(result.groupby(group, sort=False))
        handles, names = [], []
        colours = class_colours(len(groups))
        for i, (name, part) in enumerate(groups):
            part = part.sort_values(layer)
            color = colours[i]
            handles += ax.plot(part[layer], part[value], marker="o", color=color)
            names.append(name)
            if {"ci_low", "ci_high"} <= set(part.columns):
                ax.fill_between(part[layer], part["ci_low"], part["ci_high"], color=color,
                                alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = block input, k = output of block k)")
        ax.set_ylabel(str(ylabel), **LITERAL)
        if group is not None:
            data_legend(ax, handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.25),
                        ncol=1)
        if title:
            ax.set_title(str(title), **LITERAL)
    return fig
