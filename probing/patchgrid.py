"""The patch grid: token rows to ``(rows, cols)`` maps, pixels to patches, grid frames.

Shared by :mod:`probing.attention` and :mod:`probing.attribution` (a floor below both). Maps
over the grid are ``(..., rows, cols)`` in the layout's row-major patch order; patch ``p`` of
the sequence sits at ``(p // cols, p % cols)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError, ModelError
from .layout import TokenLayout

__all__ = [
    "grid_frame",
    "image_id_array",
    "layer_to_patches",
    "pairwise_patch_distances",
    "patch_feature_mask",
    "pixels_to_patches",
    "relevance_frame",
    "to_grid",
]


# ------------------------------------------------------------------------ tokens -> grid
def to_grid(rows: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """``(..., N)`` values over all tokens -> ``(..., rows, cols)`` over the patch tokens."""
    return rows[..., layout.patch_slice].reshape(*rows.shape[:-1], layout.rows, layout.cols)


def pairwise_patch_distances(
    layout: TokenLayout, patch_size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Euclidean distances in pixels between all patch centres.

    Parameters
    ----------
    layout : TokenLayout
        Gives the grid and (unless overridden) the patch size.
    patch_size : int or (int, int), optional
        Patch ``(height, width)`` in pixels; defaults to ``layout.patch_size``.

    Returns
    -------
    numpy.ndarray
        ``(num_patches, num_patches)`` float64 distances in pixels, patches in sequence order.
    """
    if patch_size is None:
        centers = layout.patch_centers_px()
    else:
        ps = (patch_size, patch_size) if np.isscalar(patch_size) else tuple(patch_size)
        if len(ps) != 2 or min(ps) <= 0:
            raise ConfigError(f"patch_size {patch_size!r} is not positive; pass pixels, e.g. 16.")
        centers = (layout.grid_coords() + 0.5) * np.asarray(ps, dtype=np.float64)
    diff = centers[:, None, :] - centers[None, :, :]
    return np.sqrt((diff**2).sum(-1))


# ------------------------------------------------------------------------ pixels -> grid
def patch_feature_mask(layout: TokenLayout):
    """Captum feature mask giving each pixel its patch index.

    Returns
    -------
    torch.Tensor
        ``(1, 1, rows * patch_h, cols * patch_w)`` int64; pixel ``(y, x)`` holds
        ``(y // patch_h) * cols + x // patch_w``, the patch's index in sequence order (0-based
        among patches). It broadcasts over batch and channels.
    """
    import torch

    idx = torch.arange(layout.num_patches).reshape(layout.rows, layout.cols)
    ph, pw = layout.patch_size
    return idx.repeat_interleave(ph, 0).repeat_interleave(pw, 1)[None, None]


def pixels_to_patches(
    attr, layout: TokenLayout, reduce: Literal["sum", "mean"] = "sum"
) -> np.ndarray:
    """Reduce pixel attributions ``(batch, channels, H, W)`` to ``(batch, rows, cols)``.

    ``reduce="sum"`` sums over channels and the pixels of each patch; ``"mean"`` averages them.
    """
    a = attr.detach().double().cpu() if hasattr(attr, "detach") else np.asarray(attr)
    a = np.asarray(a, dtype=np.float64)
    b = a.shape[0]
    ph, pw = layout.patch_size
    a = a.sum(1).reshape(b, layout.rows, ph, layout.cols, pw).sum((2, 4))
    if reduce == "mean":
        a = a / (attr.shape[1] * ph * pw)
    return a


def layer_to_patches(attr, layout: TokenLayout) -> np.ndarray:
    """Patch-embedding attributions ``(B, P, D)`` or ``(B, rows, cols, D)`` to ``(B, rows, cols)``.

    Summed over the embedding dimension ``D`` of each patch token.

    Raises
    ------
    ModelError
        When the shape is neither (the patch embedding is not timm's).
    """
    a = np.asarray(attr.detach().double().cpu(), dtype=np.float64)
    if a.ndim == 3 and a.shape[1] == layout.num_patches:
        return a.sum(-1).reshape(-1, layout.rows, layout.cols)
    if a.ndim == 4 and a.shape[1:3] == (layout.rows, layout.cols):
        return a.sum(-1)
    raise ModelError(
        f"model.patch_embed returned shape {a.shape}, not (batch, patches, dim) or "
        "(batch, rows, cols, dim); layer integrated gradients needs a timm patch embedding."
    )


# ------------------------------------------------------------------------- grid frames
def image_id_array(image_ids: Sequence | None, n: int) -> np.ndarray:
    """``image_ids`` as an array (``0..n-1`` when None), checked to hold one id per image."""
    ids = np.arange(n) if image_ids is None else np.asarray(image_ids)
    if len(ids) != n:
        raise ConfigError(f"image_ids has {len(ids)} entries for {n} images; pass one per image.")
    return ids


def grid_frame(
    maps: np.ndarray, dims: Sequence[str], labels: Mapping[str, Sequence], image_ids=None
) -> pd.DataFrame:
    """Tidy frame of a ``(batch, *dims, rows, cols)`` array, one row per value.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(batch, *dims, rows, cols)`` values.
    dims : sequence of str
        Names of the axes between batch and the grid (e.g. ``["layer", "head"]``).
    labels : mapping
        ``{dim: labels}``, one label per entry of that axis.
    image_ids : sequence, optional
        One id per image (``0..batch-1`` by default).

    Returns
    -------
    pandas.DataFrame
        Columns ``image_id, *dims, row, col, value`` (``row``, ``col`` int16).
    """
    maps = np.asarray(maps, dtype=np.float64)
    shape = maps.shape
    ids = image_id_array(image_ids, shape[0])
    axes = [ids, *[np.asarray(labels[d]) for d in dims], np.arange(shape[-2]), np.arange(shape[-1])]
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cols = {}
    for name, ax, g in zip(["image_id", *dims, "row", "col"], axes, grids):
        cols[name] = ax[g.ravel()]
    cols["value"] = maps.ravel()
    frame = pd.DataFrame(cols)
    for name in ("row", "col"):
        frame[name] = frame[name].astype("int16")
    return frame


def relevance_frame(
    maps: np.ndarray, method: str, image_ids: Sequence | None = None
) -> pd.DataFrame:
    """A ``(batch, rows, cols)`` map as a tidy frame ``image_id, method, row, col, value``.

    The same schema as :func:`probing.attribution.attribute`, so rollout, gradient rollout and
    captum maps can be concatenated and drawn side by side.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise DataError(f"maps has shape {maps.shape}; pass (batch, rows, cols).")
    frame = grid_frame(maps, [], {}, image_ids)
    frame.insert(1, "method", method)
    return frame
