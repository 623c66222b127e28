"""Attention figures: per-layer/head maps over the image and mean attention distance.

Every function takes a result frame (from :mod:`probing.attention`) and returns a Figure; none
computes a statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import DataError
from ..frames import require_columns
from ..style import LITERAL, OKABE_ITO, SEQUENTIAL, data_legend, new_figure

__all__ = [
    "display_image",
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
             vmin: float | None = None, vmax: float | None = None):
    """Draw a ``(rows, cols)`` map on ``ax``, stretched over ``image`` when given."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        return ax.imshow(grid, cmap=SEQUENTIAL, vmin=vmin, vmax=vmax, interpolation="nearest")
    img = display_image(image)
    h, w = img.shape[:2]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
    return ax.imshow(grid, cmap=SEQUENTIAL, alpha=alpha, extent=(0, w, h, 0), vmin=vmin,
                     vmax=vmax, interpolation="nearest")


def _grid(frame: pd.DataFrame) -> np.ndarray:
    return frame.pivot(index="row", columns="col", values="value").to_numpy()


def _one_image(frame: pd.DataFrame, image_id: object | None) -> pd.DataFrame:
    require_columns(frame, ("image_id", "layer", "head", "row", "col", "value"), "frame",
                    "pass attention_map_frame()'s output")
    if image_id is None:
        image_id = frame["image_id"].iloc[0]
    sub = frame[frame["image_id"] == image_id]
    if sub.empty:
        raise DataError(f"image_id {image_id!r} is not in the frame; pass one of its image ids.")
    return sub


def plot_attention_grid(
    frame: pd.DataFrame, image: object | None = None, image_id: object | None = None,
    alpha: float = 0.6,
) -> Figure:
    """Layers x heads grid of one image's attention maps, overlaid on the image.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.attention_map_frame` output.
    image : array-like, optional
        The image ``(H, W, C)`` or ``(C, H, W)``; maps are drawn alone when None.
    image_id : optional
        Which image of the frame (the first by default).
    """
    sub = _one_image(frame, image_id)
    layers = sorted(sub["layer"].unique())
    heads = sorted(sub["head"].unique())
    fig, axes = new_figure("double", aspect=len(layers) / max(len(heads), 1) * 1.05,
                           nrows=len(layers), ncols=len(heads), squeeze=False)
    vmax = float(sub["value"].max())
    im = None
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            ax = axes[i, j]
            g = sub[(sub["layer"] == layer) & (sub["head"] == head)]
            im = show_map(ax, _grid(g), image, alpha, 0.0, vmax)
            if i == 0:
                ax.set_title(f"head {head}", **LITERAL)
            if j == 0:
                ax.set_ylabel(f"layer {layer}", **LITERAL)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    return fig


def plot_multihead(
    frame: pd.DataFrame, layer: int | None = None, image: object | None = None,
    image_id: object | None = None, alpha: float = 0.6,
) -> Figure:
    """Multi-head attention visualisation: the image, then one panel per head of one layer.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.attention_map_frame` output.
    layer : int, optional
        Layer to show (the last by default).
    image, image_id, alpha
        As in :func:`plot_attention_grid`.
    """
    sub = _one_image(frame, image_id)
    layer = int(sub["layer"].max()) if layer is None else layer
    sub = sub[sub["layer"] == layer]
    if sub.empty:
        raise DataError(f"layer {layer} is not in the frame; pass one of its layers.")
    heads = sorted(sub["head"].unique())
    n = len(heads) + (image is not None)
    fig, axes = new_figure("double", aspect=1.2 / n, nrows=1, ncols=n, squeeze=False)
    axes = list(axes[0])
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(display_image(image))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("image")
    vmax = float(sub["value"].max())
    im = None
    for ax, head in zip(axes, heads):
        im = show_map(ax, _grid(sub[sub["head"] == head]), image, alpha, 0.0, vmax)
        ax.set_title(f"head {head}", **LITERAL)
    fig.suptitle(f"layer {layer}", fontsize=8, **LITERAL)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return fig


def plot_attention_distance(frame: pd.DataFrame, jitter: float = 0.0) -> Figure:
    """Mean attention distance per head against depth (ViT paper, Fig. 7 right).

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`probing.attention.mean_attention_distance` summary (``layer, head,
        distance_px``); one dot per head, with a ``ci_low``..``ci_high`` whisker when present.
        May hold a ``model`` column (one colour per model).
    jitter : float
        Horizontal offset between heads of a layer, in layers (0: stacked as in the paper).
    """
    if not {"layer", "head", "distance_px"} <= set(frame.columns):
        raise DataError(
            "frame lacks layer/head/distance_px; pass mean_attention_distance()'s output."
        )
    fig, ax = new_figure("single", aspect=0.8)
    groups = frame.groupby("model", sort=False) if "model" in frame.columns else [(None, frame)]
    n_heads = max(int(frame["head"].max()) + 1, 1)
    handles, names = [], []
    for k, (name, g) in enumerate(groups):
        x = g["layer"].to_numpy(float) + jitter * (g["head"].to_numpy(float) / n_heads - 0.5)
        handles.append(ax.scatter(x, g["distance_px"], s=8, color=OKABE_ITO[k % len(OKABE_ITO)],
                                  alpha=0.8, linewidths=0))
        if {"ci_low", "ci_high"} <= set(g.columns):  # interval whiskers
            ax.vlines(x, g["ci_low"], g["ci_high"], color=OKABE_ITO[k % len(OKABE_ITO)],
                      alpha=0.6, linewidth=0.6)
        names.append(name)
    if "model" in frame.columns:
        data_legend(ax, handles, names)
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    top = frame["ci_high"].max() if "ci_high" in frame.columns else np.nan
    top = max(float(frame["distance_px"].max()), float(top) if np.isfinite(top) else 0.0)
    ax.set_ylim(0, top * 1.08 or 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig
