"""Figures for positional-encoding studies. They draw result frames; they compute nothing.

- :func:`plot_similarity_grid` — grid of grids (ViT paper, Fig. 7 centre) from
  :func:`probing.posenc.similarity_frame`.
- :func:`plot_decay_1d` — ``PE(p) . PE(p + k)`` against ``k`` for several ``p`` from
  :func:`probing.posenc.decay_1d`.
- :func:`plot_decay_2d` — mean (± std) similarity against distance for several tables on one
  axis, from :func:`probing.posenc.decay_2d` frames concatenated with a ``source`` column.
- :func:`plot_subspace_angles` — principal angles and variance fractions against the random
  null, from :func:`probing.posenc.subspace_overlap`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..frames import require_columns
from ..style import (
    DIVERGING,
    LITERAL,
    OKABE_ITO,
    class_colours,
    data_legend,
    new_figure,
    paper_style,
)

__all__ = ["plot_decay_1d", "plot_decay_2d", "plot_similarity_grid", "plot_subspace_angles"]

_LABELS = {"cosine": "cosine similarity", "dot": "dot product"}


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw inside the toolkit style, so legends and colour bars get its fonts too."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> Figure:
        with paper_style():
            return fn(*args, **kwargs)

    return wrapper


def _require(frame: pd.DataFrame, columns: tuple[str, ...], producer: str) -> None:
    require_columns(frame, columns, "frame", f"pass {producer} output")


@_styled
def plot_similarity_grid(frame: pd.DataFrame, title: str | None = None,
                         gap: int = 1) -> Figure:
    """Grid of grids: one small similarity map per query patch, placed at the query's position.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.posenc.similarity_frame` output (query_row, query_col, row, col, metric,
        value), any grid shape.
    title : str, optional
        Axes title.
    gap : int
        Blank pixels between the small maps.
    """
    _require(frame, ("query_row", "query_col", "row", "col", "value"), "similarity_frame()")
    rows = int(frame["row"].max()) + 1
    cols = int(frame["col"].max()) + 1
    ordered = frame.sort_values(["query_row", "query_col", "row", "col"])
    sim = ordered["value"].to_numpy(dtype=np.float64).reshape(rows, cols, rows, cols)
    mosaic = np.full((rows * (rows + gap) - gap, cols * (cols + gap) - gap), np.nan)
    for qr in range(rows):
        for qc in range(cols):
            y, x = qr * (rows + gap), qc * (cols + gap)
            mosaic[y : y + rows, x : x + cols] = sim[qr, qc]
    metric = str(frame["metric"].iloc[0]) if "metric" in frame.columns else "cosine"
    fig, ax = new_figure("single", aspect=rows / cols)
    vmax = np.nanmax(np.abs(mosaic))
    image = ax.imshow(mosaic, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
    step = max(1, rows // 6), max(1, cols // 6)
    ax.set_yticks(np.arange(0, rows, step[0]) * (rows + gap) + (rows - 1) / 2,
                  labels=[str(i + 1) for i in range(0, rows, step[0])])
    ax.set_xticks(np.arange(0, cols, step[1]) * (cols + gap) + (cols - 1) / 2,
                  labels=[str(i + 1) for i in range(0, cols, step[1])])
    ax.set_ylabel("input patch row")
    ax.set_xlabel("input patch column")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8).set_label(_LABELS.get(metric, metric), **LITERAL)
    if title:
        ax.set_title(str(title), **LITERAL)
    return fig


@_styled
def plot_decay_1d(frame: pd.DataFrame, value: str = "dot") -> Figure:
    """``value`` between positions ``p`` and ``p + k`` against ``k``, one line per ``p``.

    Overlapping lines show shift invariance; the oscillation of the sinusoidal encoding is
    visible along ``k``.
    """
    _require(frame, ("p", "k", value), "decay_1d()")
    fig, ax = new_figure("single")
    handles, names = [], []
    colours = class_colours(frame["p"].nunique())
    for i, (p, group) in enumerate(frame.groupby("p", sort=True)):
        group = group.sort_values("k")
        handles += ax.plot(group["k"], group[value], color=colours[i],
                           lw=1.6 - 0.3 * min(i, 3))
        names.append(f"p = {p}")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("offset k (positions)")
    ax.set_ylabel(f"{_LABELS.get(value, value)} PE(p)·PE(p+k)", **LITERAL)
    data_legend(ax, handles, names, title="start position")
    return fig


@_styled
def plot_decay_2d(
    frame: pd.DataFrame,
    value: str = "cosine",
    hue: str = "source",
    halving: Mapping[str, float] | None = None,
) -> Figure:
    """Mean similarity (± one std over pairs, or the ``ci_low``..``ci_high`` band where a
    curve has one) against grid distance, one line per table.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.posenc.decay_2d` output with ``by="distance"`` (or 1-D ``decay_1d``
        frames aggregated the same way), optionally several concatenated with a ``hue`` column
        (e.g. learned / sinusoidal / resampled).
    value : {"cosine", "dot"}
        Which similarity to draw (``{value}_mean`` and ``{value}_std`` columns).
    hue : str
        Column naming each table; a single unnamed curve when absent.
    halving : mapping, optional
        ``{hue value: halving distance}`` drawn as dotted vertical lines.
    """
    _require(frame, ("distance", f"{value}_mean"), "decay_2d(by='distance')")
    fig, ax = new_figure("single")
    groups = frame.groupby(hue, sort=False) if hue in frame.columns else [("", frame)]
    handles, names = [], []
    groups = list(groups)
    colours = class_colours(len(groups))
    for i, (name, group) in enumerate(groups):
        colour = colours[i]
        group = group.sort_values("distance")
        x, y = group["distance"].to_numpy(), group[f"{value}_mean"].to_numpy()
        handles += ax.plot(x, y, color=colour, marker="o", ms=2)
        names.append(name)
        if {"ci_low", "ci_high"} <= set(group.columns) and group["ci_low"].notna().any():
            ax.fill_between(x, group["ci_low"], group["ci_high"], color=colour, alpha=0.15, lw=0)
        elif f"{value}_std" in group.columns:
            s = group[f"{value}_std"].to_numpy()
            ax.fill_between(x, y - s, y + s, color=colour, alpha=0.15, lw=0)
        if halving and name in halving and np.isfinite(halving[name]):
            ax.axvline(halving[name], color=colour, ls=":", lw=0.8)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("grid distance (patches)")
    ax.set_ylabel(f"mean {_LABELS.get(value, value)}", **LITERAL)
    if hue in frame.columns:
        data_legend(ax, handles, names)
    return fig


@_styled
def plot_subspace_angles(frame: pd.DataFrame) -> Figure:
    """Principal angles (left) and variance fractions (right) against the random-subspace null.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.posenc.subspace_overlap` output.
    """
    _require(frame, ("metric", "component", "value", "null_mean", "null_low", "null_high"),
             "subspace_overlap()")
    fig, (left, right) = new_figure("double", aspect=0.35, ncols=2)
    ang = frame[frame["metric"] == "angle_deg"].sort_values("component")
    comp = ang["component"].to_numpy(dtype=np.float64)
    left.fill_between(comp, ang["null_low"], ang["null_high"], color="0.8", lw=0,
                      label="random subspaces (95%)")
    left.plot(comp, ang["null_mean"], color="0.4", ls="--", label="random mean")
    left.plot(comp, ang["value"], color=OKABE_ITO[0], marker="o", label="PE vs content")
    left.set_ylim(0, 90)
    left.set_xlabel("principal angle index")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("principal angle (degrees)")
    left.legend(loc="lower right")
    names = {"pe_variance_in_content": "PE variance\nin content subspace",
             "content_variance_in_pe": "content variance\nin PE subspace"}
    frac = frame[frame["metric"].isin(list(names))]
    x = np.arange(len(frac))
    right.bar(x - 0.2, frac["value"], width=0.4, color=OKABE_ITO[0], label="observed")
    err = np.vstack([frac["null_mean"] - frac["null_low"], frac["null_high"] - frac["null_mean"]])
    right.bar(x + 0.2, frac["null_mean"], width=0.4, color="0.7", yerr=err, capsize=2,
              label="random (95%)")
    right.set_xticks(x, labels=[names[m] for m in frac["metric"]])
    right.set_ylim(0, 1)
    right.set_ylabel("fraction of variance")
    right.legend()
    return fig
