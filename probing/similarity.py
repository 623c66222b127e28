"""Representation similarity: linear CKA (biased, debiased, minibatch), cosine, mutual k-NN.

Methods and sources
-------------------
- Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"):
  with ``Xc``, ``Yc`` the column-centred ``(n, d)`` features,
  ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, equivalently
  ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = Xc Xc^T``, ``L = Yc Yc^T``.
- Debiased CKA: the same ratio with the unbiased HSIC estimator of Song et al. (2012),
  ``HSIC_u = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
  with ``K~``, ``L~`` the Gram matrices with zeroed diagonals. For centred features
  ``K~ 1 = -k`` (``k_i = ||xc_i||^2``), so ``HSIC_u`` needs only ``||Yc^T Xc||_F^2``, ``k`` and
  ``l``: ``[||Yc^T Xc||^2 - k.l + sum(k) sum(l) / ((n-1)(n-2)) - 2 k.l / (n-2)] / (n(n-3))``.
  (The estimator is a U-statistic and invariant to a constant offset, so centring first is
  exact; it improves rounding.)
- Minibatch CKA (Nguyen, Raghu & Kornblith 2021): average ``HSIC_u`` over minibatches, then form
  the ratio.
- Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
  Hypothesis"): rows L2-normalised, neighbours by inner product (cosine), self excluded; the
  score is the mean over items of ``|N_X(i) & N_Y(i)| / k``.

Two computational forms give the same numbers: the *feature* form works with ``(d_x, d_y)``
cross-products accumulated over row chunks (memory ``O(d^2)`` whatever ``n``; never an
``n x n`` matrix); the *Gram* form with ``n x n`` Gram matrices (cheaper when ``n`` is small
relative to ``d``). ``method="auto"`` picks the one with fewer operations. Sums are float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .crossprod import accumulator, add_cross_product
from .errors import ConfigError, DataError, LayoutError
from .selection import LayerSelection
from .stats import t_interval
from .views import FrameViews, ViewKind, align_rows

__all__ = [
    "cls_patch_cosine",
    "layer_mutual_knn",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "minibatch_cka_matrix",
    "mutual_knn",
]

Method = Literal["auto", "feature", "gram"]
#: Rows per chunk of the feature form (float64 temporaries of ``chunk x sum(d)``).
CHUNK_ROWS = 2048
#: Largest cross-product block the feature form holds at once, in bytes.
MAX_BLOCK_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- HSIC pieces
def _as_2d(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ConfigError(f"{name} has shape {X.shape}; pass an (n, d) matrix.")
    return X


def _check_pair(X: np.ndarray, Y: np.ndarray, debiased: bool) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(
            f"X has {X.shape[0]} rows and Y {Y.shape[0]}; pass the same items in the same order."
        )
    if X.shape[0] < (4 if debiased else 2):
        raise ConfigError(
            f"CKA needs at least {4 if debiased else 2} items, got {X.shape[0]}; pass more rows."
        )


def _choose(n: int, widths_a: Sequence[int], widths_b: Sequence[int], pairs: int,
            method: str) -> str:
    """Pick the form with fewer multiply-adds (the Gram traces are memory-bound: weight 8)."""
    if method not in ("auto", "feature", "gram"):
        raise ConfigError(f"method {method!r} is unknown; use 'auto', 'feature' or 'gram'.")
    if method != "auto":
        return method
    da, db = float(sum(widths_a)), float(sum(widths_b))
    if db:  # two sets: one cross product plus each matrix with itself (symmetric products)
        feature = n * (da * db + sum(w * w for w in [*widths_a, *widths_b]) / 2.0)
    else:  # one set with itself: one symmetric product of the stacked matrix
        feature = n * da * da / 2.0
    gram = n * float(n) * (da + db) / 2.0 + 8.0 * n * n * pairs
    return "feature" if feature < gram else "gram"


def _hsic_u(cross: float, k: np.ndarray, m: np.ndarray, n: int) -> float:
    """Unbiased HSIC (Song et al. 2012) from ``||Yc^T Xc||_F^2`` and centred row norms."""
    kl = float(k @ m)
    value = cross - kl + k.sum() * m.sum() / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)
    return value / (n * (n - 3))


def _gram_hsic(Ka: np.ndarray, Kb: np.ndarray, debiased: bool) -> np.ndarray:
    """``(La, Lb)`` HSIC between stacked Gram matrices ``(L, n, n)`` (one BLAS product).

    Biased: ``tr(K L)`` of centred Grams (the ``1/(n-1)^2`` factor cancels in CKA). Debiased:
    Song et al. (2012) on Grams with zeroed diagonals.
    """
    n = Ka.shape[1]
    fa = Ka.reshape(len(Ka), -1)
    fb = fa if Kb is Ka else Kb.reshape(len(Kb), -1)
    trace = fa @ fa.T if fb is fa else fa @ fb.T
    if not debiased:
        return trace
    ra, rb = Ka.sum(axis=2), Kb.sum(axis=2)  # (L, n) row sums, i.e. K~ 1
    sa, sb = ra.sum(axis=1), rb.sum(axis=1)
    value = trace + np.outer(sa, sb) / ((n - 1) * (n - 2)) - 2.0 * (ra @ rb.T) / (n - 2)
    return value / (n * (n - 3))


def _gram_self(K: np.ndarray, debiased: bool) -> np.ndarray:
    """``(L,)`` HSIC of each stacked Gram with itself."""
    return np.array([_gram_hsic(K[i : i + 1], K[i : i + 1], debiased)[0, 0] for i in range(len(K))])


def _cka_from(hxy: float, hxx: float, hyy: float) -> float:
    denom = np.sqrt(hxx * hyy) if hxx > 0 and hyy > 0 else 0.0
    return float(hxy / denom) if denom > 0 else float("nan")


class _Reps:
    """A list of ``(n, d_l)`` matrices over the same ``n`` items, with float64 summaries."""

    def __init__(self, mats: Sequence[np.ndarray]) -> None:
        self.mats = list(mats)
        self.n = self.mats[0].shape[0]
        self.widths = [m.shape[1] for m in self.mats]
        self.means = [_chunked_mean(m) for m in self.mats]
        self._norms: list[np.ndarray] | None = None

    @property
    def norms(self) -> list[np.ndarray]:
        """``(n,)`` squared norms of the centred rows of each matrix (computed on first use)."""
        if self._norms is None:
            self._norms = [self._row_norms(i) for i in range(len(self.mats))]
        return self._norms

    def centred(self, i: int, rows: slice) -> np.ndarray:
        return self.mats[i][rows].astype(np.float64) - self.means[i]

    def _row_norms(self, i: int) -> np.ndarray:
        out = np.empty(self.n)
        for s in _chunks(self.n):
            c = self.centred(i, s)
            out[s] = np.einsum("ij,ij->i", c, c)
        return out

    def stacked(self, idx: Sequence[int], rows: slice) -> np.ndarray:
        """Centred float64 ``(rows, sum d)`` block of the matrices ``idx``, side by side."""
        n_rows = len(range(*rows.indices(self.n)))
        out = np.empty((n_rows, sum(self.widths[i] for i in idx)))
        start = 0
        for i in idx:
            w = self.widths[i]
            np.subtract(self.mats[i][rows], self.means[i], out=out[:, start : start + w])
            start += w
        return out

    def grams(self, zero_diagonal: bool) -> np.ndarray:
        """``(L, n, n)`` centred float64 Gram matrices (diagonals zeroed for the unbiased HSIC)."""
        out = np.empty((len(self.mats), self.n, self.n))
        for i in range(len(self.mats)):
            c = self.centred(i, slice(None))
            np.matmul(c, c.T, out=out[i])
            if zero_diagonal:
                np.fill_diagonal(out[i], 0.0)
        return out


def _chunks(n: int, size: int = CHUNK_ROWS):
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _chunked_mean(X: np.ndarray) -> np.ndarray:
    total = np.zeros(X.shape[1])
    for s in _chunks(X.shape[0]):
        total += X[s].sum(axis=0, dtype=np.float64)
    return total / X.shape[0]


def _panels(widths: Sequence[int], limit: int) -> list[list[int]]:
    panels, current, width = [], [], 0
    for i, w in enumerate(widths):
        if current and width + w > limit:
            panels.append(current)
            current, width = [], 0
        current.append(i)
        width += w
    return panels + [current]


def _upper_square_sum(block: np.ndarray) -> float:
    """``||S||_F^2`` of the symmetric ``S`` whose upper triangle ``block`` holds."""
    return float(2.0 * np.sum(np.triu(block, 1) ** 2) + np.sum(np.diag(block) ** 2))


def _cross_frobenius(a: _Reps, b: _Reps | None) -> np.ndarray:
    """``F[i, j] = ||Xa_i^T Xb_j||_F^2`` of centred matrices (``b`` None: ``a`` with itself).

    Accumulated over row chunks in float64 on stacked panels of layers, so one BLAS call covers
    many layer pairs and memory stays ``O((sum d)^2)``, capped by :data:`MAX_BLOCK_BYTES`. A
    panel with itself is one symmetric ``Z^T Z``, accumulated as its upper triangle by BLAS
    ``syrk`` (:mod:`probing.crossprod`), half the multiply-adds of a general product.
    """
    same = b is None
    b = a if same else b
    limit = max(int(np.sqrt(MAX_BLOCK_BYTES / 8)), max(a.widths), max(b.widths))
    panels_a, panels_b = _panels(a.widths, limit), _panels(b.widths, limit)
    F = np.zeros((len(a.widths), len(b.widths)))
    for ia, pa in enumerate(panels_a):
        for ib, pb in enumerate(panels_b):
            if same and ib < ia:
                continue
            square = same and ia == ib
            acc = (accumulator(sum(a.widths[i] for i in pa)) if square
                   else np.zeros((sum(a.widths[i] for i in pa), sum(b.widths[j] for j in pb))))
            for rows in _chunks(a.n):
                za = a.stacked(pa, rows)
                if square:
                    add_cross_product(acc, za)  # upper triangle only: half the work
                else:
                    acc += za.T @ b.stacked(pb, rows)
            oa = np.cumsum([0] + [a.widths[i] for i in pa])
            ob = np.cumsum([0] + [b.widths[j] for j in pb])
            for x, i in enumerate(pa):
                for y, j in enumerate(pb):
                    if square and y < x:
                        continue  # strict lower triangle: not accumulated, mirrored below
                    block = acc[oa[x] : oa[x + 1], ob[y] : ob[y + 1]]
                    F[i, j] = _upper_square_sum(block) if square and x == y else float(
                        np.sum(block**2))
    if same:
        F = np.triu(F) + np.triu(F, 1).T
    return F


def _hsic_matrix(a: _Reps, b: _Reps | None, debiased: bool, method: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSIC between every matrix of ``a`` and every one of ``b`` (or of ``a``), ``(L_a, L_b)``,
    and of each with itself, ``(L_a,)`` and ``(L_b,)``."""
    same = b is None
    other = a if same else b
    n = a.n
    pairs = len(a.widths) * (len(a.widths) + 1) // 2 if same else len(a.widths) * len(b.widths)
    form = _choose(n, a.widths, [] if same else other.widths, pairs, method)
    if form == "gram":
        Ka = a.grams(debiased)
        Kb = Ka if same else other.grams(debiased)
        hab = _gram_hsic(Ka, Kb, debiased)
        haa = np.diag(hab).copy() if same else _gram_self(Ka, debiased)
        hbb = haa if same else _gram_self(Kb, debiased)
    else:
        F = _cross_frobenius(a, None if same else other)
        self_a = np.diag(F) if same else np.diag(_cross_frobenius(a, None))
        self_b = self_a if same else np.diag(_cross_frobenius(other, None))
        if debiased:
            hab = np.array([[_hsic_u(F[i, j], ka, kb, n) for j, kb in enumerate(other.norms)]
                            for i, ka in enumerate(a.norms)])
            haa = np.array([_hsic_u(s, k, k, n) for s, k in zip(self_a, a.norms)])
            hbb = np.array([_hsic_u(s, k, k, n) for s, k in zip(self_b, other.norms)])
        else:
            hab, haa, hbb = F, self_a, self_b
    return hab, haa, hbb


def _cka_of(hab: np.ndarray, haa: np.ndarray, hbb: np.ndarray) -> np.ndarray:
    return np.array([[_cka_from(hab[i, j], haa[i], hbb[j]) for j in range(len(hbb))]
                     for i in range(len(haa))])


def _cka_matrix(a: _Reps, b: _Reps | None, debiased: bool, method: str) -> np.ndarray:
    """``(L_a, L_b)`` CKA between every matrix of ``a`` and every one of ``b`` (or of ``a``)."""
    return _cka_of(*_hsic_matrix(a, b, debiased, method))


# --------------------------------------------------------------------------- public CKA
def linear_cka(
    X: np.ndarray, Y: np.ndarray, debiased: bool = False, method: Method = "auto"
) -> float:
    """Linear CKA between two representations of the same items (Kornblith et al. 2019).

    Parameters
    ----------
    X, Y : numpy.ndarray
        ``(n, d_x)`` and ``(n, d_y)`` features, rows the same items in the same order.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012) instead of the biased one.
    method : {"auto", "feature", "gram"}
        Computational form (module docstring); ``"auto"`` picks the cheaper from ``n`` and ``d``.

    Returns
    -------
    float
        CKA in ``[0, 1]`` (biased); debiased CKA can fall slightly below 0. NaN when either
        representation is constant.
    """
    X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
    _check_pair(X, Y, debiased)
    return float(_cka_matrix(_Reps([X]), _Reps([Y]), debiased, method)[0, 0])


def minibatch_cka(
    X: np.ndarray, Y: np.ndarray, batch_size: int = 256, seed: int = 0
) -> float:
    """Minibatch linear CKA (Nguyen, Raghu & Kornblith 2021).

    Rows are shuffled with ``seed`` and cut into batches of ``batch_size`` (a last, smaller batch
    is dropped when it has fewer than 4 rows); the unbiased HSIC (Song et al. 2012) of
    ``(X, Y)``, ``(X, X)`` and ``(Y, Y)`` is averaged over batches, then
    ``CKA = mean HSIC_u(X, Y) / sqrt(mean HSIC_u(X, X) mean HSIC_u(Y, Y))``.

    Parameters
    ----------
    X, Y : numpy.ndarray
        ``(n, d_x)``, ``(n, d_y)`` features of the same items.
    batch_size : int
        Rows per minibatch, at least 4.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    float
        Minibatch CKA; with one batch holding every row it equals debiased :func:`linear_cka`.
    """
    X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
    _check_pair(X, Y, debiased=True)
    return float(minibatch_cka_matrix([X], [Y], batch_size=batch_size, seed=seed)[0, 0])


def minibatch_cka_matrix(
    mats_a: Sequence[np.ndarray], mats_b: Sequence[np.ndarray] | None = None,
    batch_size: int = 256, seed: int = 0
) -> np.ndarray:
    """Minibatch linear CKA (Nguyen, Raghu & Kornblith 2021) between every pair of layers.

    The estimator of :func:`minibatch_cka` for every pair at once, on the same batches (one
    shuffle of the rows with ``seed``): per batch, each layer's centred Gram (or, when cheaper,
    its feature-form products) is computed once and the unbiased HSIC of every pair read from
    one product of the stacked Grams, instead of once per pair.

    Parameters
    ----------
    mats_a : sequence of numpy.ndarray
        ``L_a`` matrices ``(n, d_l)``, rows the same ``n`` items in the same order.
    mats_b : sequence of numpy.ndarray, optional
        ``L_b`` matrices over the same items; None compares ``mats_a`` with itself.
    batch_size : int
        Rows per minibatch, at least 4.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    numpy.ndarray
        ``(L_a, L_b)`` float64; entry ``[i, j]`` equals ``minibatch_cka(mats_a[i], mats_b[j])``
        with the same ``batch_size`` and ``seed``.
    """
    same = mats_b is None
    mats_a = [_as_2d(m, f"mats_a[{i}]") for i, m in enumerate(mats_a)]
    mats_b = mats_a if same else [_as_2d(m, f"mats_b[{i}]") for i, m in enumerate(mats_b)]
    if not mats_a or not mats_b:
        raise ConfigError("minibatch_cka_matrix needs at least one matrix on each side.")
    for m in [*mats_a, *mats_b]:
        _check_pair(mats_a[0], m, debiased=True)
    if batch_size < 4:
        raise ConfigError(f"batch_size={batch_size} is too small; pass at least 4.")
    order = np.random.default_rng(seed).permutation(mats_a[0].shape[0])
    sums = [np.zeros((len(mats_a), len(mats_b))), np.zeros(len(mats_a)), np.zeros(len(mats_b))]
    count = 0
    for start in range(0, order.size, batch_size):
        rows = order[start : start + batch_size]
        if rows.size < 4:
            continue
        a = _Reps([m[rows] for m in mats_a])
        b = None if same else _Reps([m[rows] for m in mats_b])
        for total, part in zip(sums, _hsic_matrix(a, b, True, "auto")):
            total += part
        count += 1
    return _cka_of(*(total / count for total in sums))


# --------------------------------------------------------------------------- frames
def _layer_views(views: FrameViews, kind: str, layers: LayerSelection | None, name: str
                 ) -> tuple[list[int], list[np.ndarray], pd.DataFrame]:
    """One frame's labels, per-layer matrices and their common row metadata; every layer must
    hold the same ``(image_id, token)`` rows in the same order."""
    labels = views.select(layers, where=name)
    mats, metas = zip(*(views.get(layer, kind) for layer in labels))
    keys = [meta[["image_id", "token"]] for meta in metas]
    for layer, key in zip(labels[1:], keys[1:]):
        if not key.equals(keys[0]):
            raise DataError(
                f"layer {layer} of {name} holds other images (or tokens) than layer "
                f"{labels[0]}; pass a frame with the same rows at every layer."
            )
    return list(labels), list(mats), metas[0]


def _aligned_views(frame_a, frame_b, kind, layers, layers_b):
    la, mats_a, meta_a = _layer_views(FrameViews(frame_a), kind, layers, "frame_a")
    if frame_b is None:
        return la, la, mats_a, None
    lb, mats_b, meta_b = _layer_views(FrameViews(frame_b), kind,
                                      layers if layers_b is None else layers_b, "frame_b")
    here, there = align_rows(meta_a, meta_b)
    if here.size < 4:
        raise DataError(
            "the two frames share fewer than 4 (image_id, token) rows; extract both models on "
            "the same images."
        )
    return la, lb, [m[here] for m in mats_a], [m[there] for m in mats_b]


def layer_similarity(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame | None = None,
    kind: ViewKind = "cls",
    layers: LayerSelection | None = None,
    layers_b: LayerSelection | None = None,
    debiased: bool = False,
    method: Method = "auto",
) -> pd.DataFrame:
    """Linear CKA between every pair of layers of one model, or of two models.

    Parameters
    ----------
    frame_a : pandas.DataFrame
        Token frame of the first model.
    frame_b : pandas.DataFrame, optional
        Token frame of the second model; None compares ``frame_a``'s layers with each other.
        Rows are aligned on ``(image_id, token)``; only shared rows are used.
    kind : {"cls", "pooled", "patch"}
        Which vectors represent an item (see :func:`probing.probes.layers.probe_layers`).
    layers, layers_b : layer selection or LayerLabels, optional
        Layers of each frame, in the forms every ``layers=`` takes (``"all"`` = every block
        the frame holds, block numbers, ``"embed"``, ``"norm"``, lists of these, or
        :class:`~probing.selection.LayerLabels`; a frame does not record its model's depth, so
        negative ints raise ConfigError: pass ``resolve_layers(sel, model.depth)``); every
        layer of the frame when None; ``layers_b`` defaults to ``layers``. Each frame must hold
        the same rows at every chosen layer (a :class:`~probing.errors.DataError` otherwise).
    debiased : bool
        Debiased CKA (unbiased HSIC, Song et al. 2012).
    method : {"auto", "feature", "gram"}
        Computational form; ``"auto"`` picks the cheaper from ``n`` and the widths.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_a``, ``layer_b``, ``metric`` (``"cka"``), ``value`` (the CKA), ``n``
        (items), ``debiased``; one row per pair.
    """
    la, lb, mats_a, mats_b = _aligned_views(frame_a, frame_b, kind, layers, layers_b)
    reps_a = _Reps(mats_a)
    _check_pair(mats_a[0], mats_a[0], debiased)
    cka = _cka_matrix(reps_a, None if mats_b is None else _Reps(mats_b), debiased, method)
    ia, ib = np.meshgrid(np.arange(len(la)), np.arange(len(lb)), indexing="ij")
    return pd.DataFrame({
        "layer_a": np.asarray(la)[ia.ravel()],
        "layer_b": np.asarray(lb)[ib.ravel()],
        "metric": "cka",
        "value": cka.ravel(),
        "n": reps_a.n,
        "debiased": debiased,
    })


def cls_patch_cosine(
    frame: pd.DataFrame, layers: LayerSelection | None = None, level: float = 0.95
) -> pd.DataFrame:
    """Cosine similarity of the CLS token to the patch tokens, per layer.

    For each image, the mean over its patches of ``cos(cls, patch)``; then the mean over images
    with a Student-t interval across images.

    Parameters
    ----------
    frame : pandas.DataFrame
        Token frame with ``cls`` and ``patch`` rows.
    layers : layer selection or LayerLabels, optional
        Layers (every layer of the frame when None), as for :func:`layer_similarity`.
    level : float
        Confidence level.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``metric`` (``"cls_patch_cosine"``), ``value`` (the mean over
        images), ``ci_low``, ``ci_high``, ``n`` (images).
    """
    views = FrameViews(frame)
    records = []
    for layer in views.select(layers):
        cls, cmeta = views.get(layer, "cls")
        patch, pmeta = views.get(layer, "patch")
        img = pd.Index(cmeta["image_id"])
        where = img.get_indexer(pmeta["image_id"])
        if (where < 0).any() or img.has_duplicates:
            raise LayoutError(f"layer {layer} needs exactly one cls row per image with patches.")
        c = cls.astype(np.float64)
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)
        cos = np.empty(len(patch))
        for s in _chunks(len(patch), 65536):
            p = patch[s].astype(np.float64)
            num = np.einsum("ij,ij->i", p, c[where[s]])
            cos[s] = num / np.maximum(np.linalg.norm(p, axis=1), 1e-300)
        per_image = np.bincount(where, weights=cos) / np.bincount(where)
        mean, low, high = t_interval(per_image, level)
        records.append({"layer": layer, "metric": "cls_patch_cosine", "value": mean,
                        "ci_low": low, "ci_high": high, "n": len(per_image)})
    return pd.DataFrame.from_records(
        records, columns=["layer", "metric", "value", "ci_low", "ci_high", "n"]
    )


# --------------------------------------------------------------------------- mutual k-NN
def _knn(X: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` indices of each row's ``k`` nearest rows by cosine, self excluded."""
    Z = np.asarray(X, dtype=np.float64)
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
    out = np.empty((Z.shape[0], k), dtype=np.int64)
    for s in _chunks(Z.shape[0], 2048):
        sim = Z[s] @ Z.T
        sim[np.arange(sim.shape[0]), np.arange(s.start, s.stop)] = -np.inf
        out[s] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return out


def _knn_or_none(X: np.ndarray, k: int) -> np.ndarray | None:
    """:func:`_knn`, or None when every row is the same (neighbours undefined)."""
    X = np.asarray(X)
    return None if bool(np.all(X == X[:1])) else _knn(X, k)


def _overlap(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    k = a.shape[1]
    both = np.sort(np.hstack([a, b]), axis=1)
    return float(np.mean((both[:, 1:] == both[:, :-1]).sum(axis=1) / k))


def _check_k(k: int, n: int) -> None:
    if not 1 <= k < n:
        raise ConfigError(f"k={k} must satisfy 1 <= k < n ({n} items); lower k.")


def mutual_knn(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    Parameters
    ----------
    X, Y : numpy.ndarray
        ``(n, d_x)``, ``(n, d_y)`` features of the same items in the same order.
    k : int
        Neighbours per item (cosine similarity, self excluded).

    Returns
    -------
    float
        Mean fraction of shared neighbours, in ``[0, 1]``; about ``k / (n - 1)`` by chance.
        NaN when every row of ``X`` (or of ``Y``) is the same: neighbours are then undefined.
    """
    X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
    _check_pair(X, Y, debiased=False)
    _check_k(k, X.shape[0])
    return _overlap(_knn_or_none(X, k), _knn_or_none(Y, k))


def layer_mutual_knn(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame | None = None,
    kind: ViewKind = "cls",
    k: int = 10,
    layers: LayerSelection | None = None,
    layers_b: LayerSelection | None = None,
) -> pd.DataFrame:
    """Mutual k-NN alignment (Huh et al. 2024) between every pair of layers.

    Parameters and alignment as :func:`layer_similarity`; neighbours are computed once per layer.
    Pairs involving a layer whose rows are all the same (e.g. the CLS token at layer 0, before
    any block mixes in the image) get NaN.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_a``, ``layer_b``, ``metric`` (``"mutual_knn"``), ``value`` (the
        overlap), ``n``, ``k``.
    """
    la, lb, mats_a, mats_b = _aligned_views(frame_a, frame_b, kind, layers, layers_b)
    _check_k(k, mats_a[0].shape[0])
    nn_a = [_knn_or_none(m, k) for m in mats_a]
    nn_b = nn_a if mats_b is None else [_knn_or_none(m, k) for m in mats_b]
    n = mats_a[0].shape[0]
    rows = [
        {"layer_a": x, "layer_b": y, "metric": "mutual_knn", "value": _overlap(na, nb), "n": n,
         "k": k}
        for x, na in zip(la, nn_a)
        for y, nb in zip(lb, nn_b)
    ]
    return pd.DataFrame.from_records(
        rows, columns=["layer_a", "layer_b", "metric", "value", "n", "k"]
    )
