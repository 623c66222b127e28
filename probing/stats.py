"""Shared statistics: intervals over folds or images, and the one bootstrap of the toolkit.

Conventions: inputs are arrays whose first axis is the unit resampled or summarised (folds,
images); intervals are two-sided at ``level`` (0.95 by default).

- Student-t interval (:func:`t_interval`): ``n - 1`` degrees of freedom and the sample standard
  deviation (``ddof=1``); with fewer than two values its bounds are NaN.
- Nonparametric bootstrap, percentile interval (Efron & Tibshirani 1993, "An Introduction to
  the Bootstrap", ch. 6 and 13): draw ``n_boot`` resamples of the ``n`` units with replacement
  (:func:`bootstrap_indices`, one seeded ``numpy.random.default_rng(seed).integers(0, n,
  (n_boot, n))`` draw), recompute the statistic on each, and take the ``(1 - level) / 2`` and
  ``(1 + level) / 2`` percentiles of the replicates (:func:`percentile_interval`, numpy's
  linear interpolation). The same resamples serve every group of one call (paired over
  layers, heads, methods), so their intervals come from the same draws.
- Spearman rank correlation (Spearman 1904) of paired rows (:func:`spearman_rows`): the Pearson
  correlation of the rows' ranks, ties given their average rank (:func:`average_ranks`, as
  ``scipy.stats.rankdata``'s default); NaN for a constant row or one holding a NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError

__all__ = [
    "DEFAULT_N_BOOT",
    "average_ranks",
    "bootstrap_cka",
    "bootstrap_frame",
    "bootstrap_indices",
    "bootstrap_mean",
    "monte_carlo_p",
    "percentile_interval",
    "spearman_rows",
    "t_interval",
]

#: Bootstrap resamples unless a caller says otherwise.
DEFAULT_N_BOOT = 200
#: Largest memory :func:`bootstrap_cka` may hold in Gram matrices, in bytes.
MAX_GRAM_BYTES = 2 * 1024**3


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` Student-t interval of ``values`` (NaN bounds for fewer than 2)."""
    from scipy.special import stdtrit  # the t quantile; scipy.stats costs 0.5 s to import

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = stdtrit(values.size - 1, 0.5 + level / 2) * values.std(ddof=1) / np.sqrt(values.size)
    return mean, mean - float(half), mean + float(half)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` along the last axis of ``x`` (``(..., n)``), tied values sharing their
    average rank (``scipy.stats.rankdata(x, axis=-1)``); a row holding a NaN is all NaN.

    Parameters
    ----------
    x : numpy.ndarray
        ``(..., n)`` values, ranked along the last axis.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    n = rows.shape[1]
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    pos = np.broadcast_to(np.arange(n), ordered.shape)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # a tie run's first ...
    last = np.minimum.accumulate(np.where(ends, pos, n)[:, ::-1], axis=1)[:, ::-1]  # ... last
    ranks = np.empty_like(ordered)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    ranks[np.isnan(rows).any(axis=1)] = np.nan
    return ranks.reshape(x.shape)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each pair of rows of ``a`` and ``b`` (both ``(m, n)``).

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(m, n)`` each: row ``i`` of ``a`` is paired with row ``i`` of ``b``.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` float64: the Pearson correlation of the rows' :func:`average_ranks`; NaN where
        a row is constant or holds a NaN (as ``scipy.stats.spearmanr``).

    Raises
    ------
    DataError
        When ``a`` and ``b`` are not two 2-D arrays of one shape.
    """
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.shape != rb.shape or ra.ndim != 2:
        raise DataError(f"spearman_rows needs two (m, n) arrays of one shape, not {ra.shape} "
                        f"and {rb.shape}; pass one row per pair.")
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    num = (ra * rb).sum(1)
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def _check(n: int, n_boot: int, level: float) -> None:
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot={n_boot!r} must be at least 1; the default is "
                          f"{DEFAULT_N_BOOT}.")
    if not 0 < level < 1:
        raise ConfigError(f"level={level!r} must lie in (0, 1); e.g. 0.95.")
    if n < 1:
        raise DataError("the bootstrap got no units to resample; pass at least one image.")


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` int64 resample indices, drawn with replacement (Efron & Tibshirani 1993).

    Exactly ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``.
    """
    _check(int(n), n_boot, 0.5)
    return np.random.default_rng(seed).integers(0, int(n), size=(int(n_boot), int(n)))


def percentile_interval(replicates: np.ndarray, level: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(low, high)`` of bootstrap replicates ``(n_boot, ...)`` along axis 0.

    NaN replicates (a statistic undefined on a resample) are left out; all-NaN gives NaN.
    """
    _check(1, 1, level)
    reps = np.asarray(replicates, dtype=np.float64)
    q = [50 * (1 - level), 50 * (1 + level)]
    with warnings.catch_warnings():  # all-NaN slices give NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(reps, q, axis=0)
    return low, high


def bootstrap_mean(values: np.ndarray, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over units (axis 0) and its percentile-bootstrap interval (Efron & Tibshirani 1993).

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_units, ...)`` per-unit values (e.g. ``(n_images, n_groups)``); NaN entries are left
        out of each mean (as ``pandas`` means do).
    n_boot, seed, level
        Resamples, seed of :func:`bootstrap_indices`, interval level.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``mean, low, high``, each of shape ``values.shape[1:]``.
    """
    x = np.asarray(values, dtype=np.float64)
    _check(x.shape[0] if x.ndim else 0, n_boot, level)
    idx = bootstrap_indices(x.shape[0], n_boot, seed)
    with warnings.catch_warnings():  # all-NaN slices give NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        reps = np.stack([np.nanmean(x[i], axis=0) for i in idx])
    low, high = percentile_interval(reps, level)
    return mean, low, high


def bootstrap_frame(frame: pd.DataFrame, by: Sequence[str], value: str,
                    unit: str = "image_id", n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                    level: float = 0.95) -> pd.DataFrame:
    """Per-group mean of ``value`` over units with a percentile-bootstrap interval.

    The units (``unit`` column, e.g. images) are resampled once for all groups (paired), as
    :func:`bootstrap_mean` on the ``(n_units, n_groups)`` table of values; a unit missing from a
    group is NaN there and left out of that group's means.

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns, ``value`` (the mean), ``ci_low``, ``ci_high``,
        ``n_boot``, in the order of first appearance of the groups.
    """
    by = list(by)
    groups = frame[by].drop_duplicates().reset_index(drop=True)
    code = frame.groupby(by, sort=False).ngroup().to_numpy()  # first-appearance order
    units, unit_code = np.unique(frame[unit].to_numpy(), return_inverse=True)
    wide = np.full((units.size, len(groups)), np.nan)
    total = np.zeros_like(wide)
    count = np.zeros_like(wide)
    v = frame[value].to_numpy(dtype=np.float64)
    ok = np.isfinite(v)
    np.add.at(total, (unit_code[ok], code[ok]), v[ok])
    np.add.at(count, (unit_code[ok], code[ok]), 1.0)
    np.divide(total, count, out=wide, where=count > 0)
    mean, low, high = bootstrap_mean(wide, n_boot, seed, level)
    return groups.assign(value=mean, ci_low=low, ci_high=high, n_boot=int(n_boot))


def _centred_grams(mats: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for m in mats:
        x = np.asarray(m, dtype=np.float64)
        x = x - x.mean(axis=0)
        out.append(x @ x.T)
    return out


def bootstrap_cka(mats_a: Sequence[np.ndarray], mats_b: Sequence[np.ndarray] | None = None,
                  n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of linear (biased) CKA between every pair of matrices.

    Linear CKA (Kornblith et al. 2019) of a resample equals, in the Gram form, the ratio of
    ``HSIC(K, L) = tr(K_c L_c)`` terms of the resample's centred Gram matrices. With ``w`` the
    resample's counts per item (``sum(w) = n``), ``W = diag(w)`` and ``G = X X^T`` of the
    original items, the resample's ``tr(K_c L_c) = tr(G_a M G_b M)`` with ``M = W - w w^T / n``,
    i.e. ``w^T (G_a * G_b) w - 2/n sum_i w_i (G_a w)_i (G_b w)_i + (w^T G_a w)(w^T G_b w)/n^2``.
    All resamples are done at once as matrix products with the ``(n, n_boot)`` count matrix,
    so no resampled matrix is built (Efron & Tibshirani 1993 for the percentile bootstrap).

    Parameters
    ----------
    mats_a : sequence of numpy.ndarray
        ``(n, d_l)`` representations of the same ``n`` items (e.g. one per layer).
    mats_b : sequence of numpy.ndarray, optional
        A second set over the same items (another model); None pairs ``mats_a`` with itself.
    n_boot, seed, level
        Resamples (items drawn by :func:`bootstrap_indices`), seed, interval level.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``low, high`` of shape ``(len(mats_a), len(mats_b))``. Memory: ``n x n`` float64 per
        matrix.

    Raises
    ------
    ConfigError
        When those Gram matrices would exceed :data:`MAX_GRAM_BYTES`.
    """
    n = np.asarray(mats_a[0]).shape[0]
    _check(n, n_boot, level)
    need = 8 * n * n * (len(mats_a) + len(mats_b or []))
    if need > MAX_GRAM_BYTES:
        raise ConfigError(
            f"bootstrap_cka over {n} items and {len(mats_a) + len(mats_b or [])} matrices needs "
            f"{need / 1024**3:.1f} GiB of Gram matrices (limit {MAX_GRAM_BYTES / 1024**3:.0f} "
            "GiB); use fewer items (e.g. max_images) or fewer layers."
        )
    if any(np.asarray(m).shape[0] != n for m in [*mats_a, *(mats_b or [])]):
        raise DataError("bootstrap_cka got matrices with different numbers of rows; pass the "
                        "same items in the same order.")
    idx = bootstrap_indices(n, n_boot, seed)
    w = np.stack([np.bincount(i, minlength=n) for i in idx], axis=1).astype(np.float64)
    ga = _centred_grams(mats_a)
    gb = ga if mats_b is None else _centred_grams(mats_b)
    ua = [g @ w for g in ga]
    ub = ua if mats_b is None else [g @ w for g in gb]
    sa = [(w * u).sum(axis=0) for u in ua]
    sb = sa if mats_b is None else [(w * u).sum(axis=0) for u in ub]

    def hsic(g1, g2, u1, u2, s1, s2) -> np.ndarray:  # (n_boot,)
        t1 = (w * ((g1 * g2) @ w)).sum(axis=0)
        t2 = (w * u1 * u2).sum(axis=0)
        return t1 - 2.0 * t2 / n + s1 * s2 / n**2

    self_a = [hsic(g, g, u, u, s, s) for g, u, s in zip(ga, ua, sa)]
    self_b = self_a if mats_b is None else [hsic(g, g, u, u, s, s)
                                            for g, u, s in zip(gb, ub, sb)]
    reps = np.full((int(n_boot), len(ga), len(gb)), np.nan)
    for i in range(len(ga)):
        for j in range(len(gb)):
            if mats_b is None and j < i:
                reps[:, i, j] = reps[:, j, i]
                continue
            cross = self_a[i] if (mats_b is None and i == j) else hsic(
                ga[i], gb[j], ua[i], ub[j], sa[i], sb[j])
            den = np.sqrt(np.clip(self_a[i], 0, None) * np.clip(self_b[j], 0, None))
            with np.errstate(all="ignore"):
                reps[:, i, j] = np.where(den > 0, cross / den, np.nan)
    return percentile_interval(reps, level)


def monte_carlo_p(observed: float, null: np.ndarray,
                  alternative: str = "less") -> float:
    """One-sided Monte Carlo p-value of ``observed`` against ``k`` draws of a null statistic.

    ``(1 + #{null <= observed}) / (k + 1)`` for ``alternative="less"`` (``>=`` for
    ``"greater"``): the observed value counted as one of the draws, so the test is exact
    under the null and never gives 0 (Davison & Hinkley 1997, "Bootstrap Methods and their
    Application", sec. 4.2.1; North, Curtis & Sham 2002).
    """
    if alternative not in ("less", "greater"):
        raise ConfigError(f"alternative={alternative!r} is unknown; use 'less' or 'greater'.")
    null = np.asarray(null, dtype=np.float64).ravel()
    null = null[np.isfinite(null)]
    if null.size == 0:
        raise DataError("the null has no finite draws; draw at least one null statistic.")
    hits = np.sum(null <= observed) if alternative == "less" else np.sum(null >= observed)
    return float((1 + hits) / (null.size + 1))
