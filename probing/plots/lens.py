"""Figure of the logit lens: accuracy and target rank per layer, beside the linear probe.

Draws a :func:`probing.lens.lens_scores` frame; computes nothing.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..frames import require_columns
from ..style import OKABE_ITO, data_legend, new_figure, paper_style

__all__ = ["plot_logit_lens"]

_COLUMNS = ("layer", "metric", "value", "ci_low", "ci_high")


def _line(ax, part: pd.DataFrame, color: str, marker: str = "o") -> object:
    part = part.sort_values("layer")
    (handle,) = ax.plot(part["layer"], part["value"], color=color, marker=marker)
    ax.fill_between(part["layer"], part["ci_low"], part["ci_high"], color=color, alpha=0.2,
                    linewidth=0)
    return handle


def plot_logit_lens(scores: pd.DataFrame, probe: pd.DataFrame | None = None,
                    chance: float | None = None) -> Figure:
    """Logit-lens accuracy (left) and mean rank of the target (right) against depth.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`probing.lens.lens_scores` output (metrics ``accuracy`` and ``mean_rank``).
    probe : pandas.DataFrame, optional
        Linear-probe accuracy per layer of the same vectors (columns ``layer, value, ci_low,
        ci_high``), drawn beside the lens accuracy.
    chance : float, optional
        Chance accuracy (1 / classes), drawn as a dotted line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    require_columns(scores, _COLUMNS, "scores", "pass lens_scores output")
    with paper_style():
        fig, (left, right) = new_figure("double", aspect=0.34, ncols=2)
        handles = [_line(left, scores[scores["metric"] == "accuracy"], OKABE_ITO[0])]
        names = ["logit lens (model's head)"]
        if probe is not None and not probe.empty:
            require_columns(probe, _COLUMNS[:1] + _COLUMNS[2:], "probe", "pass probe rows")
            handles.append(_line(left, probe, OKABE_ITO[1], marker="s"))
            names.append("linear probe (held out)")
        if chance is not None:
            handles.append(left.axhline(chance, color="0.5", linestyle=":"))
            names.append("chance")
        left.set_ylabel("accuracy")
        left.set_ylim(-0.02, 1.02)
        _line(right, scores[scores["metric"] == "mean_rank"], OKABE_ITO[0])
        right.set_ylabel("mean rank of the target (0 = top)")
        right.set_ylim(bottom=-0.05)
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("layer (0 = block input, k = output of block k)")
        data_legend(left, handles, names, loc="best")
    return fig
