"""Per-layer design matrices from a token frame, shared by probes and similarity.

A *view* of a token frame is one ``(n, D)`` matrix per layer for one token kind:

- ``"cls"``: the ``kind == "cls"`` rows, one per image;
- ``"pooled"``: the ``kind == "pooled"`` rows when the layer has them, otherwise the mean of
  the layer's patch rows per image (accumulated in float64);
- ``"patch"``: every ``kind == "patch"`` row.

Rows are ordered by ``(image_id, token)`` so that views of two frames over the same images line
up row for row. Nothing here assumes token 0 is CLS: kinds come from the frame's ``kind`` column,
which :class:`probing.layout.TokenLayout` filled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .errors import LayoutError
from .frames import POSITION_COLUMNS, embedding_rows, require_columns, require_label_column
from .selection import LayerLabels, LayerSelection, resolve_view_kind, select_layers

ViewKind = Literal["cls", "pooled", "patch"]


class FrameViews:
    """Per-layer matrices of one token frame (see the module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        A token frame (:mod:`probing.frames`).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        require_columns(frame, ("image_id", "layer", "kind", "token"), "frame",
                        "pass a token frame built by probing.to_frame or read from an "
                        "EmbeddingStore")
        self.frame = frame
        embedding_rows(frame, np.empty(0, np.int64))  # checks the vector column
        self.layer = np.asarray(frame["layer"].to_numpy(dtype=np.int64, na_value=-(2**31)))
        self.kind = np.asarray(frame["kind"].astype(str).to_numpy())

    @property
    def layers(self) -> LayerLabels:
        """Layer labels present in the frame, in forward-pass order."""
        return LayerLabels(np.unique(self.layer))

    def select(self, layers: LayerSelection | None, where: str = "the frame") -> LayerLabels:
        """Stored labels of a layer selection (:func:`probing.selection.select_layers`: None =
        every layer the frame holds, ``"all"`` (also in a list) = its blocks, ``"embed"`` /
        ``"norm"`` by name, :class:`~probing.selection.LayerLabels` as they are; a frame does
        not record its model's depth, so negative ints raise ConfigError: resolve them first
        with ``resolve_layers(sel, model.depth)``)."""
        return select_layers(layers, self.layers, where=where)

    def get(
        self, layer: int, kind: ViewKind, columns: Sequence[str] = ()
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """The ``(n, D)`` matrix of one layer and view kind, and its row metadata.

        Parameters
        ----------
        layer : int
            Stored layer label.
        kind : {"cls", "pooled", "patch"}
            The view (module docstring).
        columns : sequence of str
            Frame columns to carry into the metadata (labels, groups). For ``"pooled"`` built from
            patches, the first value per image is taken (they must be image-level columns).

        Returns
        -------
        (numpy.ndarray, pandas.DataFrame)
            ``(n, D)`` vectors (float32 as stored, float64 for patch means) and an ``n``-row
            frame with ``image_id``, ``token`` and ``columns``, ordered by ``(image_id, token)``.
        """
        resolve_view_kind(kind)
        for column in columns:
            require_label_column(self.frame.columns, column, "column",
                                 also=(*POSITION_COLUMNS, "image_id"))
        at_layer = self.layer == layer
        idx = np.flatnonzero(at_layer & (self.kind == kind))
        if kind == "pooled" and idx.size == 0:
            return self._patch_mean(np.flatnonzero(at_layer & (self.kind == "patch")), columns)
        if idx.size == 0:
            raise LayoutError(
                f"layer {layer} has no {kind!r} rows; pick a kind the frame holds "
                "(a model without CLS has no 'cls' rows: use kind='pooled')."
            )
        meta = self._meta(idx, columns)
        order = _order(meta)
        return embedding_rows(self.frame, idx[order]), meta.iloc[order].reset_index(drop=True)

    def _meta(self, idx: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        names = list(dict.fromkeys(["image_id", "token", *columns]))
        return self.frame[names].iloc[idx].reset_index(drop=True)

    def _patch_mean(
        self, idx: np.ndarray, columns: Sequence[str]
    ) -> tuple[np.ndarray, pd.DataFrame]:
        from scipy import sparse

        if idx.size == 0:
            raise LayoutError(
                "the frame has neither 'pooled' nor 'patch' rows at this layer; extract patch "
                "tokens to probe kind='pooled'."
            )
        meta = self._meta(idx, columns)
        codes, _ = pd.factorize(meta["image_id"], sort=True)
        n_img = int(codes.max()) + 1
        counts = np.bincount(codes, minlength=n_img).astype(np.float64)
        weights = 1.0 / counts[codes]
        avg = sparse.csr_matrix((weights, (codes, np.arange(idx.size))), shape=(n_img, idx.size))
        vectors = np.asarray(avg @ embedding_rows(self.frame, idx).astype(np.float64))
        _, first = np.unique(codes, return_index=True)
        out = meta.iloc[first].reset_index(drop=True)
        out["token"] = -1
        return vectors, out


def _order(meta: pd.DataFrame) -> np.ndarray:
    codes, _ = pd.factorize(meta["image_id"], sort=True)
    token = meta["token"].to_numpy(dtype=np.int64, na_value=-1)
    return np.lexsort((token, codes))


def align_rows(meta_a: pd.DataFrame, meta_b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two views that hold the same ``(image_id, token)``, in a common order."""
    key_a = pd.MultiIndex.from_arrays([meta_a["image_id"], meta_a["token"]])
    key_b = pd.MultiIndex.from_arrays([meta_b["image_id"], meta_b["token"]])
    if key_a.equals(key_b):
        ids = np.arange(len(meta_a))
        return ids, ids
    pos_b = key_b.get_indexer(key_a)
    keep = np.flatnonzero(pos_b >= 0)
    return keep, pos_b[keep]
