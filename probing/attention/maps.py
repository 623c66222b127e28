"""Attention maps over the patch grid and the mean attention distance, as arrays and frames.

Layout-aware (:class:`~probing.layout.TokenLayout`): nothing assumes that token 0 is CLS.
Computation is in float64; maps are ``(..., rows, cols)`` in the layout's row-major patch order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..layout import TokenLayout
from ..patchgrid import grid_frame, image_id_array, pairwise_patch_distances, to_grid
from .inputs import (
    AttentionInput,
    Query,
    check_layout,
    check_layout_arg,
    parse_attention,
    query_rows,
    stack_attentions,
)

__all__ = [
    "attention_map_frame",
    "attention_maps",
    "mean_attention_distance",
    "mean_attention_distance_per_image",
]


def attention_maps(
    attentions: AttentionInput, layout: TokenLayout, query: Query = None
) -> np.ndarray:
    """Each layer's and head's attention from one query over the patch grid.

    Parameters
    ----------
    attentions : array, list, tuple, dict or attention frame
        Post-softmax attention in any form of :mod:`probing.attention.inputs`.
    layout : TokenLayout
        The model's token layout.
    query : int, str or None
        ``None``: the CLS token, or the mean over patch queries for models without CLS;
        ``"cls"``, ``"dist"``, ``"reg"`` (the first token of that kind); ``"pooled"`` (mean
        over patch queries); or a sequence position.

    Returns
    -------
    numpy.ndarray
        ``(batch, layers, heads, rows, cols)`` float64 weights the query gives each patch key
        (not renormalised: prefix keys take the rest of the row's mass).
    """
    check_layout_arg(layout)
    arr, _ = stack_attentions(attentions)
    check_layout(arr, layout)
    return to_grid(query_rows(arr, layout, query), layout)


def attention_map_frame(
    attentions: AttentionInput,
    layout: TokenLayout,
    query: Query = None,
    image_ids: Sequence | None = None,
) -> pd.DataFrame:
    """:func:`attention_maps` as a tidy frame (what the attention-map figures draw).

    Returns
    -------
    pandas.DataFrame
        Columns ``image_id, layer, head, row, col, value``; ``layer`` the 1-based block number,
        ``head`` 0-based. ``image_id`` defaults to an attention frame's ids (else ``0..B-1``).
    """
    parsed = parse_attention(attentions)
    maps = attention_maps(parsed.layers, layout, query)
    heads = np.arange(maps.shape[2])
    ids = parsed.image_ids if image_ids is None else image_ids
    return grid_frame(maps, ["layer", "head"], {"layer": parsed.labels, "head": heads}, ids)


def mean_attention_distance_per_image(
    attentions: AttentionInput,
    layout: TokenLayout,
    patch_size: int | tuple[int, int] | None = None,
    renormalize: bool = False,
    image_ids: Sequence | None = None,
) -> pd.DataFrame:
    """Mean attention distance per image, layer and head (Dosovitskiy et al. 2021, ViT, Fig. 7).

    For each image, layer and head: ``mean_i sum_j A_ij d_ij`` over patch queries ``i`` and patch
    keys ``j``, ``d_ij`` the Euclidean distance in pixels between the patch centres. Prefix-token
    rows and columns (CLS, distillation, register) are dropped.

    Parameters
    ----------
    attentions : array, list, tuple, dict or attention frame
        Post-softmax attention in any form of :mod:`probing.attention.inputs`.
    layout : TokenLayout
        The model's token layout (grid, patch size, prefix positions).
    patch_size : int or (int, int), optional
        Patch size in pixels overriding ``layout.patch_size``.
    renormalize : bool
        False (default, the widely used convention of the ViT paper's released notebook): the
        patch-to-patch weights are used as they are, so each query's distance is scaled by
        ``1 - (its attention to prefix tokens)``. True: each query row is first renormalised to
        sum 1 over patch keys (a row with no patch mass contributes 0).

        Layers without patch queries (CaiT's class attention) give NaN; layers embedded into
        the full token set (:mod:`probing.attention.inputs`) average their real patch queries.
        Differential attention has signed weights (rows sum to ``1 - λ``): its distance is
        the signed weighted sum, and windowed attention (SAM) is zero outside the window.
    image_ids : sequence, optional
        Ids of the images (an attention frame's ids, else ``0..batch-1``, by default).

    Returns
    -------
    pandas.DataFrame
        One row per (image, layer, head): ``image_id, layer, head, distance_px``; ``layer`` the
        1-based block number, ``head`` 0-based. :func:`mean_attention_distance` summarises it
        over images.
    """
    check_layout_arg(layout)
    parsed = parse_attention(attentions)
    if image_ids is None:
        image_ids = parsed.image_ids
    arr, _ = stack_attentions(parsed.layers)
    labels = parsed.labels
    check_layout(arr, layout)
    dist = pairwise_patch_distances(layout, patch_size)
    sl = layout.patch_slice
    b, n_layers, n_heads = arr.shape[:3]
    out = np.empty((b, n_layers, n_heads))
    for li in range(n_layers):  # one layer at a time bounds memory
        p = arr[:, li, :, sl, sl]
        if renormalize:
            s = p.sum(-1, keepdims=True)
            p = np.divide(p, s, out=np.zeros_like(p), where=s > 0)
        per_query = np.einsum("bhij,ij->bhi", p, dist)
        if parsed.present is not None:  # only the patch queries the layer really has
            real = parsed.present[li, sl]
            per_query = per_query[..., real] if real.any() else np.full((b, n_heads, 1), np.nan)
        out[:, li] = per_query.mean(-1)
    ids = image_id_array(image_ids, b)
    img, lay, head = np.meshgrid(
        np.arange(b), np.arange(n_layers), np.arange(n_heads), indexing="ij"
    )
    return pd.DataFrame(
        {
            "image_id": ids[img.ravel()],
            "layer": labels[lay.ravel()],
            "head": head.ravel(),
            "distance_px": out.ravel(),
        }
    )


def mean_attention_distance(
    attentions: AttentionInput,
    layout: TokenLayout,
    patch_size: int | tuple[int, int] | None = None,
    renormalize: bool = False,
    *,
    per_image: object = None,
) -> pd.DataFrame:
    """Mean attention distance per layer and head over the images (ViT, Fig. 7 right).

    The summary of :func:`mean_attention_distance_per_image` (the same computation) over
    images.

    Parameters
    ----------
    attentions, layout, patch_size, renormalize
        As in :func:`mean_attention_distance_per_image`.
    per_image : None
        Removed: passing it raises :class:`~probing.errors.ConfigError`; one row per image is
        :func:`mean_attention_distance_per_image`'s.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, head): ``layer, head, distance_px, distance_std, distance_min,
        distance_max, n_images``, ``distance_px`` the mean over images and the others the
        spread over images (``distance_std`` with ddof 0); ``layer`` the 1-based block number,
        ``head`` 0-based.

    Raises
    ------
    ConfigError
        When ``per_image`` is passed.
    """
    if per_image is not None:
        raise ConfigError(
            f"mean_attention_distance(per_image={per_image!r}) is gone; call "
            "mean_attention_distance_per_image(attentions, layout, ...) for one row per image."
        )
    frame = mean_attention_distance_per_image(attentions, layout, patch_size, renormalize)
    g = frame.groupby(["layer", "head"], sort=True)["distance_px"]
    summary = g.agg(
        distance_px="mean",
        distance_std=lambda s: float(np.std(s)),
        distance_min="min",
        distance_max="max",
        n_images="size",
    )
    return summary.reset_index()
