"""Do positional and content vectors share a subspace? Principal angles and variance fractions.

Float64 throughout; large content matrices are reduced to their ``(D, D)`` covariance in chunks.
See :func:`subspace_overlap`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..frames import embedding_matrix

__all__ = ["principal_angles", "principal_subspace", "subspace_overlap", "variance_fraction"]


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles between the column spaces of two matrices, in degrees.

    Björck & Golub (1973); computed with the sine/cosine method of Knyazev & Argentati (2002)
    (``scipy.linalg.subspace_angles``), accurate for small angles.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(D, p)`` and ``(D, q)``: each matrix's *columns* span its subspace (a basis, not
        necessarily orthonormal). For a data matrix ``(n_samples, D)`` pass its principal basis
        :func:`principal_subspace` instead, or ``data.T`` to use the span of all its rows.

    Returns
    -------
    numpy.ndarray
        ``(min(p, q),)`` float64 angles in degrees, ascending (0 = shared direction, 90 =
        orthogonal).
    """
    from scipy.linalg import subspace_angles

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise DataError(f"bases have shapes {a.shape} and {b.shape}; pass (D, p) and (D, q) "
                        "matrices with the same D.")
    return np.sort(np.degrees(subspace_angles(a, b)))


def _covariance(x: np.ndarray, center: bool, chunk: int = 65536) -> tuple[np.ndarray, int]:
    """Second-moment matrix ``(D, D)`` (about the mean when ``center``), accumulated in chunks."""
    n = x.shape[0]
    mean = x.mean(axis=0, dtype=np.float64) if center else np.zeros(x.shape[1])
    cov = np.zeros((x.shape[1], x.shape[1]))
    for s in range(0, n, chunk):
        block = np.asarray(x[s : s + chunk], dtype=np.float64) - mean
        cov += block.T @ block
    return cov / max(n, 1), n


def _matrix(x: pd.DataFrame | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, pd.DataFrame):
        if "kind" in x.columns:
            x = x[x["kind"] == "patch"]
        return embedding_matrix(x)
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name} has shape {x.shape}; pass an (n, D) matrix.")
    return x


def _top_eigvecs(cov: np.ndarray, k: int) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    return vecs[:, ::-1][:, :k]


def principal_subspace(x: np.ndarray, k: int, center: bool = True) -> np.ndarray:
    """Orthonormal basis ``(D, k)`` of the top-``k`` principal subspace of ``(n, D)`` data.

    The leading ``k`` eigenvectors of the covariance (``center=True``) or of the uncentred
    second-moment matrix ``X^T X / n``.
    """
    x = _matrix(x, "x")
    k = _check_k(k, x, center)
    return _top_eigvecs(_covariance(x, center)[0], k)


def variance_fraction(x: np.ndarray, basis: np.ndarray, center: bool = True) -> float:
    """Fraction of the (centred) variance of ``(n, D)`` data inside ``span(basis)``.

    ``trace(Q^T C Q) / trace(C)`` with ``Q`` an orthonormal basis of ``basis``'s columns
    ``(D, k)`` and ``C`` the covariance of ``x``.
    """
    cov, _ = _covariance(_matrix(x, "x"), center)
    q, _ = np.linalg.qr(np.asarray(basis, dtype=np.float64))
    return float(np.trace(q.T @ cov @ q) / np.trace(cov))


def _check_k(k: int, x: np.ndarray, center: bool) -> int:
    limit = min(x.shape[1], x.shape[0] - int(center))
    if int(k) != k or not 1 <= k <= limit:
        raise ConfigError(f"k={k!r} must be an int in 1..{limit} (the rank available from "
                          f"{x.shape[0]} rows of width {x.shape[1]}); pass a smaller k.")
    return int(k)


def subspace_overlap(
    pe: pd.DataFrame | np.ndarray,
    content: pd.DataFrame | np.ndarray,
    k: int,
    n_null: int = 200,
    seed: int = 0,
    center: bool = True,
) -> pd.DataFrame:
    """Do positional and content vectors live in separate subspaces?

    Compares the top-``k`` principal subspace ``U_pe`` of the positional table with the top-
    ``k`` principal subspace ``U_c`` of the content vectors (the patch projections before the
    positional encoding is added, over a dataset). The null draws ``n_null`` Haar-random
    ``k``-dimensional subspaces ``R`` of ``R^D`` (QR of a Gaussian matrix) and computes the same
    numbers with ``R`` in place of the other subspace; for variance fractions its expectation
    is ``k / D``.

    Parameters
    ----------
    pe : pandas.DataFrame or numpy.ndarray
        Positional table, ``(n_positions, D)`` (a frame's patch rows).
    content : pandas.DataFrame or numpy.ndarray
        Content vectors ``(n_samples, D)`` (a token frame's patch rows); any float dtype, read in
        chunks and accumulated in float64.
    k : int
        Subspace dimension.
    n_null : int
        Random subspaces drawn for the null.
    seed : int
        Seed of the null's generator.
    center : bool
        Remove each matrix's mean row before the principal subspaces and variances.

    Returns
    -------
    pandas.DataFrame
        Tidy: ``metric``, ``component`` (1-based angle index; null for scalar metrics),
        ``value``, ``null_mean``, ``null_low``, ``null_high`` (2.5 and 97.5 percentiles).
        Metrics: ``angle_deg`` (``k`` principal angles between ``U_pe`` and ``U_c``, ascending;
        null: ``U_pe`` vs ``R``), ``mean_angle_deg``, ``pe_variance_in_content`` (fraction of
        PE variance in ``U_c``; null: in ``R``), ``content_variance_in_pe`` (fraction of content
        variance in ``U_pe``; null: in ``R``).
    """
    pe_x, c_x = _matrix(pe, "pe"), _matrix(content, "content")
    if pe_x.shape[1] != c_x.shape[1]:
        raise DataError(f"pe has width {pe_x.shape[1]} but content {c_x.shape[1]}; pass vectors "
                        "of the same model.")
    k = _check_k(k, pe_x, center)
    _check_k(k, c_x, center)
    if int(n_null) < 1:
        raise ConfigError(f"n_null={n_null!r} must be >= 1; pass e.g. 200.")
    cov_pe, _ = _covariance(pe_x, center)
    cov_c, _ = _covariance(c_x, center)
    u_pe, u_c = _top_eigvecs(cov_pe, k), _top_eigvecs(cov_c, k)

    def frac(cov: np.ndarray, q: np.ndarray) -> float:
        return float(np.trace(q.T @ cov @ q) / np.trace(cov))

    angles = principal_angles(u_pe, u_c)
    rng = np.random.default_rng(seed)
    d = pe_x.shape[1]
    null_angles = np.empty((n_null, k))
    null_pe, null_c = np.empty(n_null), np.empty(n_null)
    for t in range(n_null):
        q, _ = np.linalg.qr(rng.standard_normal((d, k)))
        null_angles[t] = principal_angles(u_pe, q)
        null_pe[t], null_c[t] = frac(cov_pe, q), frac(cov_c, q)
    rows = [("angle_deg", i + 1, angles[i], null_angles[:, i]) for i in range(k)]
    rows += [
        ("mean_angle_deg", None, angles.mean(), null_angles.mean(axis=1)),
        ("pe_variance_in_content", None, frac(cov_pe, u_c), null_pe),
        ("content_variance_in_pe", None, frac(cov_c, u_pe), null_c),
    ]
    return pd.DataFrame({
        "metric": [r[0] for r in rows],
        "component": pd.array([r[1] for r in rows], dtype="Int64"),
        "value": [float(r[2]) for r in rows],
        "null_mean": [float(r[3].mean()) for r in rows],
        "null_low": [float(np.percentile(r[3], 2.5)) for r in rows],
        "null_high": [float(np.percentile(r[3], 97.5)) for r in rows],
    })
