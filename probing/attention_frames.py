"""Attention weights as tables: one row per (image, layer, head, query).

Schema: ``image_id``, ``layer`` (int16, block number 1..depth), ``head`` (int16), ``query``
(int16, sequence position), ``weights`` (``list<float32, N>``, the query's post-softmax
attention over all N keys in sequence order).

``N`` is the number of tokens the block holds, and the queries are those it updates: CaiT's
class-attention blocks have one query (CLS, ``query`` 0) over ``1 + N`` keys, its
self-attention blocks and ConViT's GPSA blocks only the ``N`` patches; parallel blocks number
heads across branches (``head = branch * num_heads + h``); what each family stores is listed
in :mod:`probing.attention_hooks`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import SchemaError
from .frames import embedding_matrix, frame_from_table, vectors_to_arrow

__all__ = ["attention_array", "attention_table"]


def attention_table(attention: np.ndarray, layer: int, image_ids: np.ndarray) -> pa.Table:
    """Arrow table of one layer's attention.

    Parameters
    ----------
    attention : numpy.ndarray
        ``(batch, heads, queries, N)`` weights (``queries == N`` except for class attention).
    layer : int
        Block number (1-based).
    image_ids : numpy.ndarray
        ``(batch,)`` ids.
    """
    att = np.ascontiguousarray(attention, dtype=np.float32)
    b, h, q, n = att.shape
    return pa.table({
        "image_id": pa.array(np.repeat(np.asarray(image_ids), h * q)),
        "layer": pa.array(np.full(b * h * q, layer, dtype=np.int16)),
        "head": pa.array(np.tile(np.repeat(np.arange(h, dtype=np.int16), q), b)),
        "query": pa.array(np.tile(np.arange(q, dtype=np.int16), b * h)),
        "weights": vectors_to_arrow(att.reshape(b * h * q, n)),
    })


def attention_frame(attention: dict[int, np.ndarray], image_ids: np.ndarray) -> pd.DataFrame:
    """Frame of several layers' attention (``{layer: (batch, heads, N, N)}``)."""
    tables = [attention_table(a, layer, image_ids) for layer, a in sorted(attention.items())]
    return frame_from_table(pa.concat_tables(tables))


def attention_array(
    frame: pd.DataFrame, max_images: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Dense attention from an attention frame.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, list of int)
        ``(n_images, n_layers, heads, N, N)`` float32 in the frame's image order, the image ids,
        and the layer labels along axis 1.
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
    nq, n = int(frame["query"].max()) + 1, w.shape[1]
    out = np.zeros((len(ids), len(layers), heads, nq, n), dtype=np.float32)
    img = pd.Index(ids).get_indexer(frame["image_id"].to_numpy())
    lay = pd.Index(layers).get_indexer(frame["layer"].to_numpy().astype(int))
    out[img, lay, frame["head"].to_numpy().astype(int), frame["query"].to_numpy().astype(int)] = w
    return out, np.asarray(ids), layers
