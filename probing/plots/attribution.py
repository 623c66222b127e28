"""Attribution figures: maps by method, faithfulness curves, sanity-check curves.

Every function takes a result frame (from :mod:`probing.attribution` or
:func:`probing.attention.relevance_frame`) and returns a Figure; none computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..errors import DataError
from ..frames import require_columns
from ..style import LITERAL, OKABE_ITO, data_legend, new_figure
from .attention import show_map

__all__ = ["plot_faithfulness", "plot_method_maps", "plot_sanity"]

#: the toolkit's method names, shown with spaces; any other name is drawn as it is
_METHOD_NAMES = {m: m.replace("_", " ") for m in (
    "gradient_rollout", "integrated_gradients", "layer_integrated_gradients", "feature_ablation",
)}


def _method(name: object) -> str:
    return _METHOD_NAMES.get(str(name), str(name))


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
    require_columns(frame, ("image_id", "method", "row", "col", "value"), "frame",
                    "pass attribute()'s output")
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
                axes[i, j].set_title(_method(method), **LITERAL)
            if j == 0:
                axes[i, j].set_ylabel(f"image {image_id}", **LITERAL)
    fig.supxlabel("relevance per patch (each map on its own colour scale; bright = high)",
                  fontsize=6.5)
    return fig


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
        for k, (method, g) in enumerate(sub.groupby("method", sort=False)):
            g = g.sort_values("fraction")
            style = ({"color": "0.5", "linestyle": "--"} if method == "random"
                     else {"color": OKABE_ITO[k % len(OKABE_ITO)]})
            (line,) = ax.plot(g["fraction"], g["prob"], **style)
            if {"ci_low", "ci_high"} <= set(g.columns):  # interval band
                ax.fill_between(g["fraction"], g["ci_low"], g["ci_high"], color=style["color"],
                                alpha=0.15, linewidth=0)
            handles.setdefault(_method(method), line)
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
    fig, ax = new_figure("single", aspect=0.8)
    handles, names = [], []
    for k, (method, g) in enumerate(summary.groupby("method", sort=False)):
        g = g.sort_values("step")
        color = OKABE_ITO[k % len(OKABE_ITO)]
        handles += ax.plot(g["step"], g["spearman_mean"], marker="o", color=color)
        names.append(_method(method))
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
    data_legend(ax, handles, names)
    return fig
