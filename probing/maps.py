"""Low-dimensional maps of embeddings: PCA, t-SNE and (optionally) UMAP.

Conventions: inputs are ``(n, D)`` arrays; features are centred (PCA) and, for t-SNE/UMAP, first
reduced to at most 50 principal components (a common, documented preprocessing step) with
float64 accumulation. t-SNE is exact (:mod:`probing.tsne`) up to
:data:`probing.tsne.EXACT_MAX_POINTS` points and scikit-learn's Barnes-Hut t-SNE above. All
methods are seeded (exact t-SNE from the PCA start is deterministic).

References: Pearson (1901) / Hotelling (1933) for PCA; van der Maaten & Hinton (2008) for t-SNE;
McInnes, Healy & Melville (2018) for UMAP.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import ConfigError, DataError
from .threads import small_blas
from .tsne import EXACT_MAX_POINTS, exact_tsne

__all__ = ["MAP_METHODS", "TSNE_MAX_ITER", "default_methods", "embedding_map", "embedding_maps",
           "explained_variance"]

MAP_METHODS = ("pca", "tsne", "umap")
MapMethod = Literal["pca", "tsne", "umap"]
#: t-SNE iterations in all: scikit-learn's 250 of early exaggeration (its ``max_iter`` "should be
#: at least 250"), then 250 more. The t-SNE paper (van der Maaten & Hinton 2008) and
#: scikit-learn's default run 1000. Neither has a stop on a converged KL: the stop on a KL that
#: no longer falls waits 300 iterations, and the KL falls by tiny amounts to the end, so the
#: iteration count is the setting. Measured on the demo's five non-constant maps (512 points,
#: perplexity 30, exact t-SNE, :mod:`probing.tsne`): after 500 iterations the KL was 0.3-6.0%
#: above its value after 1000 (0.6978 -> 0.6955 ... 0.3784 -> 0.3569), trustworthiness with 5
#: and 15 neighbours (``sklearn.manifold.trustworthiness``) within 0.0007 of it, the maps look
#: alike, and t-SNE took half the time. Pass ``max_iter=1000`` for the paper's schedule.
TSNE_MAX_ITER = 500


def explained_variance(x: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Explained-variance ratio of each principal component.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, D)`` data.
    n_components : int, optional
        How many ratios to return (all ``min(n, D)`` by default).

    Returns
    -------
    numpy.ndarray
        ``(k,)`` ratios in decreasing order, summing to 1 over all components. All NaN when
        the rows are all equal (no variance, e.g. the CLS token before the first block, or a
        single row): the share of zero variance is undefined, not 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"explained_variance takes an (n, D) array; got shape {x.shape}.")
    if not len(x) or not np.ptp(x, axis=0).any():
        ratios = np.full(min(x.shape), np.nan)
        return ratios[:n_components] if n_components else ratios
    xc = x - x.mean(axis=0)
    with small_blas(_svd_flops(x)):
        s = np.linalg.svd(xc, compute_uv=False)
    var = s**2
    ratios = var / var.sum()
    return ratios[:n_components] if n_components else ratios


def default_methods() -> list[str]:
    """PCA and t-SNE, plus UMAP when ``umap-learn`` is installed."""
    import importlib.util

    return ["pca", "tsne"] + (["umap"] if importlib.util.find_spec("umap") else [])


def _svd_flops(x: np.ndarray) -> float:
    """Rough operation count of a thin SVD of a 2-D array."""
    n, d = x.shape
    return 4.0 * n * d * min(n, d)


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(axis=0)
    with small_blas(_svd_flops(x)):  # one thread: small SVDs only spin on shared cores
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
    out = u[:, :k] * s[:k]
    # fix the sign of each component (largest-magnitude entry positive): deterministic output
    signs = np.sign(out[np.abs(out).argmax(axis=0), np.arange(out.shape[1])])
    return out * np.where(signs == 0, 1, signs)


def embedding_map(
    x: np.ndarray,
    method: MapMethod = "pca",
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = TSNE_MAX_ITER,
) -> np.ndarray:
    """Map ``(n, D)`` embeddings to 2-D (one method; :func:`embedding_maps` for several).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, D)`` embeddings.
    method : {"pca", "tsne", "umap"}
        PCA (first two components, sign-fixed), t-SNE (PCA init; exact up to
        :data:`probing.tsne.EXACT_MAX_POINTS` points, else scikit-learn's Barnes-Hut) or UMAP
        (``umap-learn``, extra ``probing[umap]``).
    seed : int
        Random seed of t-SNE / UMAP.
    perplexity : float
        t-SNE perplexity (clipped to ``(n - 1) / 3``).
    max_iter : int
        t-SNE iterations in all, the 250 of early exaggeration included (:data:`TSNE_MAX_ITER`).

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64 coordinates.
    """
    return embedding_maps(x, [method], seed=seed, perplexity=perplexity,
                          max_iter=max_iter)[method]


def embedding_maps(
    x: np.ndarray,
    methods: list[str] | tuple[str, ...] = ("pca",),
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = TSNE_MAX_ITER,
) -> dict[str, np.ndarray]:
    """Map ``(n, D)`` embeddings to 2-D by several methods, from one SVD of the centred data
    (the PCA map is the first two of the 50 sign-fixed components t-SNE / UMAP start from).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, D)`` embeddings.
    methods : list of {"pca", "tsne", "umap"}
        Methods, as in :func:`embedding_map`.
    seed, perplexity, max_iter
        As in :func:`embedding_map`.

    Returns
    -------
    dict
        ``{method: (n, 2) float64 coordinates}``, in the order of ``methods``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ConfigError(f"embedding map needs an (n >= 3, D) array, got shape {x.shape}.")
    bad = [m for m in methods if m not in MAP_METHODS]
    if bad:
        raise ConfigError(f"embedding map method {bad[0]!r} is unknown; use pca, tsne or umap.")
    if max_iter < 250:
        raise ConfigError(f"t-SNE max_iter={max_iter} is below the 250 iterations of early "
                          "exaggeration; use at least 250.")
    spread = np.ptp(x, axis=0).max() if x.size else 0.0
    if spread <= 1e-12 * max(1.0, float(np.abs(x).max())):
        # all rows identical (e.g. CLS at layer 0): every map is a single point
        return {m: np.zeros((len(x), 2)) for m in methods}
    # one SVD: sign fixing is per column, so the first 2 of the 50 components are _pca(x, 2)
    reduced = _pca(x, min(50, *x.shape))
    return {m: _one_map(reduced, m, seed, perplexity, max_iter) for m in methods}


def _one_map(reduced: np.ndarray, method: str, seed: int, perplexity: float,
             max_iter: int) -> np.ndarray:
    """One 2-D map of the ``(n, k)`` sign-fixed principal components ``reduced``."""
    pcs = np.pad(reduced[:, :2], ((0, 0), (0, 2 - reduced[:, :2].shape[1])))
    if method == "pca":
        return pcs
    if method == "tsne":
        perp = float(min(perplexity, max(1.0, (len(reduced) - 1) / 3)))
        if len(reduced) <= EXACT_MAX_POINTS:  # exact and the faster at this size
            # scikit-learn's PCA initialisation: the first two components, scaled to standard
            # deviation 1e-4 in the first
            init = pcs / float(np.std(pcs[:, 0])) * 1e-4
            return exact_tsne(reduced, perp, max_iter, init=init).embedding
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # one thread: the Barnes-Hut gradient's OpenMP threads spin badly on a loaded machine
        # (measured 6.5x slower with default threads while another process ran)
        with threadpool_limits(1):
            return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                        learning_rate="auto", max_iter=max_iter
                        ).fit_transform(reduced).astype(np.float64)
    try:  # method == "umap"
        import umap
    except ImportError as exc:
        raise ConfigError(
            "method 'umap' needs umap-learn; install it with pip install 'probing[umap]'."
        ) from exc
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(reduced) \
        .astype(np.float64)
