"""Positional parameters read from models: learned absolute table, relative bias, RoPE bands.

Each function accepts a ``LoadedModel``-like object (``.model`` and ``.layout``) or a bare timm
ViT, and raises :class:`~probing.errors.ModelError` naming what the model has when it lacks the
asked-for parameters. See :mod:`probing.posenc` for the references.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import LayoutError, ModelError
from ..layout import POSITION_SCHEMES, TokenLayout
from .tables import table_frame

__all__ = ["learned_table", "relpos_bias", "rope_frequencies"]


def _unwrap(model: object) -> tuple[object, TokenLayout]:
    """Accept a LoadedModel-like object (``.model`` and ``.layout``) or a bare module."""
    if hasattr(model, "model") and hasattr(model, "layout"):
        return model.model, model.layout
    return model, TokenLayout.from_model(model)


#: How each scheme of :data:`~probing.layout.POSITION_SCHEMES` is named in messages, with the
#: function of this module that reads it where there is one.
_SCHEME_NAMES = {
    "learned": "a learned absolute table (learned_table)",
    "sincos": "a sinusoidal (Fourier) absolute encoding, not a learned table",
    "rope": "rotary embeddings (rope_frequencies)",
    "relpos": "relative-position biases (relpos_bias)",
    "relpos-beit": "BEiT's relative-position bias table (attn.relative_position_bias_table)",
    "relpos-sam": "SAM's decomposed relative position (attn.rel_pos_h / rel_pos_w)",
    "gpsa": "ConViT's gated positional self-attention (attn.pos_proj)",
}


def _describe_position(layout: TokenLayout) -> str:
    """The positional schemes of ``layout`` in words ("no positional parameters" when none)."""
    have = [_SCHEME_NAMES.get(p, POSITION_SCHEMES.get(p, p)) for p in layout.position]
    return " and ".join(have) if have else "no positional parameters"


def learned_table(model: object) -> pd.DataFrame:
    """A model's learned absolute positional embedding as a table frame.

    The ViT table (Dosovitskiy et al. 2021) is timm's ``pos_embed`` ``(1, n_rows, D)``; it has
    a row for every prefix token unless ``no_embed_class=True``, in which case prefix tokens get
    no positional vector and only patch rows are returned (tokens still numbered after the
    prefix).

    Parameters
    ----------
    model : LoadedModel or torch.nn.Module
        An object with ``.model`` and ``.layout`` (a :class:`~probing.layout.TokenLayout`), or a
        timm ViT (its layout is derived with ``TokenLayout.from_model``).

    Returns
    -------
    pandas.DataFrame
        Table frame (token, kind, row, col, emb float64), ``attrs["grid"] = (rows, cols)``.

    Raises
    ------
    ModelError
        When the model has no absolute table (naming what positional parameters it has).
    """
    module, layout = _unwrap(model)
    pos = getattr(module, "pos_embed", None)
    if pos is None or not hasattr(pos, "shape"):
        raise ModelError(
            f"{type(module).__name__} has no learned absolute positional table; it has "
            f"{_describe_position(layout)}; use the matching function instead."
        )
    vectors = pos.detach().to("cpu").double().numpy().reshape(-1, pos.shape[-1])
    expected = layout.num_patches + layout.pos_embed_offset
    if vectors.shape[0] != expected:
        raise ModelError(
            f"pos_embed has {vectors.shape[0]} rows but the layout {layout.grid} with "
            f"{layout.pos_embed_offset} prefix row(s) needs {expected}; pass the layout of the "
            "grid the table was trained for."
        )
    return table_frame(vectors, layout.grid, layout.prefix, embed_prefix=not layout.no_embed_class)


def relpos_bias(model: object, layer: int = 1) -> np.ndarray:
    """The relative-position attention bias of one block over patch pairs.

    For timm's ``vit_relpos_*`` models (relative position bias, Shaw et al. 2018; the Swin /
    timm ``RelPosBias`` and ``RelPosMlp`` variants), the bias added to the attention logits
    before the softmax, restricted to patch queries and patch keys.

    Parameters
    ----------
    model : LoadedModel or torch.nn.Module
        A model with relative-position bias.
    layer : int
        1-based block number (layer ``k`` is block ``k - 1``, as in
        :func:`probing.attention_hooks.capture_attention`); negative counts from the end.
        Ignored when the model shares one bias across blocks.

    Returns
    -------
    numpy.ndarray
        ``(heads, num_patches, num_patches)`` float64; ``[h, i, j]`` is the bias of query patch
        ``i`` to key patch ``j`` (row-major patch indices).

    Raises
    ------
    ModelError
        When the model has no relative-position bias.
    LayoutError
        When ``layer`` is not a block of the model.
    """
    import torch

    module, layout = _unwrap(model)
    shared = getattr(module, "shared_rel_pos", None)
    blocks = getattr(module, "blocks", [])
    if shared is None:
        depth = len(blocks)
        if not (1 <= layer <= depth or -depth <= layer <= -1):
            raise LayoutError(f"layer {layer} is not a block of this {depth}-block model; "
                              f"use 1..{depth} or a negative index.")
        block = blocks[layer - 1 if layer > 0 else layer]
        shared = getattr(getattr(block, "attn", None), "rel_pos", None)
    if shared is None or not hasattr(shared, "get_bias"):
        raise ModelError(
            f"{type(module).__name__} has no relative-position bias; it has "
            f"{_describe_position(layout)}; pass a vit_relpos_* model."
        )
    with torch.no_grad():
        bias = shared.get_bias().detach().to("cpu").double().numpy()
    bias = bias.reshape(bias.shape[-3:])
    n_pre = bias.shape[-1] - layout.num_patches
    return np.ascontiguousarray(bias[:, n_pre:, n_pre:])


def rope_frequencies(model: object) -> pd.DataFrame:
    """The rotary-embedding frequencies of a model with axial RoPE (Su et al. 2021; EVA-02).

    EVA-02 rotates query/key channel pairs of patch tokens by ``angle = coord * band``, one set
    of bands for the row coordinate and the same set for the column coordinate. The coordinate
    of patch ``(r, c)`` on an ``"index"`` grid is ``r * ref_rows / rows`` (EVA's
    ``ref_feat_shape`` rescaling; ``r`` without it); on a ``"pixel"`` grid it is
    ``-1 + 2r / (rows - 1)``.

    Returns
    -------
    pandas.DataFrame
        One row per (axis, band): ``axis`` (``"row"``/``"col"``), ``band`` (index), ``frequency``
        (radians per coordinate unit, as stored), ``rad_per_patch`` (radians per one-patch
        step), ``period_patches`` (``2 pi / rad_per_patch``). ``attrs`` holds the grid type.

    Raises
    ------
    ModelError
        When the model has no RoPE, or a RoPE variant without fixed frequency bands.
    """
    module, layout = _unwrap(model)
    rope = getattr(module, "rope", None)
    if rope is None:
        raise ModelError(
            f"{type(module).__name__} has no rotary position embedding; it has "
            f"{_describe_position(layout)}; pass an EVA-02-style model."
        )
    bands = getattr(rope, "bands", None)
    if bands is None or getattr(bands, "ndim", 0) != 1:
        raise ModelError(f"{type(rope).__name__} has no fixed 1-D frequency bands; only axial "
                         "RoPE with fixed bands (EVA-02 'cat') is supported.")
    bands = bands.detach().to("cpu").double().numpy()
    grid_type = getattr(rope, "grid_type", "index")
    feat = tuple(getattr(rope, "feat_shape", None) or layout.grid)
    ref = getattr(rope, "ref_feat_shape", None)
    steps = []
    for a in range(2):
        if grid_type == "index":
            steps.append(ref[a] / feat[a] if ref is not None else 1.0)
        elif grid_type == "pixel":
            steps.append(2.0 / max(feat[a] - 1, 1))
        else:
            steps.append(2.0 / feat[a])
    if getattr(rope, "grid_indexing", "ij") == "xy":
        steps = steps[::-1]
    n = len(bands)
    rad = np.concatenate([bands * steps[0], bands * steps[1]])
    frame = pd.DataFrame({
        "axis": ["row"] * n + ["col"] * n,
        "band": np.tile(np.arange(n), 2),
        "frequency": np.tile(bands, 2),
        "rad_per_patch": rad,
        "period_patches": 2 * np.pi / rad,
    })
    frame.attrs["grid_type"] = grid_type
    return frame
