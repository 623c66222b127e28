"""The sufficient statistics behind the linear probes' ridge path, and their shared algebra.

Ridge (closed form) works from sufficient statistics accumulated in float64 over row chunks:
``n``, ``sum(x - s)``, ``sum((x - s)(x - s)^T)``, ``sum(y)``, ``sum((x - s) y^T)`` with a fixed
shift ``s`` (the data mean) against cancellation. Memory is ``O(d^2 + chunk * d)`` whatever the
number of rows, and statistics of disjoint row sets add, so a cross-validation sweep gets each
training set's statistics as ``total - held-out fold`` without touching the data again.

Standardisation: features are centred and divided by their population standard deviation (as
``sklearn.preprocessing.StandardScaler``; constant features keep scale 1). This module needs
numpy (and scipy's solver) only: the probe sweeps (:mod:`.cv`) use it without importing
scikit-learn, which only the estimator :class:`probing.probes.linear.LinearProbe` needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["CHUNK_ROWS", "Moments", "Solver", "Task", "blas_threads", "data_shift",
           "linear_scores", "moments", "one_hot", "ridge_solve", "softmax", "standardisation"]

#: Rows per chunk when accumulating statistics or predicting (bounds float64 temporaries).
CHUNK_ROWS = 16384

Task = Literal["classification", "regression"]
Solver = Literal["logistic", "ridge"]


# --------------------------------------------------------------------------- statistics
@dataclass
class Moments:
    """Sufficient statistics of a row set (shapes: ``d`` features, ``k`` target columns)."""

    n: int
    shift: np.ndarray  # (d,)
    sx: np.ndarray  # (d,) sum of (x - shift)
    sxx: np.ndarray  # (d, d) sum of (x - shift)(x - shift)^T, or (d,) its diagonal
    sy: np.ndarray | None = None  # (k,)
    xty: np.ndarray | None = None  # (d, k)

    def __sub__(self, other: Moments) -> Moments:
        sub = lambda a, b: None if a is None else a - b  # noqa: E731
        return Moments(
            self.n - other.n, self.shift, self.sx - other.sx, self.sxx - other.sxx,
            sub(self.sy, other.sy), sub(self.xty, other.xty),
        )

    def __add__(self, other: Moments) -> Moments:
        add = lambda a, b: None if a is None else a + b  # noqa: E731
        return Moments(
            self.n + other.n, self.shift, self.sx + other.sx, self.sxx + other.sxx,
            add(self.sy, other.sy), add(self.xty, other.xty),
        )


def data_shift(X: np.ndarray) -> np.ndarray:
    """``(d,)`` float64 column mean of ``X``, computed in chunks (the shift of :class:`Moments`)."""
    total = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], CHUNK_ROWS):
        total += X[start : start + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    return total / max(X.shape[0], 1)


def moments(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    full: bool = True,
) -> Moments:
    """Accumulate :class:`Moments` of ``X[rows]`` (and ``Y[rows]``) over row chunks.

    Sums across chunks are float64. float32 features are multiplied in float32 within a chunk
    of :data:`CHUNK_ROWS` rows (relative error about 2e-7); float64 features in float64.

    Parameters
    ----------
    X : numpy.ndarray
        ``(n, d)`` features, any float dtype (not copied as a whole).
    Y : numpy.ndarray, optional
        ``(n, k)`` targets.
    rows : numpy.ndarray, optional
        Row indices to use (all rows when None).
    shift : numpy.ndarray, optional
        ``(d,)`` shift; the mean of ``X`` when None.
    full : bool
        Accumulate the full ``(d, d)`` cross-product (ridge) or only its diagonal (scaling).
    """
    d = X.shape[1]
    shift = data_shift(X) if shift is None else shift
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    sx = np.zeros(d)
    sxx = np.zeros((d, d) if full else d)
    sy = None if Y is None else np.zeros(Y.shape[1])
    xty = None if Y is None else np.zeros((d, Y.shape[1]))
    # float32 features (what stores hold): each chunk's products in float32 BLAS (about 5x
    # faster; relative error of the summed cross-product ~2e-7, measured at n = 10,000,
    # d = 768), accumulated across chunks in float64. float64 features stay float64 throughout.
    work = np.float32 if X.dtype in (np.float32, np.float16) else np.float64
    shift_w = shift.astype(work)
    shift = shift_w.astype(np.float64)  # the shift actually subtracted, so moments stay exact
    for start in range(0, rows.size, CHUNK_ROWS):
        take = rows[start : start + CHUNK_ROWS]
        xc = X[take].astype(work, copy=False) - shift_w
        sx += xc.sum(axis=0, dtype=np.float64)
        if full:
            sxx += xc.T @ xc
        else:
            sxx += np.einsum("ij,ij->j", xc, xc, dtype=np.float64)
        if Y is not None:
            yc = np.asarray(Y[take], dtype=np.float64)
            sy += yc.sum(axis=0)
            xty += xc.T.astype(np.float64) @ yc
    return Moments(int(rows.size), shift, sx, sxx, sy, xty)


def standardisation(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)``, each ``(d,)``: column means and population standard deviations.

    Constant columns (variance at rounding level) get scale 1, as in ``StandardScaler``.
    """
    n = max(m.n, 1)
    mc = m.sx / n
    diag = np.diagonal(m.sxx) if m.sxx.ndim == 2 else m.sxx
    var = np.maximum(diag / n - mc**2, 0.0)
    mean = m.shift + mc
    scale = np.sqrt(var)
    tiny = var <= 1e3 * np.finfo(np.float64).eps * (1.0 + mean**2)
    scale[tiny] = 1.0
    return mean, scale


def ridge_solve(m: Moments, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge on standardised features from statistics.

    Minimises ``||Yc - Z W||^2 + alpha ||W||^2`` with ``Z`` the standardised features and
    ``Yc`` the centred targets (unpenalised intercept), then maps ``W`` to raw units.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``coef`` ``(d, k)`` in raw feature units and ``intercept`` ``(k,)``.
    """
    import scipy.linalg

    mean, scale = standardisation(m)
    mc = m.sx / m.n
    scatter = m.sxx - m.n * np.outer(mc, mc)
    cross = m.xty - np.outer(mc, m.sy)
    A = scatter / np.outer(scale, scale)
    A[np.diag_indices_from(A)] += alpha
    B = cross / scale[:, None]
    try:
        W = scipy.linalg.solve(A, B, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        W = scipy.linalg.lstsq(A, B, check_finite=False)[0]
    coef = W / scale[:, None]
    intercept = m.sy / m.n - mean @ coef
    return coef, intercept


def linear_scores(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``X @ coef + intercept`` in float64 chunks; ``coef`` ``(d, k)``, returns ``(n, k)``."""
    out = np.empty((X.shape[0], coef.shape[1]))
    for start in range(0, X.shape[0], CHUNK_ROWS):
        out[start : start + CHUNK_ROWS] = X[start : start + CHUNK_ROWS] @ coef + intercept
    return out


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` float64 indicator matrix of integer ``codes``."""
    out = np.zeros((codes.size, n_classes))
    out[np.arange(codes.size), codes] = 1.0
    return out


def blas_threads(n_threads: int | None) -> contextlib.AbstractContextManager:
    """Context limiting BLAS/OpenMP threads (threadpoolctl); no limit when None."""
    if n_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, K)`` logits."""
    z = scores - scores.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
