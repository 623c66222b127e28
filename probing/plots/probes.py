"""Figures of layer probes: score vs layer with interval bands, task vs controls, one line per kind.

Draws a :func:`probing.probes.layers.probe_layers` frame; computes nothing.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..frames import require_columns
from ..style import LITERAL, OKABE_ITO, data_legend, new_figure, paper_style

__all__ = ["plot_probe_layers"]

_PROBE_STYLE = {
    "task": {"color": OKABE_ITO[0], "label": "task"},
    "control": {"color": OKABE_ITO[1], "label": "control task"},
    "random_init": {"color": OKABE_ITO[2], "label": "random-init model"},
    "raw_pixels": {"color": OKABE_ITO[4], "label": "raw input pixels"},
    "majority": {"color": "0.5", "label": "majority class"},
}
_KIND_LINES = {"cls": "-", "pooled": "--", "patch": ":"}
_METRIC_LABEL = {"accuracy": "held-out accuracy", "r2": "held-out $R^2$"}


def plot_probe_layers(
    result: pd.DataFrame,
    metric: str | None = None,
    probes: tuple[str, ...] = ("task", "control", "random_init", "raw_pixels", "majority"),
    title: str | None = None,
) -> Figure:
    """Probe score vs layer with confidence bands.

    Colour = probe (task, control task, random-init model, majority class); line style = token
    kind (solid ``cls``, dashed ``mean``, dotted ``patch``). Bands are the ``ci_low``..``ci_high``
    intervals of the frame.

    Parameters
    ----------
    result : pandas.DataFrame
        Output of :func:`probing.probes.layers.probe_layers`.
    metric : str, optional
        ``"accuracy"`` or ``"r2"``; the one present in ``result`` when None.
    probes : tuple of str
        Which probes to draw, in legend order.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    require_columns(result, ("layer", "kind", "probe", "metric", "value", "ci_low", "ci_high"),
                    "result", "pass probe_layers output")
    if metric is None:
        present = [m for m in _METRIC_LABEL if (result["metric"] == m).any()]
        metric = present[0] if present else "accuracy"
    data = result[(result["metric"] == metric) & result["probe"].isin(probes)]
    with paper_style():  # draw in the toolkit style, so the legend gets its fonts too
        fig, ax = new_figure("single", aspect=0.75)
        drawn_probes, drawn_kinds = [], []
        for probe in probes:
            style = _PROBE_STYLE.get(probe, {"color": "k", "label": probe})
            for kind, line in _KIND_LINES.items():
                part = data[(data["probe"] == probe) & (data["kind"] == kind)].sort_values("layer")
                if part.empty:
                    continue
                ax.plot(part["layer"], part["value"], linestyle=line, color=style["color"],
                        marker="o")
                ax.fill_between(part["layer"], part["ci_low"], part["ci_high"],
                                color=style["color"], alpha=0.2, linewidth=0)
                drawn_probes += [] if probe in drawn_probes else [probe]
                drawn_kinds += [] if kind in drawn_kinds else [kind]
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = block input, k = output of block k)")
        if metric in _METRIC_LABEL:  # our own labels (mathtext in R^2)
            ax.set_ylabel(_METRIC_LABEL[metric])
        else:
            ax.set_ylabel(str(metric), **LITERAL)
        if title:
            ax.set_title(str(title), **LITERAL)
        # one legend entry per colour (probe) and per line style (kind), below the axes
        # one kind drawn: the probe entries take its line style, so they look like the lines
        style = _KIND_LINES[drawn_kinds[0]] if len(drawn_kinds) == 1 else "-"
        handles = [Line2D([], [], color=_PROBE_STYLE.get(p, {"color": "k"})["color"], marker="o",
                          linestyle=style) for p in drawn_probes]
        names = [_PROBE_STYLE.get(p, {"label": p})["label"] for p in drawn_probes]
        if len(drawn_kinds) > 1:
            handles += [Line2D([], [], color="0.3", linestyle=_KIND_LINES[k]) for k in drawn_kinds]
            names += drawn_kinds
        data_legend(ax, handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    return fig
