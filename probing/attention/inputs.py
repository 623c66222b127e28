"""The one parser of attention input, and the checks every attention function shares.

Every public function that takes attention reads it here (:func:`parse_attention`).

Accepted forms (post-softmax weights; rows are queries, columns keys; numpy or torch):

=================================================  ===============================================
form                                               read as
=================================================  ===============================================
array ``(B, L, H, N, N)``                          B images, L layers labelled ``1..L``
array ``(L, H, N, N)``                             one image, L layers labelled ``1..L``
list or tuple of per-layer ``(B, H, N, N)``        L layers (``1..L``), e.g. Hugging Face
                                                   ``output_attentions`` or hook output
list or tuple of per-layer ``(H, N, N)``           one image, L layers (``1..L``)
dict ``{block: (B, H, N, N)}`` or ``(H, N, N)``    layers labelled by their keys (1-based block
                                                   numbers, taken in increasing order), what
                                                   ``attention_hooks.capture_attention`` fills
attention frame (``image_id, layer, head,          the store's attention (what
query, weights``; :mod:`probing.attention_frames`)  ``EmbeddingStore.read_attention`` returns),
                                                   stored labels, image ids from the frame
``DenseAttention`` (a frame's dense arrays,        as the frame it was read from (what
:func:`~probing.attention_frames.dense_attention`)  ``RunContext.dense_attention`` returns)
=================================================  ===============================================

Layers may hold fewer tokens or fewer queries than the others (CaiT's class attention is
``(B, H, 1, 1 + N)`` after ``N x N`` patch-only blocks; ConViT's GPSA blocks run before its
CLS token joins): each layer is then embedded into the ``N_full x N_full`` matrix of the
layer with the most keys. A layer with ``k`` keys holds the **last** ``k`` tokens (prefix
tokens join in front, as timm prepends them) and its ``q <= k`` queries are the first ``q``
of its keys; the rows of tokens a layer does not hold or update are zero, and
:attr:`ParsedAttention.present` says which rows are real. Rollout then passes such tokens
through unchanged (a zero row plus the residual identity renormalises to the identity);
attention maps of an absent query are zero; mean attention distance averages the real patch
queries only.

A list or tuple always means layers, never images: stacking it as an array would read the
layers as a batch, so a list of 5-D arrays (or of mixed shapes) is refused with a
:class:`~probing.errors.DataError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..attention_frames import DenseAttention, dense_attention, layer_offset
from ..errors import ConfigError, DataError, LayoutError
from ..layout import TokenLayout

__all__ = [
    "ATTENTION_FORMS",
    "AttentionInput",
    "ParsedAttention",
    "Query",
    "check_layout",
    "check_layout_arg",
    "embed_layers",
    "parse_attention",
    "query_rows",
    "stack_attentions",
]

AttentionInput = np.ndarray | Sequence[Any] | Mapping[int, Any] | pd.DataFrame | Any
#: A query token: None (CLS, or the mean over patch queries without CLS), "cls", "dist", "reg",
#: "pooled" (the mean over patch queries) or a sequence position (see
#: :meth:`TokenLayout.query_index`).
Query = int | str | None
ATTENTION_FORMS = (
    "(B, L, H, N, N) or (L, H, N, N) array, a list/tuple of per-layer (B, H, N, N) or "
    "(H, N, N) arrays, a dict {block: (B, H, N, N)}, or an attention frame"
)


@dataclass(frozen=True)
class ParsedAttention:
    """Attention split into layers.

    Attributes
    ----------
    layers : list of numpy.ndarray
        One ``(B, H, N, N)`` array per layer, in increasing label order, in the input's
        precision (float64 stays float64; torch tensors of other float types become float32).
    labels : numpy.ndarray
        ``(L,)`` int64 layer labels (1-based block numbers).
    image_ids : numpy.ndarray or None
        ``(B,)`` ids when the input carried them (an attention frame), else None.
    present : numpy.ndarray or None
        ``(L, N)`` bool, which query rows each layer really has, when some layers were embedded
        into the full token set (module docstring); None when every row is real.
    """

    layers: list[np.ndarray]
    labels: np.ndarray
    image_ids: np.ndarray | None = None
    present: np.ndarray | None = None

    def stacked(self, dtype: type = np.float64) -> np.ndarray:
        """``(B, L, H, N, N)`` array of ``dtype``."""
        return np.stack([a.astype(dtype, copy=False) for a in self.layers], axis=1)


def _array(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        import torch

        t = x.detach().cpu()  # type: ignore[union-attr]
        return (t if t.dtype == torch.float64 else t.float()).numpy()
    return np.asarray(x)


def _refuse(shape: object, why: str = "") -> DataError:
    return DataError(f"attention input {shape} is not an accepted form{why}; pass a "
                     f"{ATTENTION_FORMS} (see probing.attention.inputs).")


def _per_layer(values: Sequence[object], what: str) -> list[np.ndarray]:
    """Per-layer arrays, all ``(B, H, N, N)`` (a ``(H, N, N)`` layer is one image)."""
    arrays = [_array(v) for v in values]
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1 or ndims.pop() not in (3, 4):
        raise _refuse(f"{what} of arrays with shapes {[a.shape for a in arrays]}",
                      ": each layer must be (B, H, N, N) or (H, N, N), all alike")
    return [a[None] if a.ndim == 3 else a for a in arrays]


def parse_attention(attentions: AttentionInput) -> ParsedAttention:
    """Split attention in any accepted form (module docstring) into checked layers.

    Parameters
    ----------
    attentions : array, list, tuple, dict or attention frame
        Post-softmax attention in one of the accepted forms.

    Returns
    -------
    ParsedAttention

    Raises
    ------
    DataError
        An empty input, a shape that is not an accepted form, non-square matrices, or layers
        with different numbers of images or tokens.
    """
    ids = frame_present = None
    if isinstance(attentions, (pd.DataFrame, DenseAttention)):  # before tuple: a NamedTuple
        dense = attentions if isinstance(attentions, DenseAttention) else \
            dense_attention(attentions)
        arr, ids, frame_present = dense.weights, dense.image_ids, dense.present
        layers = [arr[:, i] for i in range(arr.shape[1])]
        labels = np.asarray(dense.layers, dtype=np.int64)
    elif isinstance(attentions, Mapping):
        if not attentions:
            raise DataError("attentions is an empty dict; capture at least one layer.")
        keys = sorted(int(k) for k in attentions)
        layers = _per_layer([attentions[k] for k in keys], "a dict")
        labels = np.asarray(keys, dtype=np.int64)
    elif isinstance(attentions, (list, tuple)):
        if not attentions:
            raise DataError("attentions is an empty list; pass at least one layer.")
        layers = _per_layer(attentions, f"a {type(attentions).__name__}")
        labels = np.arange(1, len(layers) + 1, dtype=np.int64)
    else:
        arr = _array(attentions)
        if arr.ndim == 4:
            arr = arr[None]
        if arr.ndim != 5:
            raise _refuse(f"of shape {arr.shape}")
        layers = [arr[:, i] for i in range(arr.shape[1])]
        labels = np.arange(1, arr.shape[1] + 1, dtype=np.int64)
    if not layers:
        raise DataError("attentions holds no layer; pass at least one.")
    for a in layers:
        if a.shape[-2] > a.shape[-1]:
            raise _refuse(f"with a layer of shape {a.shape}",
                          ": attention is (queries, keys) per head with queries <= keys")
    batches = sorted({a.shape[0] for a in layers})
    if len(batches) > 1:
        shapes = sorted({(a.shape[0], a.shape[-1]) for a in layers})
        raise DataError(f"the layers' attentions have different (batch, N): {shapes}; pass "
                        "layers of the same images.")
    layers, present = embed_layers(layers)
    if frame_present is not None:  # a frame is stored in the full token set already
        present = frame_present
    return ParsedAttention(layers, labels, None if ids is None else np.asarray(ids), present)


def embed_layers(layers: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Embed ``(B, H, q, k)`` layers into the full ``(B, H, N, N)`` token set (module docstring;
    the placement is :func:`probing.attention_frames.layer_offset`, as in attention frames).

    Returns
    -------
    (list of numpy.ndarray, numpy.ndarray or None)
        The layers (unchanged when all are ``N x N`` already) and the ``(L, N)`` bool mask of
        real query rows (None when nothing was embedded).
    """
    n = max(a.shape[-1] for a in layers)
    if all(a.shape[-2:] == (n, n) for a in layers):
        return layers, None
    present = np.zeros((len(layers), n), dtype=bool)
    out = []
    for li, a in enumerate(layers):
        q, k = a.shape[-2:]
        if (q, k) == (n, n):
            out.append(a)
            present[li] = True
            continue
        off = layer_offset(k, n)
        full = np.zeros((*a.shape[:2], n, n), dtype=a.dtype)
        full[..., off:off + q, off:] = a
        present[li, off:off + q] = True
        out.append(full)
    return out, present


def stack_attentions(attentions: AttentionInput) -> tuple[np.ndarray, np.ndarray]:
    """Stack attention into one float64 array and its layer labels.

    Parameters
    ----------
    attentions : array, list, tuple, dict or attention frame
        Any accepted form (module docstring).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The ``(batch, layers, heads, N, N)`` float64 array and the ``(layers,)`` int64 labels
        (``1..L`` for an array or a list, the sorted keys of a dict, the stored labels of a
        frame).

    Raises
    ------
    DataError
        When the form or shape is wrong or the values are not finite.
    """
    parsed = parse_attention(attentions)
    arr = parsed.stacked(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError("attentions holds NaN or infinite values; pass post-softmax weights.")
    return arr, parsed.labels


def check_layout_arg(layout: object, required: bool = True, where: str = "second") -> None:
    """Refuse a ``layout`` that is not a TokenLayout (e.g. an old positional argument).

    ``where`` names its position for the message: ``"second"`` after attention arrays or
    images, ``"third"`` after a model and its images (see the package docstring).

    Raises
    ------
    ConfigError
        When ``layout`` is not a TokenLayout (None passes when not ``required``).
    """
    if layout is None and not required:
        return
    if not isinstance(layout, TokenLayout):
        shown = repr(layout) if len(repr(layout)) <= 40 else f"(a {type(layout).__name__})"
        raise ConfigError(
            f"layout {shown} is not a TokenLayout; pass TokenLayout.from_model(model) as "
            f"layout=... (the {where} argument)."
        )


def check_layout(arr: np.ndarray, layout: TokenLayout) -> None:
    """Refuse attention ``(..., N, N)`` whose ``N`` is not the layout's number of tokens.

    Raises
    ------
    LayoutError
        When ``arr.shape[-1] != layout.n_tokens``.
    """
    if arr.shape[-1] != layout.n_tokens:
        raise LayoutError(
            f"attention has {arr.shape[-1]} tokens but the layout has {layout.n_tokens} "
            f"({layout.num_prefix_tokens} prefix + {layout.num_patches} patches); pass the "
            "layout of the model (and image size) that produced it."
        )


def query_rows(a: np.ndarray, layout: TokenLayout, query: Query) -> np.ndarray:
    """The query's row over all keys of ``(..., N, N)``: ``a[..., q, :]``, ``(..., N)``.

    For ``query`` None on a model without CLS (or ``"pooled"``), the mean over patch queries.
    """
    q = layout.query_index(query)
    if q is None:
        return a[..., layout.patch_slice, :].mean(axis=-2)
    return a[..., q, :]
