"""Attention rollout and gradient-weighted rollout (joint attention, relevance, their maps).

Every function is layout-aware: token positions come from a :class:`~probing.layout.TokenLayout`
(CLS, distillation and register tokens at any position, models without a CLS token,
non-square grids). Nothing here assumes that token 0 is CLS.

Conventions
-----------
- ``attentions`` is post-softmax attention in any form :mod:`probing.attention.inputs` accepts
  (one parser for every function): an array ``(batch, layers, heads, N, N)`` or
  ``(layers, heads, N, N)``, a list/tuple of per-layer ``(batch, heads, N, N)`` or
  ``(heads, N, N)`` arrays (lists mean layers, never images), the dict
  ``{layer: (batch, heads, N, N)}`` that
  :func:`probing.attention_hooks.capture_attention` fills, or the store's attention frame.
  Rows are queries, columns keys.
- ``layout`` is the second parameter of every function that takes ``attentions``
  ``(attentions, layout, ...)`` and the third of every function that takes a model
  ``(model, images, layout, ...)`` (the package docstring states the rule).
- Maps over the patch grid are ``(..., rows, cols)`` in the layout's row-major patch order.
- Every timm family :mod:`probing.attention_hooks` captures is defined here: parallel
  branches are heads side by side (head-mean fusion averages the branches, whose outputs the
  block sums); differential attention enters with its signed effective weights (rows sum to
  ``1 - λ`` and are renormalised with the residual like any row); SAM windows are full
  ``N x N`` matrices that are zero outside the window; CaiT's class attention and the blocks
  before ConViT's CLS joins are embedded into the full token set with zero rows for tokens
  the block does not update (:mod:`probing.attention.inputs`), so those tokens pass through
  rollout and gradient rollout unchanged.
- Rollout's per-layer matrices and their products keep the input's precision (float32 for
  captured attention, which is float32 already; float64 for float64 input), which halves the
  memory traffic and is ~10x faster in BLAS. Every function returns float64 numpy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError, LayoutError
from ..layout import TokenLayout
from ..models import eval_mode, module_device
from ..patchgrid import to_grid
from ..targets import resolve_targets
from .inputs import (
    AttentionInput,
    Query,
    check_layout,
    check_layout_arg,
    embed_layers,
    parse_attention,
    query_rows,
)

__all__ = [
    "HeadFusion",
    "JointAttention",
    "gradient_relevance",
    "gradient_rollout",
    "rollout",
    "rollout_map",
]

HeadFusion = Literal["mean", "max", "min"]


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------ rollout
class JointAttention(np.ndarray):
    """The ``(batch, N, N)`` joint attention of :func:`rollout`, a numpy array with warnings.

    Attributes
    ----------
    warnings : tuple of str
        One message per (image, layer) in which a row of the fused matrix summed to 0 and was
        left as zeros instead of being divided by 0. Empty when the rollout is clean.
    """

    warnings: tuple[str, ...]

    def __new__(cls, array: np.ndarray, warnings: Sequence[str] = ()) -> JointAttention:
        obj = np.asarray(array).view(cls)
        obj.warnings = tuple(warnings)
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self.warnings = getattr(obj, "warnings", ())


def _work_dtype(a: np.ndarray) -> type:
    """float64 for float64 input, float32 for everything else (float32/16, bfloat16 via torch)."""
    return np.float64 if a.dtype == np.float64 else np.float32


def _fused_layers(attentions: AttentionInput, head_fusion: str) -> tuple[np.ndarray, np.ndarray]:
    """Heads fused per layer, ``(batch, layers, N, N)``, and the layer labels.

    The result is float32 when every layer's input is float32 (or narrower), else float64 (see
    the module docstring); fusing first keeps the copy ``heads`` times smaller than
    :func:`~probing.attention.inputs.stack_attentions`'.
    """
    if head_fusion not in ("mean", "max", "min"):
        raise ConfigError(f"head_fusion {head_fusion!r} is unknown; use 'mean', 'max' or 'min'.")
    parsed = parse_attention(attentions)
    arrays, labels = parsed.layers, parsed.labels.tolist()
    dtype = np.float64 if any(_work_dtype(x) == np.float64 for x in arrays) else np.float32
    b, n = arrays[0].shape[0], arrays[0].shape[-1]
    out = np.empty((b, len(arrays), n, n), dtype=dtype)
    # heads fused with elementwise ufuncs into the preallocated output: a contiguous loop over
    # heads measured ~2.8x faster than ndarray.mean over the head axis
    op = {"mean": np.add, "max": np.maximum, "min": np.minimum}[head_fusion]
    for li, a in enumerate(arrays):
        o = out[:, li]
        if a.shape[1] == 1:
            o[...] = a[:, 0]
        else:
            op(a[:, 0], a[:, 1], out=o, dtype=dtype)
        for h in range(2, a.shape[1]):
            op(o, a[:, h], out=o, dtype=dtype)
        if head_fusion == "mean" and a.shape[1] > 1:
            o *= 1.0 / a.shape[1]
    if head_fusion == "min" and not np.all(np.isfinite(out)):
        # mean and max carry any NaN/inf into the row sums checked in _rollout_layers
        raise DataError("attentions holds NaN or infinite values; pass post-softmax weights.")
    return out, np.asarray(labels, dtype=np.int64)


#: Up to this ``N``, :func:`_bmm` uses numpy's own stacked matmul (no thread pool).
_SMALL_N = 64


def _bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a @ b`` over the first axis with ``torch.bmm`` on zero-copy views (numpy's
    stacked matmul skips BLAS; a loop of numpy float64 matmuls measured 5x slower here).

    Small matrices (``N <= 64``, e.g. 37 tokens) use numpy's stacked matmul: ``torch.bmm``
    opens a parallel region over the batch, which measured 8 ms of CPU (20 ms wall) per
    ``(8, 37, 37)`` product with 2 threads on a loaded machine, against 0.02 ms in numpy."""
    import torch

    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    if a.shape[-1] <= _SMALL_N and b.shape[-1] <= _SMALL_N:
        return np.matmul(a, b)
    return torch.bmm(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _discard(fused: np.ndarray, ratio: float, protect: int | None) -> np.ndarray:
    """Zero the ``ratio`` fraction of lowest entries of each ``(N, N)`` matrix, except one."""
    *lead, n, _ = fused.shape
    flat = fused.reshape(-1, n * n).copy()
    k = int(n * n * ratio)
    if k == 0:
        return fused
    ranked = flat.copy()
    if protect is not None:
        ranked[:, protect * n + protect] = np.inf
    k = min(k, n * n - (protect is not None))
    idx = np.argpartition(ranked, k - 1, axis=1)[:, :k]
    np.put_along_axis(flat, idx, 0.0, axis=1)
    return flat.reshape(*lead, n, n)


def rollout(
    attentions: AttentionInput,
    layout: TokenLayout | None = None,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int | None = None,
    residual: bool = True,
) -> JointAttention:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

    Per layer ``l`` (from ``start_layer`` on): fuse the heads (mean, max or min) into
    ``A_l`` ``(N, N)``; zero the ``discard_ratio`` fraction of lowest entries of each image's
    ``A_l`` (never the CLS->CLS entry); ``Ã_l = (A_l + I) / 2`` (the residual connection);
    renormalise each **row** to sum 1; then ``R = Ã_L ··· Ã_1`` (later layers on the left).

    A popular implementation divides columns instead of rows (its issue #16) and, for its
    discard, drops the CLS->CLS entry from the lowest-k set after choosing it (so it zeroes one
    entry fewer when CLS->CLS is among the lowest). We follow the paper: rows are renormalised
    and exactly ``int(discard_ratio * N * N)`` entries other than the protected one are zeroed.

    Parameters
    ----------
    attentions : array, list, tuple, dict or attention frame
        Post-softmax attention in any form of :mod:`probing.attention.inputs`.
    layout : TokenLayout, optional
        Needed when ``discard_ratio > 0`` (to find CLS); also checks ``N``.
    head_fusion : {"mean", "max", "min"}
        How heads are fused per layer.
    discard_ratio : float
        Fraction in ``[0, 1)`` of each image's fused ``N x N`` entries to zero, lowest first,
        chosen per image and layer. The CLS->CLS entry (position from ``layout``) is never
        zeroed; for models without CLS no entry is protected (with ``residual=True`` the
        identity keeps every row non-zero anyway).
    start_layer : int, optional
        First layer label to include (1-based block number; layers before it are skipped). All
        layers by default.
    residual : bool
        Add the identity for the residual connection (the paper's rollout). False multiplies the
        raw fused attention (no ``+ I``), where rows emptied by the discard can occur.

    Returns
    -------
    JointAttention
        ``(batch, N, N)`` float64 numpy array (subclass) ``R``; row ``i`` is how token ``i`` of
        the last layer's output draws on the input tokens, and sums to 1. Never NaN: a row of a
        fused matrix that sums to 0 is left as zeros, and each such event is recorded in
        ``R.warnings`` and emitted once with :func:`warnings.warn` (``RuntimeWarning``).
    """
    fused, notes = _rollout_layers(
        attentions, head_fusion, discard_ratio, layout, start_layer, residual
    )
    joint = fused[:, 0]
    for li in range(1, fused.shape[1]):
        joint = _bmm(fused[:, li], joint)
    return JointAttention(joint.astype(np.float64, copy=False), notes)


def _from_layer(labels: np.ndarray, start_layer: int) -> np.ndarray:
    """Mask of the layer labels from ``start_layer`` on (a LayoutError when none is)."""
    keep = labels >= int(start_layer)
    if not keep.any():
        raise LayoutError(
            f"start_layer {start_layer} is after the last layer {labels.max()}; pass one of "
            f"{labels.tolist()}."
        )
    return keep


def _rollout_layers(
    attentions: AttentionInput,
    head_fusion: str,
    discard_ratio: float,
    layout: TokenLayout | None,
    start_layer: int | None,
    residual: bool,
) -> tuple[np.ndarray, list[str]]:
    """Each layer's ``Ã_l`` of :func:`rollout`, ``(batch, layers, N, N)``, and zero-row notes."""
    check_layout_arg(layout, required=False)
    fused, labels = _fused_layers(attentions, head_fusion)  # (B, L, N, N)
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise ConfigError(f"discard_ratio {discard_ratio!r} is outside [0, 1); pass e.g. 0.9.")
    if layout is not None:
        check_layout(fused, layout)
    elif discard_ratio > 0:
        raise ConfigError(
            "discard_ratio > 0 needs the layout to protect the CLS->CLS entry; pass "
            "layout=TokenLayout.from_model(model)."
        )
    if start_layer is not None:
        keep = _from_layer(labels, start_layer)
        fused, labels = fused[:, keep], labels[keep]
    if discard_ratio > 0:
        fused = _discard(fused, discard_ratio, layout.cls_index if layout else None)
    if residual:  # (A + I) / 2, in place (fused is our own copy)
        fused *= 0.5
        np.einsum("...ii->...i", fused)[...] += 0.5
    sums = fused.sum(-1, keepdims=True)
    if not np.all(np.isfinite(sums)):
        raise DataError("attentions holds NaN or infinite values; pass post-softmax weights.")
    if np.all(sums > 0):
        fused /= sums
    else:
        fused = np.divide(fused, sums, out=np.zeros_like(fused), where=sums > 0)
    notes = []
    for b, li in zip(*np.nonzero((sums[..., 0] <= 0).any(-1))):
        rows = np.flatnonzero(sums[b, li, :, 0] <= 0)
        notes.append(
            f"image {b}, layer {labels[li]}: rows {rows.tolist()} of the fused attention sum to 0 "
            "and were left as zeros"
        )
    if notes:
        warnings.warn(
            f"rollout: {len(notes)} zero rows left as zeros (see .warnings)",
            RuntimeWarning,
            stacklevel=3,
        )
    return fused, notes


def _scale_max(maps: np.ndarray) -> np.ndarray:
    """Divide each ``(rows, cols)`` map by its maximum (maps with max <= 0 unchanged)."""
    m = maps.reshape(maps.shape[0], -1).max(-1)[:, None, None]
    return np.divide(maps, m, out=maps.copy(), where=m > 0)


def rollout_map(
    attentions: AttentionInput,
    layout: TokenLayout,
    query: Query = None,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int | None = None,
    residual: bool = True,
) -> np.ndarray:
    """The query's row of the :func:`rollout` over the patch grid, scaled to max 1.

    Computed as the row vector ``e_q^T Ã_L ··· Ã_1`` (the same numbers as the row of the joint
    attention, without forming the ``N x N`` product).

    Parameters
    ----------
    query : int, str or None
        As in :func:`attention_maps` (CLS by default; ``"pooled"``, the mean over patch
        queries, without CLS).
    Other parameters
        As in :func:`rollout`.

    Returns
    -------
    numpy.ndarray
        ``(batch, rows, cols)`` float64, each image divided by its maximum (an all-zero map
        stays zero).
    """
    check_layout_arg(layout)
    if head_fusion == "mean" and discard_ratio == 0 and residual:
        row = _mean_residual_row(attentions, layout, query, start_layer)
        if row is not None:
            return _scale_max(to_grid(row, layout))
    fused, _ = _rollout_layers(
        attentions, head_fusion, discard_ratio, layout, start_layer, residual
    )
    check_layout(fused, layout)
    # the query's row of R = Ã_L ··· Ã_1, propagated from the left: e_q^T Ã_L ... Ã_1
    # (or the mean of the patch rows), O(N^2) per layer instead of the full O(N^3) product
    q = layout.query_index(query)
    row = np.zeros(fused.shape[-1], dtype=fused.dtype)
    if q is None:
        row[layout.patch_slice] = 1.0 / layout.num_patches
    else:
        row[q] = 1.0
    row = np.broadcast_to(row, (fused.shape[0], fused.shape[-1]))
    for li in range(fused.shape[1] - 1, -1, -1):
        row = np.einsum("bi,bij->bj", row, fused[:, li])
    return _scale_max(to_grid(row.astype(np.float64), layout))


def _mean_residual_row(attentions: AttentionInput, layout: TokenLayout, query: Query,
                       start_layer: int | None) -> np.ndarray | None:
    """:func:`rollout_map`'s row ``(batch, N)`` float64 for the default rollout (head mean,
    ``+ I``, no discard) in one pass over the weights, or None when a fused row sums to 0
    (the general path then leaves it as zeros and says so).

    With ``S = sum_h A_h`` and ``d_i = (sum_j S[i, j] / heads + 1) / 2``, the row of
    ``Ã = D^-1 (Ā + I) / 2`` times a row vector ``r`` is ``((r / d) · S / heads + r / d) / 2``:
    an image's layer is read from memory once, to sum its heads (under 1 MB for vit_small at
    224 px), and the row sums and the product then run on the ``N x N`` sum in the cache
    (vit_small, 224 px, batch 8, one thread, after a forward: 8.1 ms against 11.4 ms for two
    products over the ``heads * N`` rows, and 6.9 ms to read the weights once). The last
    layer (the first step) needs only the query's rows (its other rows are not read, so a NaN
    there is not reported: it cannot reach the map)."""
    parsed = parse_attention(attentions)
    arrays, labels = parsed.layers, parsed.labels
    if start_layer is not None:
        arrays = [a for a, k in zip(arrays, _from_layer(labels, start_layer)) if k]
    check_layout(arrays[0], layout)
    dtype = np.float64 if any(_work_dtype(a) == np.float64 for a in arrays) else np.float32
    b, h, n = arrays[0].shape[0], arrays[0].shape[1], arrays[0].shape[-1]
    q = layout.query_index(query)
    rows = slice(None) if q is None else slice(q, q + 1)  # the first step's query rows
    start = np.zeros((b, n), dtype=dtype)
    start[:, layout.patch_slice if q is None else q] = 1.0 / (layout.num_patches
                                                             if q is None else 1)
    row = start
    for li in range(len(arrays) - 1, -1, -1):
        out = np.empty((b, n), dtype=dtype)
        for i in range(b):
            heads = np.asarray(arrays[li][i, :, rows])  # (heads, rows, N): a view
            summed = heads.sum(axis=0, dtype=dtype)  # (rows, N): the one read of the weights
            d = (summed.sum(axis=1) / h + 1.0) * 0.5
            if not np.all(np.isfinite(d)):
                raise DataError("attentions holds NaN or infinite values; pass post-softmax "
                                "weights.")
            if not np.all(d > 0):
                return None
            scaled = row[i, rows] / d
            out[i] = scaled @ summed * (0.5 / h)
            out[i, rows] += 0.5 * scaled
        row, rows = out, slice(None)
    return row.astype(np.float64)


# ----------------------------------------------------------------- gradient rollout
def gradient_relevance(
    model: object,
    images: object,
    layout: TokenLayout | None = None,
    target: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, ICCV, "generic" rule).

    ``R = I``; for each layer in forward order ``R = R + Ā_l R`` with
    ``Ā_l = mean_heads((∇A_l ⊙ A_l)^+)``, ``∇A_l`` the gradient of the target logit with
    respect to layer ``l``'s own attention ``A_l``. Runs the stock timm model with hooks
    (:func:`probing.attention_hooks.capture_attention`), no re-implemented ViT. A popular
    implementation pairs the attentions with the gradients in reverse order (its issue #6);
    here each layer's attention is paired with its own gradient.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT (put in eval mode for the call and restored after).
    images : torch.Tensor or numpy.ndarray
        ``(batch, channels, height, width)`` preprocessed images; moved to the model's device.
    layout : TokenLayout, optional
        Checked against the captured attention when given.
    target : int or sequence of int, optional
        Class per image (or one for all); the predicted class by default.

    Returns
    -------
    numpy.ndarray
        ``(batch, N, N)`` float64 relevance ``R``.
    """
    import torch

    from ..attention_hooks import capture_attention

    check_layout_arg(layout, required=False, where="third")
    device = module_device(model, "cpu")  # type: ignore[arg-type]
    x = torch.as_tensor(images, dtype=torch.float32).to(device)
    with eval_mode(model):  # the caller's training flags come back as they were
        with torch.enable_grad(), capture_attention(model, keep_grad=True) as store:  # type: ignore[arg-type]
            logits = model(x)  # type: ignore[operator]
            t = resolve_targets(logits, target)
            layers = sorted(store)
            attn = [store[k] for k in layers]
            grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), attn)
    # forward order, each layer with its own gradient; layers with fewer tokens or queries
    # (class attention, late-joining CLS) embedded with zero rows: those tokens are unchanged
    cams, _ = embed_layers([np.clip(_to_numpy(g) * _to_numpy(a), 0.0, None).mean(axis=1)[:, None]
                            for a, g in zip(attn, grads)])
    n = cams[0].shape[-1]
    if layout is not None and n != layout.n_tokens:
        raise LayoutError(
            f"the model's attention has {n} tokens but the layout has {layout.n_tokens}; pass "
            "the layout of this model and image size."
        )
    rel = np.broadcast_to(np.eye(n), (x.shape[0], n, n)).copy()
    for cam in cams:
        rel = rel + _bmm(cam[:, 0], rel)
    return rel


def gradient_rollout(
    model: object,
    images: object,
    layout: TokenLayout | None = None,
    target: int | Sequence[int] | None = None,
    query: Query = None,
) -> np.ndarray:
    """Gradient-weighted relevance map over the patch grid (Chefer et al. 2021), scaled to max 1.

    Reads the query's row of :func:`gradient_relevance` over patch keys: the CLS row by default,
    or the mean over patch rows for models without CLS. The initial self-relevance ``I`` is
    removed first, so a patch query's own patch is not spiked by it (for the CLS row this
    changes nothing, CLS not being a patch key).

    Parameters
    ----------
    model, images
        As in :func:`gradient_relevance`.
    layout : TokenLayout, optional
        Defaults to ``TokenLayout.from_model(model, img_size=images.shape[-2:])``.
    target
        As in :func:`gradient_relevance`.
    query : int, str or None
        As in :func:`attention_maps`.

    Returns
    -------
    numpy.ndarray
        ``(batch, rows, cols)`` float64, each image divided by its maximum.
    """
    check_layout_arg(layout, required=False, where="third")
    if layout is None:
        layout = TokenLayout.from_model(model, img_size=tuple(np.shape(images)[-2:]))
    rel = gradient_relevance(model, images, layout, target)
    rel = rel - np.eye(rel.shape[-1])
    return _scale_max(to_grid(query_rows(rel, layout, query), layout))
