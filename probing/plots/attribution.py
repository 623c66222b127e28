"""Attribution figures: maps by method, faithfulness curves, sanity-check curves.

Every function takes a result frame (from :mod:`probing.attribution` or
:func:`probing.attention.relevance_frame`) and returns a Figure; none computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..errors import DataError
from .attention import show_map
from .style import OKABE_ITO, new_figure

__all__ = ["plot_faithfulness", "plot_method_maps", "plot_sanity"]


def plot_method_maps(
    frame: pd.DataFrame,
    images: Mapping[object, object] | None = None,
    image_ids: Sequence | None = None,
    methods: Sequence[str] | None = None,
    alpha: float = 0.6,
) -> Figure:
    """One row per image, one column per method (rollout, gradient rollout, IG, occlusion ...).

    Parameters
    ----------
    frame : pandas.DataFrame
        Tidy maps ``image_id, method, row, col, value`` (several methods concatenated).
    images : dict, optional
        ``{image_id: image}`` drawn under the maps (``(H, W, C)`` or ``(C, H, W)``).
    image_ids, methods : sequence, optional
        Which images and methods, in order (all, in order of appearance, by default).
    """
    if not {"image_id", "method", "row", "col", "value"} <= set(frame.columns):
        raise DataError("frame lacks image_id/method/row/col/value; pass attribute()'s output.")
    ids = list(pd.unique(frame["image_id"])) if image_ids is None else list(image_ids)
    methods = list(pd.unique(frame["method"])) if methods is None else list(methods)
    fig, axes = new_figure("double", aspect=len(ids) / len(methods), nrows=len(ids),
                           ncols=len(methods), squeeze=False)
    for i, image_id in enumerate(ids):
        for j, method in enumerate(methods):
            g = frame[(frame["image_id"] == image_id) & (frame["method"] == method)]
            grid = g.pivot(index="row", columns="col", values="value").to_numpy()
            image = None if images is None else images.get(image_id)
            show_map(axes[i, j], grid, image, alpha)
            if i == 0:
                axes[i, j].set_title(method.replace("_", " "))
            if j == 0:
                axes[i, j].set_ylabel(f"image {image_id}")
    fig.supxlabel("relevance per patch (each map on its own colour scale; bright = high)",
                  fontsize=6.5)
    return fig


def plot_faithfulness(curves: pd.DataFrame) -> Figure:
    """Mean deletion / insertion curves per method (one panel per mode).

    Parameters
    ----------
    curves : pandas.DataFrame
        A summary ``method, mode, fraction, prob`` (e.g. the mean over images of
        :attr:`FaithfulnessResult.curves`, computed by the caller); the ``"random"`` method is
        drawn dashed grey.
    """
    if not {"method", "mode", "fraction", "prob"} <= set(curves.columns):
        raise DataError("curves lacks method/mode/fraction/prob; pass faithfulness curves.")
    modes = list(pd.unique(curves["mode"]))
    fig, axes = new_figure("double", aspect=0.38, nrows=1, ncols=len(modes), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = curves[curves["mode"] == mode]
        for k, (method, g) in enumerate(sub.groupby("method", sort=False)):
            g = g.sort_values("fraction")
            style = ({"color": "0.5", "linestyle": "--"} if method == "random"
                     else {"color": OKABE_ITO[k % len(OKABE_ITO)]})
            ax.plot(g["fraction"], g["prob"], label=str(method).replace("_", " "), **style)
        ax.set_title(mode)
        ax.set_xlabel(f"fraction of patches {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("target-class probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, None)
    axes[0, -1].legend()
    return fig


def plot_sanity(summary: pd.DataFrame) -> Figure:
    """Cascading randomisation curves: mean Spearman correlation per method against the
    randomised depth (Adebayo et al. 2018, Fig. 2 style).

    Parameters
    ----------
    summary : pandas.DataFrame
        :attr:`SanityResult.summary` (``method, step, randomized, spearman_mean,
        spearman_std``).
    """
    need = {"method", "step", "randomized", "spearman_mean"}
    if not need <= set(summary.columns):
        raise DataError(
            "summary lacks method/step/randomized/spearman_mean; pass SanityResult.summary."
        )
    fig, ax = new_figure("single", aspect=0.8)
    for k, (method, g) in enumerate(summary.groupby("method", sort=False)):
        g = g.sort_values("step")
        color = OKABE_ITO[k % len(OKABE_ITO)]
        ax.plot(g["step"], g["spearman_mean"], marker="o", color=color,
                label=str(method).replace("_", " "))
        if "spearman_std" in g:
            ax.fill_between(g["step"], g["spearman_mean"] - g["spearman_std"],
                            g["spearman_mean"] + g["spearman_std"], color=color, alpha=0.15,
                            linewidth=0)
    labels = summary.drop_duplicates("step").sort_values("step")
    ax.set_xticks(labels["step"], labels["randomized"], rotation=60, ha="right")
    ax.axhline(0, color="0.7", linewidth=0.6)
    ax.set_xlabel("randomised up to (cascading, top first)")
    ax.set_ylabel("Spearman rank correlation\nwith original map")
    ax.legend()
    return fig
