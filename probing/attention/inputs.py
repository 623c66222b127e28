"""The one parser of attention input: every public function that takes attention reads it here.

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
                                                   :func:`probing._attn.capture_attention` fills
attention frame (``image_id, layer, head,          the store's attention (what
query, weights``; :mod:`probing.attention_frames`)  ``EmbeddingStore.read_attention`` returns),
                                                   stored labels, image ids from the frame
=================================================  ===============================================

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

from .errors import DataError

__all__ = ["ATTENTION_FORMS", "AttentionInput", "ParsedAttention", "parse_attention"]

AttentionInput = np.ndarray | Sequence[Any] | Mapping[int, Any] | pd.DataFrame | Any
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
    """

    layers: list[np.ndarray]
    labels: np.ndarray
    image_ids: np.ndarray | None = None

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
                     f"{ATTENTION_FORMS} (see probing.attention_input).")


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
    ids = None
    if isinstance(attentions, pd.DataFrame):
        from .attention_frames import attention_array

        arr, ids, frame_labels = attention_array(attentions)
        layers = [arr[:, i] for i in range(arr.shape[1])]
        labels = np.asarray(frame_labels, dtype=np.int64)
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
        if a.shape[-1] != a.shape[-2]:
            raise _refuse(f"with a layer of shape {a.shape}", ": attention is (N, N) per head")
    shapes = sorted({(a.shape[0], a.shape[-1]) for a in layers})
    if len(shapes) > 1:
        raise DataError(f"the layers' attentions have different (batch, N): {shapes}; pass "
                        "layers of the same images.")
    return ParsedAttention(layers, labels, None if ids is None else np.asarray(ids))
