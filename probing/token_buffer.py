"""Captured block outputs written once, in the token frame's row order, into one Arrow table.

An extraction captures, per forward pass, one ``(batch, n_selected, D)`` array per layer. The
frame it returns (and each store shard) orders rows by layer, then kind, then image, then
token (:mod:`probing.extract`). :class:`TokenBuffer` allocates the vectors of each
``(layer, kind)`` group for all images once and copies each captured batch straight into its
place: one copy of the vectors, and the other columns built once per call rather than once
per batch and group.

Each group has its own array, and the table's vector column one chunk per group, rather than
one array for every group: an allocation above glibc's largest mmap threshold (32 MiB; all
blocks of vit_small for 16 images are 58 MB) is mapped fresh on every call, so each of its
pages faults and is zeroed (numpy also asks for huge pages there, whose compaction stalled
some calls by 100 ms), while a group's array (4.8 MB there) reuses heap memory that earlier
frames and the forward pass freed (``python -m benchmarks.peers``, row (1), ours / plain
forward: 1.063-1.084 with one array, 1.006-1.027 with one per group). Slicing a group's rows is
a view.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from .errors import SchemaError
from .frames import token_columns, token_columns_table
from .layout import TOKEN_KINDS, TokenLayout

__all__ = ["TokenBuffer"]


class TokenBuffer:
    """Vectors of ``n_images`` images at the captured positions of each layer.

    Parameters
    ----------
    layout : TokenLayout
        The model's layout (each position's kind, row and col).
    token_index : mapping of int to numpy.ndarray
        ``{layer: (n_selected,) sequence positions}`` as the capture holds them (``-1`` =
        pooled), e.g. :attr:`probing.hooks.Capture.token_index`.
    n_images : int
        Images the buffer holds room for (fewer may be added: skipped images).
    dtype : numpy dtype
        Stored vector precision.
    """

    def __init__(self, layout: TokenLayout, token_index: Mapping[int, np.ndarray],
                 n_images: int, dtype) -> None:
        self.layout = layout
        self.n_images = int(n_images)
        self.dtype = np.dtype(dtype)
        kinds = layout.token_table()["kind"]
        # groups in row order: (layer, kind, token positions, columns of the captured array)
        self.groups: list[tuple[int, str, np.ndarray, slice | np.ndarray]] = []
        split: dict[bytes, list] = {}  # layers mostly share one set of positions
        for layer in sorted(token_index):
            idx = np.asarray(token_index[layer], dtype=np.int64)
            if idx.tobytes() not in split:
                kind_of = np.where(idx < 0, "pooled", kinds[np.maximum(idx, 0)])
                split[idx.tobytes()] = [
                    (kind, idx[cols], _as_slice(cols)) for kind in TOKEN_KINDS
                    if (cols := np.flatnonzero(kind_of == kind)).size]
            self.groups += [(layer, *part) for part in split[idx.tobytes()]]
        self._by_layer: dict[int, list[int]] = {}
        for g, (layer, _, _, _) in enumerate(self.groups):
            self._by_layer.setdefault(layer, []).append(g)
        sizes = np.array([len(tok) for _, _, tok, _ in self.groups], dtype=np.int64)
        self._width = sizes
        self._vectors: list[np.ndarray] = []  # per group: (n_images * width, D), in row order
        self._ids: list[np.ndarray] = []
        self._added = 0
        self._pending: dict[int, int] = {}  # layers put in the batch being added: images

    def add(self, layer_arrays: Mapping[int, np.ndarray], image_ids: np.ndarray) -> None:
        """Copy one batch: ``{layer: (batch, n_selected, D)}`` of images ``image_ids`` (every
        layer of ``token_index``); batches are kept in the order added."""
        for layer in self._by_layer:
            self.put(layer, layer_arrays[layer])
        self.commit(image_ids)

    def put(self, layer: int, tokens: np.ndarray) -> None:
        """Copy one layer's ``(batch, n_selected, D)`` array of the batch being added (a
        capture hook calls this as the block runs); :meth:`commit` ends the batch."""
        tokens = np.asarray(tokens)
        n = len(tokens)
        if layer not in self._by_layer:
            raise SchemaError(
                f"layer {layer} is not one the token buffer was made for "
                f"({sorted(self._by_layer)}); capture the layers of its token_index."
            )
        self._check_room(n)
        if not self._vectors:
            self._vectors = [np.empty((self.n_images * int(w), tokens.shape[-1]), self.dtype)
                             for w in self._width]
        start = self._added
        for g in self._by_layer[layer]:
            width = int(self._width[g])
            view = self._vectors[g][start * width:(start + n) * width].reshape(n, width, -1)
            view[...] = tokens[:, self.groups[g][3]]
        self._pending[layer] = n

    def commit(self, image_ids: np.ndarray) -> None:
        """End the batch of images ``image_ids`` whose layers :meth:`put` copied.

        Raises
        ------
        SchemaError
            When a layer was not put in this batch, or was put with another number of images
            (its rows would hold no vectors of these images).
        """
        n = len(image_ids)
        self._check_room(n)
        pending, self._pending = self._pending, {}
        wrong = [layer for layer in self._by_layer if pending.get(layer) != n]
        if wrong:
            raise SchemaError(
                f"layers {wrong} of the token buffer were not copied for this batch of {n} "
                f"images (copied: {pending}); put every layer of the batch before commit."
            )
        self._ids.append(np.asarray(image_ids))
        self._added += n

    def _check_room(self, n: int) -> None:
        if self._added + n > self.n_images:
            raise SchemaError(
                f"the token buffer holds {self.n_images} images; {self._added + n} were added."
            )

    @property
    def n_added(self) -> int:
        """Images added so far."""
        return self._added

    def table(self) -> pa.Table:
        """The token-frame table of the images added (rows: layer, kind, image, token)."""
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)
        n = self._added
        # each group's first n images, as views (n < n_images when images were skipped)
        vectors = ([v[:n * int(w)] for v, w in zip(self._vectors, self._width)]
                   if self._vectors else np.empty((0, 1), self.dtype))
        groups = [(layer, tok) for layer, _, tok, _ in self.groups]
        return token_columns_table(token_columns(self.layout, groups, ids), vectors)

    def group_tables(self, table: pa.Table) -> dict[tuple[str, int], pa.Table]:
        """``{(kind, layer): rows}`` of :meth:`table`'s result, as zero-copy slices."""
        n = self._added
        out, start = {}, 0
        for layer, kind, tok, _ in self.groups:
            rows = n * len(tok)
            out[(kind, layer)] = table.slice(start, rows)
            start += rows
        return out


def _as_slice(cols: np.ndarray) -> slice | np.ndarray:
    """``cols`` as a slice when consecutive (a view of the captured array, no gather)."""
    if cols.size and np.all(np.diff(cols) == 1):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols
