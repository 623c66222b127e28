"""Probe sweeps and layer CKA against plain baselines, timed in the same run.

(a) A 12-layer x 5-fold probe sweep on real features (CLS of every block of a random-init
    ``vit_small`` over ``n`` ``shapes`` images, :func:`benchmarks._common.vit_cls_features`)
    with :func:`probing.probes.cv.fold_sweep`, against ``L * 5`` fits of plain
    ``sklearn.linear_model.LogisticRegression`` on standardised features (default threads).
    The sklearn fits are slow, so the 5 folds of the first, middle and last layer are timed
    and their mean multiplied by ``L`` (said in the figure name); the logistic path is
    compared on the same layers.
(b) Layer x layer linear CKA (synthetic ``n x 768`` features: 10 Gaussian classes whose
    separation grows with depth) with :func:`probing.similarity.layer_similarity`'s engine
    against a Gram-matrix implementation that caches one centred float64 Gram per layer, at large
    ``n`` (feature form chosen) and small ``n`` (auto must pick the cheaper form).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks._common import Row, cached_gram_cka, paired_times, print_rows, vit_cls_features


def _features(n: int, d: int, layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    centres = rng.normal(size=(10, d))
    mats = []
    for layer in range(layers):
        sep = 0.05 + 0.1 * layer
        mats.append((rng.normal(size=(n, d)) + sep * centres[y]).astype(np.float32))
    return mats, y


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _probe_rows(quick: bool) -> list[Row]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from probing.probes.cv import fold_sweep, group_folds

    n, folds = (1000, 5) if quick else (10000, 5)
    mats, y = vit_cls_features(n)
    layers, d = len(mats), mats[0].shape[1]
    fold = group_folds(np.arange(n), folds, seed=0)

    def sklearn_layer(X):
        for f in range(folds):
            train = fold != f
            Z = StandardScaler().fit_transform(X[train])
            LogisticRegression(max_iter=1000).fit(Z, y[train])

    # sklearn's time depends on how separable a layer is (lbfgs iterations), so the baseline
    # is timed on the first, middle and last layer and their mean taken for every layer
    sampled = sorted({0, layers // 2, layers - 1})
    t_sk_layer = sum(_timed(lambda X=mats[k]: sklearn_layer(X)) for k in sampled) / len(sampled)
    t_sklearn = t_sk_layer * layers
    t_logistic = sum(_timed(lambda X=mats[k]: fold_sweep(X, {"task": y}, fold, folds,
                                                         solver="logistic"))
                     for k in sampled) / len(sampled)
    t_ridge = _timed(
        lambda: [fold_sweep(X, {"task": y}, fold, folds, solver="ridge") for X in mats]
    )
    size = f"{layers} layers x {folds} folds, n={n}, d={d}, vit_small CLS on shapes"
    timed = f"sklearn timed on layers {sampled}, mean x {layers}"
    return [
        Row(f"(a) ridge sweep vs sklearn LogReg ({size}; {timed})",
            t_ridge, t_sklearn, "s", ">= 10", ratio=t_sklearn / t_ridge),
        Row(f"(a) logistic sweep vs sklearn LogReg (per layer, {folds} folds, n={n}, d={d}; "
            f"mean over layers {sampled})",
            t_logistic, t_sk_layer, "s", ">= 1", ratio=t_sk_layer / t_logistic),
    ]


def _cka_rows(quick: bool) -> list[Row]:
    from probing.similarity import _cka_matrix, _Reps

    layers, d = (4, 128) if quick else (12, 768)
    rows = []
    for n, target in zip((1500, 400) if quick else (10000, 2000), (">= 2.5", ">= 1")):
        mats, _ = _features(n, d, layers, seed=1)
        base = [None]
        ours = [None]
        t_gram, t_ours = paired_times(
            lambda: base.__setitem__(0, cached_gram_cka(mats)),  # noqa: B023
            lambda: ours.__setitem__(0, _cka_matrix(_Reps(mats), None, False, "auto")),  # noqa: B023
            repeat=1 if n > 5000 else 3,
        )
        err = float(np.max(np.abs(base[0] - ours[0])))
        rows.append(Row(
            f"(b) CKA {layers}x{layers} layers, n={n}, d={d}, auto form vs cached Gram "
            f"(max |diff| {err:.1e})",
            t_ours, t_gram, "s", target, ratio=t_gram / t_ours,
        ))
    return rows


def run(quick: bool = False) -> list[Row]:
    """Benchmark rows; ``ratio`` is baseline time / our time (higher is better)."""
    return _probe_rows(quick) + _cka_rows(quick)


if __name__ == "__main__":
    print_rows(run())
