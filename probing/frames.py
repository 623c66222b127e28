"""The token frame: one row per (image, layer, token), the shape every stage shares.

Schema (version :data:`SCHEMA_VERSION`)
---------------------------------------
========== ========================================== ==============================================
column     dtype                                      meaning
========== ========================================== ==============================================
image_id   ``int64[pyarrow]`` or ``string[pyarrow]``  stable id of the image in its source
layer      ``int16[pyarrow]``                         0 = input to the first block (patch projection
                                                      + positional encoding, prefix tokens
                                                      prepended); k = output of block k;
                                                      ``LAYER_EMBED`` (-1) = patch projection
                                                      before the positional encoding;
                                                      ``LAYER_NORM`` (-2) = final-norm output
                                                      (both in :mod:`probing.selection`)
kind       ``category`` (:data:`KIND_DTYPE`)          cls, reg, dist, patch, pooled
token      ``int16[pyarrow]``                         position in the sequence (-1 for pooled rows)
row, col   ``int16[pyarrow]``, null for non-patches   the patch's place on the grid
emb        ``pd.ArrowDtype(pa.list_(f32, D))``        the vector (float32 or float16)
labels     as the data source gives them              label, split, anything the manifest carries
========== ========================================== ==============================================

Stored layer labels are the ones above; *selecting* layers (``layers=`` arguments) additionally
accepts negative block indices counted from the end (``-1`` = last block) and the names
``"embed"`` and ``"norm"`` for the two special sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import ConfigError, SchemaError
from .layout import TOKEN_KINDS, TokenLayout

__all__ = [
    "FRAME_COLUMNS",
    "POSITION_COLUMNS",
    "check_finite",
    "KIND_DTYPE",
    "SCHEMA_VERSION",
    "embedding_matrix",
    "embedding_rows",
    "frame_from_table",
    "frame_to_table",
    "join_labels",
    "label_columns",
    "require_columns",
    "require_label_column",
    "to_frame",
    "token_columns",
    "token_columns_table",
    "token_table",
    "validate_frame",
]

SCHEMA_VERSION = 1
KIND_DTYPE = pd.CategoricalDtype(list(TOKEN_KINDS))
FRAME_COLUMNS = ("image_id", "layer", "kind", "token", "row", "col", "emb")
#: Frame columns that are also targets (where a patch is, in the sequence and on the grid).
POSITION_COLUMNS = ("row", "col", "token")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, fix: str) -> None:
    """Raise SchemaError when ``frame`` lacks columns its schema needs.

    The one check for "this frame is not the frame this function takes": ``what`` names the
    frame ("result", "attention frame"), ``fix`` says what to pass instead.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{what} lacks column(s) {', '.join(map(repr, missing))}; {fix}."
        )


def label_columns(columns: Iterable[object]) -> list[str]:
    """The label columns among ``columns``: every one but the token frame's own."""
    return [str(c) for c in columns if c not in FRAME_COLUMNS]


def require_label_column(columns: Iterable[object], name: object, option: str,
                         also: Iterable[str] = ()) -> None:
    """Raise ConfigError when ``name``, given for ``option``, is not a label column.

    The one check for a column the user named (a probe target, a colour column, a groups
    column): the message lists the label columns only (plus ``also``, the frame columns the
    option may name, e.g. ``row``/``col`` for position targets) and suggests the nearest.
    """
    import difflib

    columns = list(columns)
    allowed = [*label_columns(columns), *(c for c in also if c in columns)]
    if name in allowed:
        return
    close = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{option}={name!r} is not a label column; pick one of "
        f"{', '.join(allowed) or '(none: the data source has no labels)'}.{hint}"
    )


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an ``(n, D)`` float array as an Arrow fixed-size-list array without copying."""
    vectors = np.ascontiguousarray(vectors)
    if vectors.ndim != 2:
        raise SchemaError(f"vectors have shape {vectors.shape}; pass an (n, D) array.")
    flat = pa.array(vectors.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1]))


def to_frame(
    tokens: np.ndarray,
    layout: TokenLayout,
    layer: int,
    image_ids: Sequence | np.ndarray,
    token_index: np.ndarray | None = None,
    labels: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Build a token frame from one layer's token vectors.

    Parameters
    ----------
    tokens : numpy.ndarray
        ``(n_images, n_selected, D)`` vectors of the tokens at sequence positions
        ``token_index`` (all tokens when None).
    layout : TokenLayout
        The model's layout, which gives each token's kind, row and col.
    layer : int
        Stored layer label (see the module docstring).
    image_ids : sequence
        ``(n_images,)`` ids.
    token_index : numpy.ndarray, optional
        ``(n_selected,)`` sequence positions; ``-1`` marks a pooled vector.
    labels : pandas.DataFrame, optional
        Per-image label columns, indexed like ``image_ids`` (one row per image, same order).

    Returns
    -------
    pandas.DataFrame
        ``n_images * n_selected`` rows, image-major, in the documented schema.
    """
    return frame_from_table(token_table(tokens, layout, layer, image_ids, token_index, labels))


def token_table(tokens, layout, layer, image_ids, token_index, labels) -> pa.Table:
    """The Arrow table of :func:`to_frame` (arguments as there)."""
    tokens = np.asarray(tokens)
    n_img, n_tok, dim = tokens.shape
    if token_index is None:
        token_index = np.arange(layout.n_tokens)
    groups = [(layer, np.asarray(token_index, dtype=np.int64))]
    out = token_columns_table(token_columns(layout, groups, image_ids),
                              tokens.reshape(n_img * n_tok, dim))
    if labels is not None and len(labels.columns):
        lab = pa.Table.from_pandas(labels.reset_index(drop=True), preserve_index=False)
        take = pa.array(np.repeat(np.arange(n_img), n_tok))
        lab = lab.take(take)
        for name in lab.column_names:
            if name not in out.column_names:
                out = out.append_column(name, lab.column(name))
    return out


def token_columns(layout: TokenLayout, groups: Sequence[tuple[int, np.ndarray]],
                  image_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The non-vector columns of rows in groups of (layer, token positions), image-major in each.

    Parameters
    ----------
    layout : TokenLayout
        Gives each position's kind, row and col.
    groups : sequence of (int, numpy.ndarray)
        ``(layer, token_index)`` per group in row order: the stored layer label and the
        ``(k,)`` sequence positions of the group's tokens (``-1`` marks a pooled vector).
    image_ids : numpy.ndarray
        ``(n_images,)`` ids; every group holds these images, each with its ``k`` tokens.

    Returns
    -------
    dict of numpy.ndarray
        ``image_id``, ``layer``, ``kind`` (int8 codes into :data:`TOKEN_KINDS`), ``token``,
        ``row`` and ``col`` (float64, NaN off the grid), each ``(n_images * sum(k),)``.
    """
    ids = np.asarray(image_ids)
    n_img = len(ids)
    sizes = np.array([len(tok) for _, tok in groups], dtype=np.int64)
    tokens = (np.concatenate([np.asarray(tok, dtype=np.int64) for _, tok in groups])
              if groups else np.empty(0, np.int64))
    layers = np.array([layer for layer, _ in groups], dtype=np.int16)
    # row r of group g is image (r - base_g) // k_g, token start_g + (r - base_g) % k_g
    rows_per = sizes * n_img
    group = np.repeat(np.arange(len(sizes)), rows_per)
    offset = np.arange(int(rows_per.sum())) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
    width = sizes[group]
    which = (np.cumsum(sizes) - sizes)[group] + offset % np.maximum(width, 1)
    token = tokens[which]
    table = layout.token_table()
    pooled = token < 0
    idx = np.where(pooled, 0, token)
    return {
        "image_id": ids[offset // np.maximum(width, 1)] if n_img else ids[:0],
        "layer": layers[group],
        "kind": np.where(pooled, TOKEN_KINDS.index("pooled"),
                         _kind_codes(layout)[idx]).astype(np.int8),
        "token": np.where(pooled, -1, token).astype(np.int16),
        "row": np.where(pooled, np.nan, table["row"][idx]),
        "col": np.where(pooled, np.nan, table["col"][idx]),
    }


def token_columns_table(columns: dict[str, np.ndarray],
                        vectors: np.ndarray | Sequence[np.ndarray]) -> pa.Table:
    """The token-frame table of :func:`token_columns`' columns and ``(n, D)`` ``vectors``.

    ``vectors`` may also be a list of ``(n_i, D)`` arrays whose rows follow each other (one
    per group of :class:`probing.token_buffer.TokenBuffer`): the vector column then holds one
    Arrow chunk per array, each wrapping it without a copy.
    """
    emb = (pa.chunked_array([vectors_to_arrow(v) for v in vectors])
           if isinstance(vectors, (list, tuple)) else vectors_to_arrow(vectors))
    return pa.table({
        "image_id": pa.array(columns["image_id"]),
        "layer": pa.array(columns["layer"].astype(np.int16, copy=False)),
        "kind": pa.DictionaryArray.from_arrays(pa.array(columns["kind"]),
                                               pa.array(list(TOKEN_KINDS))),
        "token": pa.array(columns["token"].astype(np.int16, copy=False)),
        "row": _int16_nullable(columns["row"]),
        "col": _int16_nullable(columns["col"]),
        "emb": emb,
    })


def _kind_codes(layout: TokenLayout) -> np.ndarray:
    """``(n_tokens,)`` int8 code of each position's kind in :data:`TOKEN_KINDS`."""
    kinds = layout.token_table()["kind"]
    codes = np.zeros(len(kinds), dtype=np.int8)
    for code, kind in enumerate(TOKEN_KINDS):
        codes[kinds == kind] = code
    return codes


def _int16_nullable(values: np.ndarray) -> pa.Array:
    mask = np.isnan(values)
    return pa.array(np.where(mask, 0, values).astype(np.int16), mask=mask)


def frame_from_table(table: pa.Table) -> pd.DataFrame:
    """Convert an Arrow table in the token-frame schema to a pandas frame.

    ``kind`` (and any other dictionary column) becomes a pandas categorical; every other column
    keeps its Arrow type as ``pd.ArrowDtype``, so vectors stay fixed-size lists without copies.
    """
    data = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_dictionary(column.type):
            data[name] = _kind_categorical(column) if name == "kind" else column.to_pandas()
        else:
            if pa.types.is_fixed_size_list(column.type):  # parquet names the item "element"
                canonical = pa.list_(column.type.value_type, column.type.list_size)
                if column.type != canonical:
                    column = column.cast(canonical)
            data[name] = pd.arrays.ArrowExtensionArray(column)
    # arrays, not Series: no index alignment (a frame of n rows gets a RangeIndex)
    return pd.DataFrame(data, index=pd.RangeIndex(table.num_rows), copy=False)


def _kind_categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """The ``kind`` dictionary column as a categorical with the fixed :data:`KIND_DTYPE`."""
    chunks = column.chunks or [pa.array([], pa.dictionary(pa.int8(), pa.string()))]
    codes = []
    for chunk in chunks:
        names = chunk.dictionary.to_pylist()
        remap = np.array([TOKEN_KINDS.index(n) for n in names], dtype=np.int8)
        idx = chunk.indices.to_numpy(zero_copy_only=False)
        codes.append(remap[idx] if len(remap) else idx.astype(np.int8))
    return pd.Categorical.from_codes(np.concatenate(codes), dtype=KIND_DTYPE)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """Convert a token frame to an Arrow table (``kind`` as a dictionary column)."""
    arrays, names = [], []
    for name in frame.columns:
        s = frame[name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            arr = pa.DictionaryArray.from_pandas(s.array)
        elif isinstance(s.dtype, pd.ArrowDtype):
            arr = s.array.__arrow_array__()
        else:
            arr = pa.array(s, from_pandas=True)
        arrays.append(arr)
        names.append(str(name))
    return pa.table(arrays, names=names)


def embedding_matrix(frame: pd.DataFrame, column: str = "emb") -> np.ndarray:
    """The vectors of a frame as a contiguous ``(n_rows, D)`` numpy array.

    No copy is made when the column is a single Arrow chunk (a frame read from a store, or one
    ``(layer, kind)`` group of an extracted frame sliced by rows); a multi-chunk column (a
    whole extracted frame holds one chunk per group) is combined once. To gather some rows,
    :func:`embedding_rows` reads them from the chunks without combining the column.

    Parameters
    ----------
    frame : pandas.DataFrame
        A token frame (or any frame with a fixed-size-list vector column).
    column : str
        Name of the vector column.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, D)``, dtype as stored (float32 by default). Read-only when it shares memory
        with the frame.
    """
    chunks = _vector_chunks(frame, column)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def embedding_rows(frame: pd.DataFrame, rows: np.ndarray, column: str = "emb") -> np.ndarray:
    """Vectors of the frame's rows ``rows`` (positions, any order), read chunk by chunk.

    Parameters
    ----------
    frame : pandas.DataFrame
        As in :func:`embedding_matrix`.
    rows : numpy.ndarray
        ``(k,)`` row positions (0-based, as ``frame.iloc`` takes them).
    column : str
        Name of the vector column.

    Returns
    -------
    numpy.ndarray
        ``(k, D)`` new array, the vectors in the order of ``rows``: the same as
        ``embedding_matrix(frame)[rows]`` without first combining a multi-chunk column.

    Raises
    ------
    SchemaError
        When ``rows`` are not integer positions (a boolean mask: pass ``np.flatnonzero(mask)``)
        or lie outside the frame, or the vector column is missing or not fixed-size lists.
    """
    chunks = _vector_chunks(frame, column)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise SchemaError(
            f"rows must be a 1-D array of integer row positions; got dtype {rows.dtype}, shape "
            f"{rows.shape} (for a boolean mask pass np.flatnonzero(mask))."
        )
    rows = rows.astype(np.int64, copy=False)
    starts = np.cumsum([0] + [len(c) for c in chunks])
    if rows.size and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise SchemaError(f"row positions {rows.min()}..{rows.max()} are outside the frame's "
                          f"{starts[-1]} rows; pass positions 0..{starts[-1] - 1}.")
    if len(chunks) == 1:
        return chunks[0][rows]
    which = np.searchsorted(starts, rows, side="right") - 1
    out = np.empty((rows.size, chunks[0].shape[1]), dtype=chunks[0].dtype)
    for c in np.unique(which):
        sel = which == c
        out[sel] = chunks[c][rows[sel] - starts[c]]
    return out


def _vector_chunks(frame: pd.DataFrame, column: str) -> list[np.ndarray]:
    """Zero-copy ``(n_i, D)`` numpy views of each Arrow chunk of the vector ``column`` (at
    least one), after checking that it is a fixed-size-list column without nulls."""
    if column not in frame.columns:
        raise SchemaError(f"frame has no {column!r} column; pass a token frame with vectors.")
    dtype = frame[column].dtype
    if not isinstance(dtype, pd.ArrowDtype) or not pa.types.is_fixed_size_list(dtype.pyarrow_dtype):
        raise SchemaError(
            f"column {column!r} has dtype {dtype}, not a fixed-size list; build frames with "
            "probing.to_frame or read stores with EmbeddingStore.read."
        )
    dim = dtype.pyarrow_dtype.list_size
    chunked = frame[column].array.__arrow_array__()
    nulls = chunked.null_count
    if nulls:
        raise SchemaError(f"column {column!r} has {nulls} null vectors; drop them first.")
    chunks = [c.flatten().to_numpy(zero_copy_only=True).reshape(-1, dim)
              for c in chunked.chunks if len(c)]
    if not chunks:
        return [np.empty((0, dim), dtype=dtype.pyarrow_dtype.value_type.to_pandas_dtype())]
    return chunks


def validate_frame(frame: pd.DataFrame, finite: bool = False) -> pd.DataFrame:
    """Check that ``frame`` follows the token-frame schema; return it unchanged.

    Parameters
    ----------
    frame : pandas.DataFrame
        The frame to check.
    finite : bool
        Also check that every vector entry is finite (no NaN or inf).

    Raises
    ------
    SchemaError
        Naming the first column that is missing or has the wrong type.
    """
    require_columns(frame, FRAME_COLUMNS, "token frame",
                    "build it with probing.extract or probing.to_frame")
    _vector_chunks(frame, "emb")  # checks the vector column's type (no copy)
    if not isinstance(frame["kind"].dtype, pd.CategoricalDtype) or \
            not set(frame["kind"].cat.categories) <= set(TOKEN_KINDS):
        raise SchemaError(
            f"column 'kind' has dtype {frame['kind'].dtype}, not the token-kind category; build "
            "frames with probing.to_frame or convert with .astype(probing.frames.KIND_DTYPE)."
        )
    for name in ("layer", "token", "row", "col"):
        if not pd.api.types.is_integer_dtype(frame[name].dtype):
            raise SchemaError(
                f"column {name!r} has dtype {frame[name].dtype}, not an integer type; build "
                "frames with probing.to_frame."
            )
    if finite:
        check_finite(frame)
    return frame


def check_finite(frame: pd.DataFrame, column: str = "emb") -> None:
    """Raise :class:`SchemaError` when a vector of ``column`` holds NaN or inf."""
    bad = sum(int((~np.isfinite(part)).any(axis=1).sum())
              for part in _vector_chunks(frame, column))
    if bad:
        raise SchemaError(
            f"token frame has {bad} vector(s) with NaN or inf; drop those rows or re-extract "
            "(a float16 store overflows where float32 would not)."
        )


def join_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Add the per-image columns of ``labels`` (one row per ``image_id``) to token rows.

    Columns already in ``frame`` are kept as they are. Rows keep their order.
    """
    extra = [c for c in labels.columns if c != "image_id" and c not in frame.columns]
    if not extra:
        return frame
    take = pd.Index(labels["image_id"].to_numpy()).get_indexer(frame["image_id"].to_numpy())
    if (take < 0).any():
        raise SchemaError("token rows name image ids that have no labels; re-extract the store.")
    out = frame.copy(deep=False)
    for col in extra:
        out[col] = pd.Series(labels[col].array.take(take), index=frame.index)
    return out
