"""Figure of head importance by ablation: a layer x head heatmap per ablation value.

Draws a :func:`probing.attention.head_ablation` frame; computes nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ..frames import require_columns
from ..style import DIVERGING, new_figure, paper_style

__all__ = ["plot_head_ablation"]

_METRIC_LABEL = {"logit_drop": "drop of the target logit",
                 "accuracy_drop": "drop of accuracy"}


def plot_head_ablation(result: pd.DataFrame, metric: str = "logit_drop",
                       annotate: bool | None = None) -> Figure:
    """Heatmaps of the drop per block (rows) and head (columns; last column: all heads).

    One panel per ablation mode (``zero``, ``mean``), one diverging colour scale centred at 0
    shared by the panels (red = the score drops when the head is removed).

    Parameters
    ----------
    result : pandas.DataFrame
        :func:`probing.attention.head_ablation` output.
    metric : {"logit_drop", "accuracy_drop"}
        What the colour shows.
    annotate : bool, optional
        Write the value in each cell (default: when there are at most 16 columns).

    Returns
    -------
    matplotlib.figure.Figure
    """
    require_columns(result, ("layer", "head", "mode", "metric", "value"), "result",
                    "pass head_ablation output")
    data = result[(result["metric"] == metric) & (result["mode"] != "none")]
    modes = list(dict.fromkeys(data["mode"]))
    layers = sorted(data["layer"].unique())
    heads = sorted(h for h in data["head"].unique() if h >= 0)
    columns = heads + ([-1] if (data["head"] < 0).any() else [])
    grids = {m: data[data["mode"] == m].pivot_table(index="layer", columns="head",
                                                    values="value").reindex(
        index=layers, columns=columns).to_numpy(dtype=float) for m in modes}
    peak = max([float(np.nanmax(np.abs(g))) for g in grids.values()] + [1e-12])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-peak, vmax=peak)
    annotate = len(columns) <= 16 if annotate is None else annotate
    height = min(0.9, 0.12 + 0.07 * len(layers)) * (1 if len(modes) > 1 else 1.6)
    with paper_style():
        fig, axes = new_figure("double", aspect=height, ncols=max(1, len(modes)), squeeze=False)
        image = None
        for ax, mode in zip(axes[0], modes):
            grid = grids[mode]
            image = ax.imshow(grid, cmap=DIVERGING, norm=norm, aspect="auto")
            ax.set_xticks(range(len(columns)), [str(h) if h >= 0 else "all" for h in columns])
            ax.set_yticks(range(len(layers)), [str(v) for v in layers])
            ax.set_xlabel("head")
            ax.set_ylabel("block")
            ax.set_title(f"{mode} ablation")
            if annotate:
                for (i, j), v in np.ndenumerate(grid):
                    if np.isfinite(v):
                        # inside its cell: left out of the layout and the tight bbox,
                        # which then need not measure 2 x 40 texts a figure
                        ax.text(j, i, f"{v:.2f}".replace("-0.00", "0.00"), ha="center",
                                va="center", fontsize=6, in_layout=False,
                                color="white" if abs(v) > 0.6 * peak else "black")
        if image is not None:
            fig.colorbar(image, ax=list(axes[0]), label=_METRIC_LABEL.get(metric, metric))
    return fig
