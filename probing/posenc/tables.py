"""Positional-encoding tables: sinusoidal (1-D, 2-D), table frames, resampling to a new grid.

Every table is float64. A *table frame* has one row per token that carries a positional vector:
columns ``token`` (sequence position), ``kind`` (``cls``/``reg``/``dist``/``patch``), ``row``,
``col`` (null for prefix tokens) and ``emb`` (``pd.ArrowDtype(pa.list_(pa.float64(), D))``).
Patch rows are in row-major order. See :mod:`probing.posenc` for the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import ConfigError, DataError, LayoutError
from ..frames import (
    KIND_DTYPE,
    embedding_matrix,
    frame_from_table,
    require_columns,
    vectors_to_arrow,
)
from ..layout import TOKEN_KINDS, TokenLayout

__all__ = [
    "patch_matrix",
    "resample",
    "sincos_1d",
    "sincos_2d",
    "table_frame",
    "worked_example",
]


# ------------------------------------------------------------------------------- sinusoidal
def _check_positive(name: str, value: int) -> int:
    if int(value) != value or int(value) < 1:
        raise ConfigError(f"{name}={value!r} is not a positive integer; pass an int >= 1.")
    return int(value)


def _check_base(base: float) -> float:
    if not np.isfinite(base) or base <= 0:
        raise ConfigError(f"base={base!r} is not a positive finite number; the usual value is 1e4.")
    return float(base)


def sincos_1d(
    n_positions: int,
    dim: int,
    base: float = 10000.0,
    layout: Literal["interleaved", "concat"] = "interleaved",
) -> np.ndarray:
    """The 1-D sinusoidal encoding of Vaswani et al. (2017), "Attention Is All You Need".

    ``PE(pos, 2i) = sin(pos * w_i)``, ``PE(pos, 2i + 1) = cos(pos * w_i)`` with
    ``w_i = base ** (-2i / dim)`` (the paper's frequency set, not tensor2tensor's
    ``base ** (-i / (dim/2 - 1))``). Then ``PE(p) . PE(p + k) = sum_i cos(k w_i)`` for even
    ``dim``: it depends on the offset ``k`` only, and every row has norm ``sqrt(dim / 2)``.

    Parameters
    ----------
    n_positions : int
        Number of positions ``0 .. n_positions - 1``.
    dim : int
        Encoding width, any ``dim >= 1``. For odd ``dim`` the last column is an unpaired sine
        ``sin(pos * w_m)``, ``m = dim // 2`` (in both layouts).
    base : float
        Frequency base (10000 in the paper).
    layout : {"interleaved", "concat"}
        ``"interleaved"``: column ``2i`` is the sine and ``2i + 1`` the cosine of frequency
        ``w_i`` (the paper). ``"concat"``: the ``dim // 2`` paired sines, then their cosines (then
        the unpaired sine for odd ``dim``); a column permutation of ``"interleaved"``.

    Returns
    -------
    numpy.ndarray
        ``(n_positions, dim)`` float64; row ``pos`` is the encoding of position ``pos``.
    """
    n_positions = _check_positive("n_positions", n_positions)
    dim = _check_positive("dim", dim)
    base = _check_base(base)
    if layout not in ("interleaved", "concat"):
        raise ConfigError(f"layout={layout!r} is unknown; use 'interleaved' or 'concat'.")
    m_sin = (dim + 1) // 2  # sines: every frequency; cosines: the paired ones
    w = base ** (-2.0 * np.arange(m_sin, dtype=np.float64) / dim)
    angle = np.arange(n_positions, dtype=np.float64)[:, None] * w[None, :]
    sin, cos = np.sin(angle), np.cos(angle[:, : dim // 2])
    out = np.empty((n_positions, dim), dtype=np.float64)
    if layout == "interleaved":
        out[:, 0::2] = sin
        out[:, 1::2] = cos
    else:
        half = dim // 2
        out[:, :half] = sin[:, :half]
        out[:, half : 2 * half] = cos
        if dim % 2:
            out[:, -1] = sin[:, -1]
    return out


def _sincos_axis(pos: np.ndarray, n_bands: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """sin, cos of ``pos * w_i``, ``w_i = base ** (-i / n_bands)``, each ``(len(pos), n_bands)``."""
    w = base ** (-np.arange(n_bands, dtype=np.float64) / n_bands)
    angle = pos[:, None].astype(np.float64) * w[None, :]
    return np.sin(angle), np.cos(angle)


def sincos_2d(
    grid: tuple[int, int],
    dim: int,
    base: float = 10000.0,
    layout: Literal["timm", "timm_interleave", "mae"] = "timm",
) -> np.ndarray:
    """2-D sinusoidal encoding (MAE, He et al. 2022; timm ``build_sincos2d_pos_embed``).

    A quarter of the columns hold ``sin`` and a quarter ``cos`` of the row index, the other half
    the same of the column index, each with ``w_i = base ** (-i / (dim / 4))``,
    ``i = 0 .. dim/4 - 1``. Tokens are row-major: token ``t`` is patch
    ``(t // cols, t % cols)``.

    Parameters
    ----------
    grid : tuple of int
        ``(rows, cols)``; non-square grids are fine.
    dim : int
        Encoding width, a multiple of 4.
    base : float
        Frequency base (timm's ``temperature``).
    layout : {"timm", "timm_interleave", "mae"}
        Column blocks of width ``dim / 4``:

        - ``"timm"``: ``[sin(row) | sin(col) | cos(row) | cos(col)]``, equal to
          ``timm.layers.build_sincos2d_pos_embed([rows, cols], dim, temperature=base)``;
        - ``"timm_interleave"``: ``[sin(row) | cos(row) | sin(col) | cos(col)]``, timm with
          ``interleave_sin_cos=True``;
        - ``"mae"``: ``[sin(col) | cos(col) | sin(row) | cos(row)]``, MAE's
          ``get_2d_sincos_pos_embed(dim, grid)`` (without its zero CLS row).

    Returns
    -------
    numpy.ndarray
        ``(rows * cols, dim)`` float64.
    """
    rows, cols = (_check_positive(n, g) for n, g in zip(("rows", "cols"), _grid_pair(grid)))
    dim = _check_positive("dim", dim)
    base = _check_base(base)
    if dim % 4:
        raise ConfigError(f"dim={dim} is not a multiple of 4; 2-D sin-cos needs dim % 4 == 0.")
    r, c = np.divmod(np.arange(rows * cols), cols)
    sin_r, cos_r = _sincos_axis(r, dim // 4, base)
    sin_c, cos_c = _sincos_axis(c, dim // 4, base)
    blocks = {
        "timm": (sin_r, sin_c, cos_r, cos_c),
        "timm_interleave": (sin_r, cos_r, sin_c, cos_c),
        "mae": (sin_c, cos_c, sin_r, cos_r),
    }.get(layout)
    if blocks is None:
        raise ConfigError(f"layout={layout!r} is unknown; use 'timm', 'timm_interleave' or 'mae'.")
    return np.concatenate(blocks, axis=1)


def worked_example() -> pd.DataFrame:
    """The classic worked numbers: ``sincos_1d`` at position 5 with ``dim = 3``.

    ``w = [1, 1, 10000 ** (-2/3)]``, so the columns are ``sin(5)``, ``cos(5)``,
    ``sin(5 * 10000 ** (-2/3))`` = ``[-0.9589, 0.2837, 0.0108]`` to 4 decimals.

    Returns
    -------
    pandas.DataFrame
        One row per column: ``column``, ``i``, ``function`` (sin/cos), ``frequency``
        (radians per position), ``angle`` (radians), ``value``.
    """
    pe = sincos_1d(6, 3)[5]
    i = np.array([0, 0, 1])
    w = 10000.0 ** (-2.0 * i / 3)
    return pd.DataFrame({
        "column": [0, 1, 2],
        "i": i,
        "function": ["sin", "cos", "sin"],
        "frequency": w,
        "angle": 5 * w,
        "value": pe,
    })


# ------------------------------------------------------------------------------ table frames
def _grid_pair(grid: object) -> tuple[int, int]:
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise ConfigError(f"grid={grid!r} is not (rows, cols); pass a pair of positive ints.")
    return int(grid[0]), int(grid[1])


def _int16_or_null(values: np.ndarray) -> pa.Array:
    mask = np.isnan(values)
    return pa.array(np.where(mask, 0, values).astype(np.int16), mask=mask)


def table_frame(
    vectors: np.ndarray,
    grid: tuple[int, int],
    prefix: Sequence[str] = (),
    embed_prefix: bool = True,
) -> pd.DataFrame:
    """Wrap a positional table as a table frame (token, kind, row, col, emb).

    Parameters
    ----------
    vectors : numpy.ndarray
        ``(n_rows, D)``: one vector per prefix token (when ``embed_prefix``) followed by
        ``rows * cols`` patch vectors in row-major order.
    grid : tuple of int
        ``(rows, cols)``.
    prefix : sequence of str
        Prefix-token kinds in sequence order (``"cls"``, ``"reg"``, ``"dist"``).
    embed_prefix : bool
        Whether ``vectors`` has rows for the prefix tokens (False for timm's
        ``no_embed_class=True``: tokens are still numbered after the prefix).

    Returns
    -------
    pandas.DataFrame
        ``n_rows`` rows; ``emb`` as ``pd.ArrowDtype(pa.list_(pa.float64(), D))``.
    """
    layout = TokenLayout(grid=_grid_pair(grid), patch_size=(1, 1), prefix=tuple(prefix),
                         no_embed_class=not embed_prefix)
    vectors = np.asarray(vectors, dtype=np.float64)
    start = 0 if embed_prefix else layout.num_prefix_tokens
    cols = layout.token_table()
    if vectors.ndim != 2 or vectors.shape[0] != layout.n_tokens - start:
        raise DataError(
            f"table has shape {vectors.shape} but grid {layout.grid} with "
            f"{layout.n_tokens - start - layout.num_patches} prefix row(s) needs "
            f"({layout.n_tokens - start}, D); pass matching vectors, grid and prefix."
        )
    codes = np.array([TOKEN_KINDS.index(k) for k in cols["kind"][start:]], dtype=np.int8)
    table = pa.table({
        "token": pa.array(cols["token"][start:].astype(np.int16)),
        "kind": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(list(TOKEN_KINDS))),
        "row": _int16_or_null(cols["row"][start:]),
        "col": _int16_or_null(cols["col"][start:]),
        "emb": vectors_to_arrow(vectors),
    })
    frame = frame_from_table(table)
    frame["kind"] = frame["kind"].astype(KIND_DTYPE)
    frame.attrs["grid"] = layout.grid
    frame.attrs["prefix"] = layout.prefix
    return frame


def patch_matrix(
    table: pd.DataFrame | np.ndarray, grid: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The patch rows of a table as a float64 ``(rows * cols, D)`` matrix, and the grid.

    A frame gives its ``kind == "patch"`` rows ordered by ``(row, col)`` and its grid (from
    ``row``/``col`` when ``grid`` is None); an array must hold exactly the patch rows, row-major.
    """
    if isinstance(table, pd.DataFrame):
        patches = table[table["kind"] == "patch"] if "kind" in table.columns else table
        require_columns(patches, ("row", "col"), "table frame", "build it with table_frame()")
        rc = np.stack([patches["row"].to_numpy(dtype=np.int64),
                       patches["col"].to_numpy(dtype=np.int64)], axis=1)
        if grid is None:
            grid = (int(rc[:, 0].max()) + 1, int(rc[:, 1].max()) + 1) if len(rc) else (0, 0)
        order = np.lexsort((rc[:, 1], rc[:, 0]))
        x = np.asarray(embedding_matrix(patches), dtype=np.float64)[order]
        rc = rc[order]
    else:
        x = np.asarray(table, dtype=np.float64)
        if x.ndim == 3 and x.shape[0] == 1:
            x = x[0]
        rc = None
    if grid is None:
        raise ConfigError("grid is needed for an array table; pass grid=(rows, cols).")
    rows, cols = _grid_pair(grid)
    if x.ndim != 2 or x.shape[0] != rows * cols:
        raise DataError(
            f"table has {x.shape[0] if x.ndim else 0} patch rows but grid ({rows}, {cols}) needs "
            f"{rows * cols}; pass the patch rows only, row-major, or the right grid."
        )
    if rc is not None:
        expect = np.stack(np.divmod(np.arange(rows * cols), cols), axis=1)
        if not np.array_equal(rc, expect):
            raise DataError("table frame's patch rows do not cover the grid exactly once; "
                            "pass one row per (row, col).")
    return x, (rows, cols)


def resample(
    table: pd.DataFrame | np.ndarray,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 0,
    antialias: bool = True,
) -> pd.DataFrame | np.ndarray:
    """Interpolate a patch table to another grid, as timm does for a new input resolution.

    Patch vectors are reshaped to ``(D, rows, cols)`` and resized with bicubic interpolation,
    ``align_corners=False`` and (timm's default) ``antialias=True``, in float64; prefix rows are
    kept unchanged. Equals ``timm.layers.resample_abs_pos_embed`` up to its float32 arithmetic.

    Parameters
    ----------
    table : pandas.DataFrame or numpy.ndarray
        A table frame, or ``(num_prefix_tokens + rows * cols, D)`` vectors (prefix rows first).
    new_grid : tuple of int
        Target ``(rows, cols)``.
    old_grid : tuple of int, optional
        Source grid; read from a frame, required for an array.
    num_prefix_tokens : int
        Prefix rows at the top of an array table (ignored for frames).
    antialias : bool
        Antialiasing when shrinking (timm's default True).

    Returns
    -------
    pandas.DataFrame or numpy.ndarray
        Same kind as ``table``: a table frame on ``new_grid``, or
        ``(num_prefix_tokens + new_rows * new_cols, D)`` float64.
    """
    import torch
    import torch.nn.functional as F

    new_rows, new_cols = (_check_positive(n, g) for n, g in zip(("rows", "cols"),
                                                                 _grid_pair(new_grid)))
    if isinstance(table, pd.DataFrame):
        patches, grid = patch_matrix(table, old_grid)
        prefix_rows = table[table["kind"] != "patch"].sort_values("token")
        prefix_vec = np.asarray(embedding_matrix(prefix_rows), dtype=np.float64)
        prefix = tuple(str(k) for k in table.attrs.get("prefix", prefix_rows["kind"]))
        first = int(table["token"].min()) if len(table) else 0
        if len(prefix_rows) == 0 and first != len(prefix):
            raise LayoutError(
                f"table frame starts at token {first} but attrs['prefix'] names {len(prefix)} "
                "prefix tokens; build the frame with learned_table() or table_frame()."
            )
    else:
        x = np.asarray(table, dtype=np.float64)
        x = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
        prefix_vec = x[:num_prefix_tokens]
        patches, grid = patch_matrix(x[num_prefix_tokens:], old_grid)
    t = torch.from_numpy(np.ascontiguousarray(patches.T)).reshape(1, -1, *grid)
    out = F.interpolate(t, size=(new_rows, new_cols), mode="bicubic", align_corners=False,
                        antialias=antialias)
    new = out.reshape(patches.shape[1], -1).T.numpy()
    if not isinstance(table, pd.DataFrame):
        return np.concatenate([prefix_vec, new], axis=0)
    return table_frame(np.concatenate([prefix_vec, new]), (new_rows, new_cols), prefix,
                       embed_prefix=len(prefix_vec) > 0)
