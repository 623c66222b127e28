"""Studies of positional tables: similarity grids and decay of similarity with distance.

All computations are float64. Tables are taken as table frames (see
:func:`probing.posenc.table_frame`) or as ``(rows * cols, D)`` arrays of patch rows, row-major.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import AnalysisError, ConfigError, DataError
from ..frames import embedding_matrix, require_columns
from ..stats import monte_carlo_p
from .tables import patch_matrix

__all__ = [
    "decay_1d",
    "decay_2d",
    "decay_null",
    "decay_null_test",
    "decay_slope",
    "halving_distance",
    "norm_matched_table",
    "similarity_frame",
    "similarity_grid",
]

Metric = Literal["cosine", "dot"]


def _gram(x: np.ndarray, metric: Metric) -> np.ndarray:
    if metric not in ("cosine", "dot"):
        raise ConfigError(f"metric={metric!r} is unknown; use 'cosine' or 'dot'.")
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1)
        if np.any(norm == 0):
            raise DataError("table has an all-zero vector, whose cosine is undefined; use "
                            "metric='dot' or drop that row.")
        x = x / norm[:, None]
    return x @ x.T


def similarity_grid(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None = None,
    metric: Metric = "cosine",
) -> np.ndarray:
    """Similarity of every patch's positional vector to every other's (ViT paper, Fig. 7 centre).

    Dosovitskiy et al. (2021) show, for each patch, the cosine similarity of its position
    embedding to all patches' embeddings as a small image; together they form a grid of grids.

    Parameters
    ----------
    table : pandas.DataFrame or numpy.ndarray
        Table frame (its patch rows are used) or ``(rows * cols, D)`` patch vectors, row-major.
    grid : tuple of int, optional
        ``(rows, cols)``; read from a frame when None.
    metric : {"cosine", "dot"}
        Cosine similarity or raw dot product.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, rows, cols)`` float64; ``[r, c]`` is the ``(rows, cols)`` map of query
        patch ``(r, c)``.
    """
    x, (rows, cols) = patch_matrix(table, grid)
    return _gram(x, metric).reshape(rows, cols, rows, cols)


def similarity_frame(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None = None,
    metric: Metric = "cosine",
) -> pd.DataFrame:
    """:func:`similarity_grid` as a tidy frame, the input of the grid-of-grids figure.

    Returns
    -------
    pandas.DataFrame
        ``(rows * cols) ** 2`` rows ordered by ``(query_row, query_col, row, col)``: columns
        ``query_row``, ``query_col``, ``row``, ``col``, ``metric``, ``value``.
    """
    sim = similarity_grid(table, grid, metric)
    rows, cols = sim.shape[:2]
    idx = np.indices(sim.shape).reshape(4, -1)
    return pd.DataFrame({
        "query_row": idx[0], "query_col": idx[1], "row": idx[2], "col": idx[3],
        "metric": metric, "value": sim.reshape(-1),
    })


def _vectors(table: pd.DataFrame | np.ndarray) -> np.ndarray:
    if isinstance(table, pd.DataFrame):
        order = table["token"].to_numpy().argsort(kind="stable") if "token" in table else None
        x = np.asarray(embedding_matrix(table), dtype=np.float64)
        return x if order is None else x[order]
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"table has shape {x.shape}; pass an (n_positions, D) array.")
    return x


def decay_1d(
    table: pd.DataFrame | np.ndarray,
    offsets: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> pd.DataFrame:
    """Similarity of a 1-D encoding at position ``p`` and ``p + k``, for several ``p``.

    For the sinusoidal encoding (Vaswani et al. 2017), ``PE(p) . PE(p + k) = sum_i cos(k w_i)``
    does not depend on ``p`` (shift invariance) and decays with ``|k|`` while oscillating;
    comparing the curves of several ``p`` shows it.

    Parameters
    ----------
    table : pandas.DataFrame or numpy.ndarray
        ``(n_positions, D)`` vectors in position order (a frame's rows ordered by ``token``).
    offsets : array of int, optional
        Offsets ``k`` (may be negative); default ``0 .. n_positions - 1``.
    positions : array of int, optional
        Start positions ``p``; default 4 evenly spaced in ``0 .. n_positions // 2``.

    Returns
    -------
    pandas.DataFrame
        One row per ``(p, k)`` with ``0 <= p + k < n_positions``: ``p``, ``k``, ``distance``
        (``|k|``, positions), ``dot``, ``cosine``.
    """
    x = _vectors(table)
    n = x.shape[0]
    offsets = np.arange(n) if offsets is None else np.asarray(offsets, dtype=np.int64).ravel()
    if positions is None:
        positions = np.unique(np.linspace(0, n // 2, 4).astype(np.int64))
    positions = np.asarray(positions, dtype=np.int64).ravel()
    if positions.size == 0 or positions.min() < 0 or positions.max() >= n:
        raise ConfigError(f"positions must lie in 0..{n - 1}; pass valid start positions.")
    p, k = (a.ravel() for a in np.meshgrid(positions, offsets, indexing="ij"))
    keep = (p + k >= 0) & (p + k < n)
    p, k = p[keep], k[keep]
    dot = np.einsum("ij,ij->i", x[p], x[p + k])
    norm = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = dot / (norm[p] * norm[p + k])
    return pd.DataFrame({"p": p, "k": k, "distance": np.abs(k).astype(np.float64),
                         "dot": dot, "cosine": cosine})


def decay_2d(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None = None,
    by: Literal["offset", "distance"] = "offset",
) -> pd.DataFrame:
    """Similarity of patch pairs as a function of their 2-D offset or Euclidean distance.

    Every ordered pair of patches ``(i, j)``, ``i == j`` included, contributes its dot product
    and cosine similarity to the group of its offset ``(dr, dc) = (row_j - row_i, col_j -
    col_i)`` (``by="offset"``) or of its Euclidean grid distance ``sqrt(dr**2 + dc**2)``
    (``by="distance"``, in patches).

    Parameters
    ----------
    table : pandas.DataFrame or numpy.ndarray
        Table frame or ``(rows * cols, D)`` patch vectors, row-major.
    grid : tuple of int, optional
        ``(rows, cols)``; read from a frame when None.
    by : {"offset", "distance"}
        Grouping.

    Returns
    -------
    pandas.DataFrame
        One row per group with at least one pair: ``dr``, ``dc`` (offset only), ``distance``
        (patches), ``n_pairs``, ``dot_mean``, ``dot_std``, ``cosine_mean``, ``cosine_std``
        (population standard deviations over the pairs), sorted by distance.
    """
    if by not in ("offset", "distance"):
        raise ConfigError(f"by={by!r} is unknown; use 'offset' or 'distance'.")
    x, (rows, cols) = patch_matrix(table, grid)
    dot = x @ x.T
    norm = np.sqrt(np.diag(dot))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / np.outer(norm, norm)
    r, c = np.divmod(np.arange(rows * cols), cols)
    dr = r[None, :] - r[:, None]
    dc = c[None, :] - c[:, None]
    if by == "offset":
        key = ((dr + rows - 1) * (2 * cols - 1) + dc + cols - 1).ravel()
        size = (2 * rows - 1) * (2 * cols - 1)
    else:
        key = (dr**2 + dc**2).ravel()
        size = (rows - 1) ** 2 + (cols - 1) ** 2 + 1
    count = np.bincount(key, minlength=size).astype(np.float64)
    present = np.flatnonzero(count)
    out: dict[str, np.ndarray] = {}
    if by == "offset":
        gdr, gdc = np.divmod(present, 2 * cols - 1)
        out["dr"], out["dc"] = gdr - (rows - 1), gdc - (cols - 1)
        out["distance"] = np.hypot(out["dr"], out["dc"])
    else:
        out["distance"] = np.sqrt(present.astype(np.float64))
    out["n_pairs"] = count[present].astype(np.int64)
    for name, values in (("dot", dot.ravel()), ("cosine", cos.ravel())):
        s1 = np.bincount(key, weights=values, minlength=size)[present]
        s2 = np.bincount(key, weights=values**2, minlength=size)[present]
        mean = s1 / count[present]
        out[f"{name}_mean"] = mean
        out[f"{name}_std"] = np.sqrt(np.maximum(s2 / count[present] - mean**2, 0.0))
    frame = pd.DataFrame(out)
    return frame.sort_values("distance", kind="stable").reset_index(drop=True)


def halving_distance(
    decay_frame: pd.DataFrame, value: Literal["cosine", "dot"] = "cosine"
) -> float:
    """Distance at which the mean similarity first falls to half of its value at distance 0.

    The mean similarity per distance is taken from the frame (``{value}_mean`` weighted by
    ``n_pairs`` when several rows share a distance, e.g. offsets of a :func:`decay_2d` frame;
    the plain mean of ``{value}`` over rows of a :func:`decay_1d` frame). With ``m(d)`` that
    curve over increasing distances and ``m0 = m(0)``, the result is the first ``d`` where
    ``m(d) <= m0 / 2``, linearly interpolated between it and the previous distance. It is a
    summary of the decay, not a fitted model; an oscillating curve may rise again afterwards.

    Returns
    -------
    float
        The halving distance (in the frame's distance units: positions or patches), or NaN when
        the curve never falls to half.

    Raises
    ------
    AnalysisError
        When the frame has no distance-0 row or no similarity column.
    """
    require_columns(decay_frame, ("distance",), "decay frame",
                    "pass decay_1d() or decay_2d() output")
    dist = decay_frame["distance"].to_numpy(dtype=np.float64)
    if f"{value}_mean" in decay_frame.columns:
        v = decay_frame[f"{value}_mean"].to_numpy(dtype=np.float64)
        w = (decay_frame["n_pairs"].to_numpy(dtype=np.float64)
             if "n_pairs" in decay_frame.columns else np.ones_like(v))
    elif value in decay_frame.columns:
        v = decay_frame[value].to_numpy(dtype=np.float64)
        w = np.ones_like(v)
    else:
        require_columns(decay_frame, (value,), "decay frame",
                        "pass decay_1d() or decay_2d() output")
    d, inverse = np.unique(dist, return_inverse=True)
    m = np.bincount(inverse, weights=w * v) / np.bincount(inverse, weights=w)
    if d.size == 0 or d[0] != 0:
        raise AnalysisError("decay frame has no distance-0 row, so there is no reference value; "
                            "include offset 0.")
    target = m[0] / 2
    below = np.flatnonzero(m[1:] <= target)
    if below.size == 0:
        return float("nan")
    i = below[0] + 1
    frac = (m[i - 1] - target) / (m[i - 1] - m[i])
    return float(d[i - 1] + frac * (d[i] - d[i - 1]))


def norm_matched_table(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None = None,
    rng: np.random.Generator | int = 0,
) -> np.ndarray:
    """A random positional table of the same shape and per-row norms (the null of a table).

    Every patch row is an independent isotropic Gaussian direction scaled to the norm of the
    same row of ``table``: it keeps the grid, width and norms and carries no position. A learned
    table whose similarity grid or decay looks like those of such tables does not show that it
    encodes position (Dosovitskiy et al. 2021, Fig. 7 show the learned grid without such a
    null; a Monte Carlo test against it: :func:`probing.stats.monte_carlo_p`).

    Parameters
    ----------
    table : pandas.DataFrame or numpy.ndarray
        Table frame or ``(rows * cols, D)`` patch vectors, row-major.
    grid : tuple of int, optional
        ``(rows, cols)``; read from a frame when None.
    rng : numpy.random.Generator or int
        Generator (or seed) of the draw.

    Returns
    -------
    numpy.ndarray
        ``(rows * cols, D)`` float64, ``norm(out[i]) == norm(table[i])``.
    """
    x, _ = patch_matrix(table, grid)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    z = rng.standard_normal(x.shape)
    return z * (np.linalg.norm(x, axis=1) / np.linalg.norm(z, axis=1))[:, None]


def decay_slope(decay_frame: pd.DataFrame, value: Literal["cosine", "dot"] = "cosine",
                max_distance: float | None = None) -> float:
    """Least-squares slope of the mean similarity against distance over the near range.

    The pair-weighted (``n_pairs``) linear fit of ``{value}_mean`` on ``distance`` over the rows
    of a :func:`decay_2d` frame with ``0 < distance <= max_distance`` (None: half the largest
    distance of the frame, where a learned table's decay lives; far pairs, few and near the
    grid's corners, may rise again). Negative when similarity falls with distance, about 0 for
    a table without positional structure. Units: similarity per patch.
    """
    require_columns(decay_frame, ("distance", f"{value}_mean", "n_pairs"), "decay frame",
                    "pass decay_2d() output")
    dist = decay_frame["distance"].to_numpy(dtype=np.float64)
    limit = dist.max() / 2 if max_distance is None else float(max_distance)
    part = decay_frame[(dist > 0) & (dist <= limit + 1e-9)]
    if part["distance"].nunique() < 2:
        raise AnalysisError(f"the decay frame has fewer than two distances in (0, {limit:g}], "
                            "so no slope; raise max_distance or use a larger grid.")
    d = part["distance"].to_numpy(dtype=np.float64)
    v = part[f"{value}_mean"].to_numpy(dtype=np.float64)
    w = part["n_pairs"].to_numpy(dtype=np.float64)
    dm, vm = np.average(d, weights=w), np.average(v, weights=w)
    return float(np.sum(w * (d - dm) * (v - vm)) / np.sum(w * (d - dm) ** 2))


def decay_null(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None = None,
    n_null: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`decay_2d` (``by="distance"``) of ``n_null`` :func:`norm_matched_table` draws.

    The draws come from one ``numpy.random.default_rng(seed)`` in order, so draw ``k`` is
    ``norm_matched_table(table, grid, rng)`` after ``k`` earlier draws.

    Returns
    -------
    pandas.DataFrame
        The concatenated decay frames with a ``draw`` column (``0 .. n_null - 1``).
    """
    if int(n_null) < 1:
        raise ConfigError(f"n_null={n_null!r} must be at least 1; e.g. 100.")
    x, grid = patch_matrix(table, grid)
    rng = np.random.default_rng(seed)
    return pd.concat([decay_2d(norm_matched_table(x, grid, rng), grid, by="distance")
                      .assign(draw=k) for k in range(int(n_null))], ignore_index=True)


def decay_null_test(
    table: pd.DataFrame | np.ndarray,
    grid: tuple[int, int] | None,
    statistic: Callable[[pd.DataFrame], float],
    n_null: int = 100,
    seed: int = 0,
    alternative: Literal["less", "greater"] = "less",
) -> tuple[pd.DataFrame, np.ndarray, float, float]:
    """Monte Carlo test of a decay statistic of ``table`` against norm-matched random tables.

    ``statistic`` maps a :func:`decay_2d` (``by="distance"``) frame to a number (e.g.
    :func:`decay_slope`); it is computed on ``table`` and on each of the :func:`decay_null`
    draws, and :func:`probing.stats.monte_carlo_p` gives the one-sided p-value.

    Returns
    -------
    (pandas.DataFrame, numpy.ndarray, float, float)
        The null decay frames (with ``draw``), the ``(n_null,)`` null statistics, the observed
        statistic and the p-value.
    """
    x, grid = patch_matrix(table, grid)
    null = decay_null(x, grid, n_null=n_null, seed=seed)
    values = np.array([statistic(g) for _, g in null.groupby("draw", sort=True)])
    observed = float(statistic(decay_2d(x, grid, by="distance")))
    return null, values, observed, monte_carlo_p(observed, values, alternative)
