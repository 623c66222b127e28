"""Grouped cross-validation sweeps for linear probes, sharing work across folds and targets.

One sweep fits the task probe, optional control probe and the majority (or mean) baseline on
every fold of one feature matrix:

- ridge (classification on one-hot targets, or regression): the per-fold float64 statistics
  (:class:`probing.probes.moments.Moments`) are accumulated in one chunked pass; each training
  set is ``total - fold``; task and control targets are extra right-hand sides of the same solve;
- logistic: the per-fold standardisation comes from the same kind of statistics (diagonal only);
  each fold's standardised training matrix is built once and serves every target; every
  (fold, target) problem, of one sweep or of several (:func:`fold_sweeps`: e.g. every kind of
  a layer and its random-init control), is then solved in one batched L-BFGS
  (:func:`probing.probes.logistic.fit_logistic_many`: each problem its own iterates, the
  arithmetic of all in one numpy call), up to :data:`~probing.probes.logistic.BATCH_BYTES` of
  training matrices at a time.

Intervals are Student-t intervals across folds: ``mean +- t_{(1+level)/2, F-1} * sd / sqrt(F)``
with ``sd`` the sample standard deviation of the ``F`` per-fold scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from .logistic import BATCH_BYTES, fit_logistic_many
from .moments import (
    Moments,
    blas_threads,
    data_shift,
    linear_scores,
    moments,
    one_hot,
    ridge_solve,
    standardisation,
)

__all__ = ["SweepJob", "fold_sweep", "fold_sweeps", "group_folds"]


def group_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Assign whole groups to folds, balancing the number of rows per fold.

    Groups are visited largest first, ties in a random order drawn from ``seed``, and each goes
    to the fold with the fewest rows so far (``GroupKFold``'s rule, made seedable). The result
    depends only on the multiset of ``groups`` and ``seed``, not on row order. Given one row
    per group (as :func:`probing.probes.probe_layers` does, so that every kind and layer
    shares the folds) this is a seeded round-robin of the groups.

    Parameters
    ----------
    groups : numpy.ndarray
        ``(n,)`` group label of each row (e.g. ``image_id``).
    n_folds : int
        Number of folds, at least 2 and at most the number of groups.
    seed : int
        Seed of the tie-breaking order.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 fold index in ``0 .. n_folds - 1``.
    """
    uniq, codes, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if n_folds < 2 or n_folds > uniq.size:
        raise ConfigError(
            f"cv={n_folds} folds need 2 <= cv <= number of groups ({uniq.size}); lower cv or "
            "pass more images."
        )
    perm = np.random.default_rng(seed).permutation(uniq.size)
    order = perm[np.argsort(-counts[perm], kind="stable")]
    loads = np.zeros(n_folds)
    fold_of = np.empty(uniq.size, dtype=np.int64)
    for g in order:
        f = int(np.argmin(loads))
        fold_of[g] = f
        loads[f] += counts[g]
    return fold_of[codes.ravel()]


def _accuracy(scores: np.ndarray, codes: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == codes))


def _r2(pred: np.ndarray, Y: np.ndarray) -> float:
    """R^2 averaged uniformly over outputs (``sklearn.metrics.r2_score``'s default)."""
    ss_res = ((Y - pred) ** 2).sum(axis=0)
    ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
    return float(r2.mean())


#: One sweep of :func:`fold_sweeps`: features ``(n, d)``, targets by name, fold of each row.
SweepJob = tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]


def fold_sweep(
    X: np.ndarray,
    targets: dict[str, np.ndarray],
    fold: np.ndarray,
    n_folds: int,
    task: str = "classification",
    solver: str = "logistic",
    alpha: float = 1.0,
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    n_threads: int | None = 1,
) -> dict[str, np.ndarray]:
    """Per-fold held-out scores of a probe for several targets on the same features.

    Parameters
    ----------
    X : numpy.ndarray
        ``(n, d)`` features.
    targets : dict of str to numpy.ndarray
        Name to targets: ``(n,)`` int class codes ``0 .. K-1`` (classification) or ``(n, k)``
        float (regression).
    fold : numpy.ndarray
        ``(n,)`` fold of each row (:func:`group_folds`).
    n_folds : int
        Number of folds.
    task, solver, alpha, C, max_iter, tol, n_threads
        As :class:`probing.probes.layers.LinearProbe`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``(n_folds,)`` accuracy (classification) or R^2 (regression) per target name, plus
        ``"majority"``: the training-fold majority class (or training-fold mean for regression)
        scored on the first target.
    """
    return fold_sweeps([(X, targets, fold)], n_folds, task=task, solver=solver, alpha=alpha,
                       C=C, max_iter=max_iter, tol=tol, n_threads=n_threads)[0]


def fold_sweeps(
    jobs: Sequence[SweepJob],
    n_folds: int,
    task: str = "classification",
    solver: str = "logistic",
    alpha: float = 1.0,
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    n_threads: int | None = 1,
) -> list[dict[str, np.ndarray]]:
    """:func:`fold_sweep` of several feature matrices with the same settings, e.g. every kind
    of one layer and its random-init control: the logistic problems of all of them (every
    job x fold x target) are solved together, one batched L-BFGS.

    Parameters
    ----------
    jobs : sequence of (X, targets, fold)
        As the first three arguments of :func:`fold_sweep`; each job has its own rows.
    n_folds, task, solver, alpha, C, max_iter, tol, n_threads
        As :func:`fold_sweep`.

    Returns
    -------
    list of dict
        :func:`fold_sweep`'s result for each job, in order.
    """
    outs = []
    with blas_threads(n_threads):
        logistic = _LogisticPool(C, max_iter, tol)
        for X, targets, fold in jobs:
            tests = [np.flatnonzero(fold == f) for f in range(n_folds)]
            out = {name: np.empty(n_folds) for name in [*targets, "majority"]}
            if task == "regression" or solver == "ridge":
                _ridge_sweep(X, targets, tests, task, alpha, out)
            else:
                logistic.add(X, targets, fold, tests, out)
            _majority(targets, fold, tests, task, out)
            outs.append(out)
        logistic.solve()
    return outs


def _majority(targets, fold, tests, task, out) -> None:
    """``out["majority"]``: the training-fold majority class (mean) on the first target."""
    y = targets[next(iter(targets))]
    for f, test in enumerate(tests):
        train_mask = fold != f
        if task == "regression":
            mean = y[train_mask].mean(axis=0)
            out["majority"][f] = _r2(np.broadcast_to(mean, y[test].shape), y[test])
        else:
            majority = np.argmax(np.bincount(y[train_mask], minlength=int(y.max()) + 1))
            out["majority"][f] = float(np.mean(y[test] == majority))


def _ridge_sweep(X, targets, tests, task, alpha, out) -> None:
    blocks, columns = [], {}
    start = 0
    for name, y in targets.items():
        Y = y.reshape(len(y), -1).astype(np.float64) if task == "regression" else (
            one_hot(y, int(y.max()) + 1)
        )
        blocks.append(Y)
        columns[name] = slice(start, start + Y.shape[1])
        start += Y.shape[1]
    Y = np.hstack(blocks)
    shift = data_shift(X)
    per_fold = [moments(X, Y, rows=test, shift=shift) for test in tests]
    total: Moments = per_fold[0]
    for m in per_fold[1:]:
        total = total + m
    for f, test in enumerate(tests):
        coef, intercept = ridge_solve(total - per_fold[f], alpha)
        scores = linear_scores(X[test], coef, intercept)
        for name, y in targets.items():
            s = scores[:, columns[name]]
            out[name][f] = _r2(s, Y[test][:, columns[name]]) if task == "regression" else (
                _accuracy(s, y[test])
            )


class _LogisticPool:
    """The (fold, target) logistic problems of several sweeps, solved together.

    Each fold's standardisation comes from per-fold statistics (diagonal only) and its
    standardised training matrix serves every target. Problems wait until :meth:`solve`, or
    until their training matrices exceed :data:`~probing.probes.logistic.BATCH_BYTES`; scores
    are written into each sweep's ``out`` when they are solved.
    """

    def __init__(self, C: float, max_iter: int, tol: float) -> None:
        self.C, self.max_iter, self.tol = C, max_iter, tol
        self.problems: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.scoring: list[tuple] = []
        self.nbytes = 0

    def add(self, X, targets, fold, tests, out) -> None:
        shift = data_shift(X)
        per_fold = [moments(X, rows=test, shift=shift, full=False) for test in tests]
        total: Moments = per_fold[0]
        for m in per_fold[1:]:
            total = total + m
        for f, test in enumerate(tests):
            mean, scale = standardisation(total - per_fold[f])
            train = np.flatnonzero(fold != f)
            Z = (X[train] - mean) / scale  # one standardised matrix serves every target
            for name, y in targets.items():
                classes, codes = np.unique(y[train], return_inverse=True)
                if classes.size < 2:
                    out[name][f] = float(np.mean(y[test] == classes[0]))
                    continue
                self.problems.append((Z, codes, classes.size))
                self.scoring.append((X[test], y[test], classes, mean, scale, out[name], f))
                self.nbytes += Z.nbytes
            if self.nbytes > BATCH_BYTES:
                self.solve()  # bounded memory: large folds are solved as they come

    def solve(self) -> None:
        if not self.problems:
            return
        fits = fit_logistic_many(self.problems, self.C, self.max_iter, self.tol)
        for fit, (X_test, y_test, classes, mean, scale, row, f) in zip(fits, self.scoring):
            coef = fit.coef / scale
            scores = linear_scores(X_test, coef.T, fit.intercept - coef @ mean)
            row[f] = float(np.mean(classes[np.argmax(scores, axis=1)] == y_test))
        self.problems, self.scoring, self.nbytes = [], [], 0
