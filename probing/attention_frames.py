"""Attention weights as tables: one row per (image, layer, head, query).

Schema: ``image_id``, ``layer`` (int16, block number), ``head`` (int16), ``query`` (int16,
sequence position in the full token set), ``weights`` (``list<float32, N>``: the query's
attention over all ``N`` tokens of the model's full sequence, keys in sequence order).

Every layer is written at the same width ``N`` (the full token set, ``layout.n_tokens``), so
the layers of one model concatenate into one table and read back as they were written. A
layer whose block holds fewer tokens is placed by the one rule of :func:`layer_offset`: a
block with ``k`` keys holds the **last** ``k`` tokens (prefix tokens join in front, as timm
prepends them), and its ``q <= k`` queries are the first ``q`` of its keys. Keys it does not
hold are zero, and only the queries it updates have rows: CaiT's self-attention blocks and
ConViT's GPSA blocks have rows for the patch queries ``P..N-1`` only (no CLS row, zero weight
on the CLS key), CaiT's class-attention blocks one row (``query`` 0, over CLS + patches).
:func:`dense_attention` rebuilds the ``(N, N)`` matrices with zero rows where a layer has no
query and says which rows are real; :func:`probing.attention.inputs.embed_layers` embeds
in-memory layers by the same rule. Parallel blocks number heads across branches (``head =
branch * num_heads + h``); what each family stores is listed in
:mod:`probing.attention_hooks`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import SchemaError
from .frames import embedding_matrix, frame_from_table, vectors_to_arrow

__all__ = ["DenseAttention", "attention_array", "attention_frame", "attention_table",
           "dense_attention", "layer_offset"]


def layer_offset(keys: int, n_tokens: int) -> int:
    """Full-set position of the first of a layer's ``keys`` keys (``n_tokens - keys``).

    The one placement rule of layers with fewer tokens (module docstring): a layer's key ``j``
    is token ``offset + j`` and its query ``i`` is token ``offset + i``.

    Raises
    ------
    SchemaError
        When the layer has more keys than the full token set.
    """
    if keys > n_tokens:
        raise SchemaError(f"an attention layer has {keys} keys but the full token set only "
                          f"{n_tokens}; pass the n_tokens of the model's layout.")
    return n_tokens - keys


def attention_table(attention: np.ndarray, layer: int, image_ids: np.ndarray,
                    n_tokens: int | None = None) -> pa.Table:
    """Arrow table of one layer's attention, placed in the full token set.

    Parameters
    ----------
    attention : numpy.ndarray
        ``(batch, heads, queries, keys)`` weights as captured (``queries <= keys``).
    layer : int
        Block number (1-based).
    image_ids : numpy.ndarray
        ``(batch,)`` ids.
    n_tokens : int, optional
        Width ``N`` of the full token set (``layout.n_tokens``); ``keys`` when None.

    Returns
    -------
    pyarrow.Table
        ``batch * heads * queries`` rows, ``weights`` of width ``N`` (module docstring).
    """
    att = np.asarray(attention, dtype=np.float32)
    b, h, q, k = att.shape
    n = k if n_tokens is None else int(n_tokens)
    off = layer_offset(k, n)
    if off:
        att = np.concatenate([np.zeros((b, h, q, off), dtype=np.float32), att], axis=-1)
    att = np.ascontiguousarray(att)
    return pa.table({
        "image_id": pa.array(np.repeat(np.asarray(image_ids), h * q)),
        "layer": pa.array(np.full(b * h * q, layer, dtype=np.int16)),
        "head": pa.array(np.tile(np.repeat(np.arange(h, dtype=np.int16), q), b)),
        "query": pa.array(np.tile(np.arange(off, off + q, dtype=np.int16), b * h)),
        "weights": vectors_to_arrow(att.reshape(b * h * q, n)),
    })


def attention_frame(attention: dict[int, np.ndarray], image_ids: np.ndarray,
                    n_tokens: int | None = None) -> pd.DataFrame:
    """Frame of several layers' attention (``{layer: (batch, heads, queries, keys)}``).

    Every layer is placed in the full token set of width ``n_tokens`` (the most keys of any
    layer when None), so the frame has one width (module docstring).
    """
    n = n_tokens if n_tokens is not None else \
        max((np.shape(a)[-1] for a in attention.values()), default=0)
    tables = [attention_table(a, layer, image_ids, n) for layer, a in sorted(attention.items())]
    if not tables:
        tables = [attention_table(np.zeros((0, 0, 0, n), np.float32), 1, np.asarray(image_ids)[:0])]
    return frame_from_table(pa.concat_tables(tables))


class DenseAttention(NamedTuple):
    """An attention frame as dense arrays (:func:`dense_attention`).

    Attributes
    ----------
    weights : numpy.ndarray
        ``(n_images, n_layers, heads, N, N)`` float32; rows without a stored query are zero.
    image_ids : numpy.ndarray
        ``(n_images,)`` in the frame's image order.
    layers : list of int
        Layer labels along axis 1.
    present : numpy.ndarray or None
        ``(n_layers, N)`` bool, the query rows each layer has; None when every layer has all.
    """

    weights: np.ndarray
    image_ids: np.ndarray
    layers: list[int]
    present: np.ndarray | None


def dense_attention(frame: pd.DataFrame, max_images: int | None = None) -> DenseAttention:
    """Dense ``(N, N)`` attention of every layer of an attention frame (module docstring).

    Raises
    ------
    SchemaError
        When a column is missing or a query lies outside the frame's token set.
    """
    for col in ("image_id", "layer", "head", "query", "weights"):
        if col not in frame.columns:
            raise SchemaError(f"attention frame has no {col!r} column; read it with "
                              "EmbeddingStore.read_attention.")
    ids = pd.unique(frame["image_id"].to_numpy())
    if max_images is not None:
        ids = ids[:max_images]
        frame = frame[frame["image_id"].isin(ids)]
    layers = sorted(int(x) for x in pd.unique(frame["layer"].to_numpy()))
    heads = int(frame["head"].max()) + 1
    w = embedding_matrix(frame, "weights")
    n = w.shape[1]
    query = frame["query"].to_numpy().astype(int)
    if query.size and int(query.max()) >= n:
        raise SchemaError(f"attention frame has query {int(query.max())} but weights over "
                          f"{n} tokens; write frames with probing.attention_frames.")
    out = np.zeros((len(ids), len(layers), heads, n, n), dtype=np.float32)
    img = pd.Index(ids).get_indexer(frame["image_id"].to_numpy())
    lay = pd.Index(layers).get_indexer(frame["layer"].to_numpy().astype(int))
    out[img, lay, frame["head"].to_numpy().astype(int), query] = w
    present = np.zeros((len(layers), n), dtype=bool)
    present[lay, query] = True
    return DenseAttention(out, np.asarray(ids), layers, None if present.all() else present)


def attention_array(
    frame: pd.DataFrame, max_images: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Dense attention from an attention frame.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, list of int)
        ``(n_images, n_layers, heads, N, N)`` float32 in the frame's image order (rows without
        a stored query are zero, see :func:`dense_attention`), the image ids, and the layer
        labels along axis 1.
    """
    dense = dense_attention(frame, max_images)
    return dense.weights, dense.image_ids, dense.layers
