"""Minimum description length of labels given features: the online code.

Voita & Titov (2020), "Information-Theoretic Probing with Minimum Description Length". The data
are put in a random order and cut at ``t_1 < t_2 < ... < t_S = n`` (by default 0.1, 0.2, 0.4,
0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and 100 percent of the rows, the paper's schedule). The first
``t_1`` labels are sent with the uniform code; block ``i`` (rows ``t_i .. t_{i+1} - 1``) is sent
with the cross-entropy, in bits, of a probe trained on rows ``0 .. t_i - 1``::

    codelength = t_1 * log2(K) + sum_i sum_{j in block i} -log2 p_i(y_j | x_j)
    compression = n * log2(K) / codelength

Departure from the paper, stated: the paper's probe has a softmax over all ``K`` classes, so a
class absent from a training block still gets some probability. A logistic regression fitted on
the block only knows the classes it saw, so its probabilities are mixed with the uniform code,
``p = (t_i * p_probe + 1 / K) / (t_i + 1)``, which keeps every codelength finite and vanishes as
the block grows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["MDL_FRACTIONS", "online_codelength"]

#: Block boundaries as fractions of the data (Voita & Titov 2020, section 3.2).
MDL_FRACTIONS: tuple[float, ...] = (
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0,
)


def online_codelength(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
    fractions: Sequence[float] = MDL_FRACTIONS,
    C: float = 1.0,
    max_iter: int = 1000,
    n_threads: int | None = 1,
) -> dict[str, float]:
    """Online codelength of labels ``y`` given features ``X`` (Voita & Titov 2020).

    Parameters
    ----------
    X : numpy.ndarray
        ``(n, d)`` features.
    y : numpy.ndarray
        ``(n,)`` class labels.
    groups : numpy.ndarray, optional
        ``(n,)`` group of each row (e.g. image id): groups are ordered at random and their rows
        kept together, so one image's tokens are not split between training and coding blocks.
    seed : int
        Seed of the random order.
    fractions : sequence of float
        Increasing block ends as fractions of ``n``, the last one 1.
    C, max_iter, n_threads
        Logistic probe settings (:class:`LinearProbe`, ``solver="logistic"``).

    Returns
    -------
    dict
        ``codelength_bits`` (online code), ``uniform_bits`` (``n log2 K``), ``compression``
        (their ratio), ``n`` and ``n_classes``.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.size == 0 or np.any(np.diff(fractions) <= 0) or fractions[-1] != 1.0:
        raise ConfigError("fractions must increase strictly and end at 1.0; pass e.g. (0.1, 1.0).")
    n = len(y)
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    K = classes.size
    if K < 2:
        raise ConfigError("MDL needs at least two classes in the target; pick another target.")
    order = _random_order(n, groups, seed)
    ends = np.unique(np.clip(np.ceil(fractions * n).astype(np.int64), 1, n))
    if groups is not None:
        ends = _snap_to_groups(ends, np.asarray(groups)[order])
    uniform = n * np.log2(K)
    bits = ends[0] * np.log2(K)
    from .linear import LinearProbe  # scikit-learn is imported only when MDL is asked for

    probe = LinearProbe(solver="logistic", C=C, max_iter=max_iter, n_threads=n_threads)
    for start, stop in zip(ends[:-1], ends[1:]):
        train, block = order[:start], order[start:stop]
        probe.fit(X[train], codes[train])
        proba = np.zeros((block.size, K))
        proba[:, probe.classes_] = probe.predict_proba(X[block])
        proba = (start * proba + 1.0 / K) / (start + 1.0)
        bits += float(-np.log2(proba[np.arange(block.size), codes[block]]).sum())
    return {
        "codelength_bits": float(bits),
        "uniform_bits": float(uniform),
        "compression": float(uniform / bits),
        "n": int(n),
        "n_classes": int(K),
    }


def _random_order(n: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(n)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    rank = rng.permutation(int(codes.max()) + 1)[codes.ravel()]
    return np.argsort(rank, kind="stable")


def _snap_to_groups(ends: np.ndarray, ordered_groups: np.ndarray) -> np.ndarray:
    """Move each block end up to the next group boundary of ``ordered_groups`` (the groups of
    the rows in coding order), so that no group straddles a training/coding split."""
    change = np.flatnonzero(ordered_groups[1:] != ordered_groups[:-1]) + 1
    bounds = np.append(change, ordered_groups.size)
    return np.unique(bounds[np.searchsorted(bounds, ends)])

