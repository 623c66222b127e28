"""The linear probe estimator and the sufficient statistics behind its ridge path.

A linear probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") is a linear map from a layer's features to a target, trained on frozen features.

Standardisation is part of the probe: features are centred and divided by their population
standard deviation (as ``sklearn.preprocessing.StandardScaler``; constant features keep scale 1),
and the fitted ``coef_`` / ``intercept_`` are mapped back to raw feature units, so
``decision_function(X) = X @ coef_.T + intercept_``.

Ridge (closed form) works from sufficient statistics accumulated in float64 over row chunks:
``n``, ``sum(x - s)``, ``sum((x - s)(x - s)^T)``, ``sum(y)``, ``sum((x - s) y^T)`` with a fixed
shift ``s`` (the data mean) against cancellation. Memory is ``O(d^2 + chunk * d)`` whatever the
number of rows, and statistics of disjoint row sets add, so a cross-validation sweep gets each
training set's statistics as ``total - held-out fold`` without touching the data again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator

# public since scikit-learn 1.6 (the floor in pyproject.toml): the estimator-tags dataclasses
# and validate_data; before 1.6 their only equivalents were private (_more_tags, _validate_data)
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import ConfigError
from .logistic import fit_logistic

__all__ = ["LinearProbe"]

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


# --------------------------------------------------------------------------- estimator
class LinearProbe(BaseEstimator):
    """Linear probe with standardisation inside; a scikit-learn estimator.

    Alain & Bengio (2016). ``task="classification"`` with ``solver="logistic"`` is multinomial
    logistic regression (lbfgs, L2 penalty ``1 / C``); ``solver="ridge"`` is the closed-form
    ridge classifier on one-hot targets (predict = argmax of the ridge scores), which is much
    faster for sweeps. ``task="regression"`` is ridge regression (one or several outputs).

    Parameters
    ----------
    task : {"classification", "regression"}
        What the probe predicts.
    solver : {"logistic", "ridge"}
        Classification solver (regression is always ridge).
    alpha : float
        Ridge penalty on standardised features, ``>= 0``.
    C : float
        Inverse L2 penalty of logistic regression on standardised features, ``> 0``.
    max_iter : int
        lbfgs iteration limit (logistic).
    tol : float
        lbfgs tolerance (logistic).
    n_threads : int or None
        BLAS threads during fit and predict (threadpoolctl); None leaves them alone.

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``(K,)`` class labels (classification).
    coef_ : numpy.ndarray
        ``(K, d)`` logits per class (classification), ``(d,)`` or ``(k, d)`` (regression), in raw
        feature units.
    intercept_ : numpy.ndarray or float
        ``(K,)`` (classification), scalar or ``(k,)`` (regression).
    mean_, scale_ : numpy.ndarray
        ``(d,)`` the standardisation (float64).
    n_features_in_ : int
        ``d``.
    n_iter_ : int
        lbfgs iterations (logistic); 1 for the closed-form ridge solve.
    """

    def __init__(
        self,
        task: Task = "classification",
        solver: Solver = "logistic",
        alpha: float = 1.0,
        C: float = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        n_threads: int | None = 1,
    ) -> None:
        self.task = task
        self.solver = solver
        self.alpha = alpha
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.n_threads = n_threads

    # sklearn plumbing ---------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.task == "regression":
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        return tags

    def _check_params(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ConfigError(
                f"task {self.task!r} is unknown; use 'classification' or 'regression'."
            )
        if self.solver not in ("logistic", "ridge"):
            raise ConfigError(f"solver {self.solver!r} is unknown; use 'logistic' or 'ridge'.")
        if not (np.isscalar(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"alpha={self.alpha!r} is invalid; pass a number >= 0.")
        if not (np.isscalar(self.C) and self.C > 0):
            raise ConfigError(f"C={self.C!r} is invalid; pass a number > 0.")

    # fitting ------------------------------------------------------------------------
    def fit(self, X, y) -> LinearProbe:
        """Fit on ``X`` ``(n, d)`` and ``y`` ``(n,)`` (or ``(n, k)`` for regression)."""
        self._check_params()
        regression = self.task == "regression"
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=regression,
            y_numeric=regression,
        )
        self.n_iter_ = 1  # closed-form solvers: one solve; logistic overwrites it
        with blas_threads(self.n_threads):
            if regression:
                self._fit_regression(X, y)
            else:
                check_classification_targets(y)
                self.classes_, codes = np.unique(y, return_inverse=True)
                if self.solver == "ridge":
                    self._fit_ridge_classifier(X, codes)
                else:
                    self._fit_logistic(X, codes)
        return self

    def _fit_regression(self, X: np.ndarray, y: np.ndarray) -> None:
        Y = np.asarray(y, dtype=np.float64)
        Y2 = Y.reshape(len(Y), -1)
        m = moments(X, Y2)
        coef, intercept = ridge_solve(m, float(self.alpha))
        self.mean_, self.scale_ = standardisation(m)
        if Y.ndim == 1:
            self.coef_, self.intercept_ = coef[:, 0], float(intercept[0])
        else:
            self.coef_, self.intercept_ = coef.T, intercept

    def _fit_ridge_classifier(self, X: np.ndarray, codes: np.ndarray) -> None:
        m = moments(X, one_hot(codes, len(self.classes_)))
        coef, intercept = ridge_solve(m, float(self.alpha))
        self.mean_, self.scale_ = standardisation(m)
        self.coef_, self.intercept_ = coef.T, intercept

    def _fit_logistic(self, X: np.ndarray, codes: np.ndarray) -> None:
        self.mean_, self.scale_ = standardisation(moments(X, full=False))
        n_classes = len(self.classes_)
        if n_classes == 1:
            self.coef_ = np.zeros((1, X.shape[1]))
            self.intercept_ = np.zeros(1)
            return
        Z = (X - self.mean_) / self.scale_
        fit = fit_logistic(Z, codes, n_classes, float(self.C), int(self.max_iter),
                           float(self.tol))
        self.n_iter_ = fit.n_iter
        self.coef_ = fit.coef / self.scale_
        self.intercept_ = fit.intercept - self.coef_ @ self.mean_

    # prediction ---------------------------------------------------------------------
    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        coef = np.atleast_2d(self.coef_)
        with blas_threads(self.n_threads):
            return linear_scores(X, coef.T, np.atleast_1d(self.intercept_))

    def _is_classifier(self) -> bool:
        return self.task == "classification"

    def _has_proba(self) -> bool:
        return self.task == "classification" and self.solver == "logistic"

    @available_if(_is_classifier)
    def decision_function(self, X) -> np.ndarray:
        """Class scores: ``(n, K)`` logits, or ``(n,)`` ``score(classes_[1]) - score(classes_[0])``
        for two classes (positive means ``classes_[1]``, the scikit-learn convention)."""
        scores = self._scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X) -> np.ndarray:
        """Predicted class labels ``(n,)``, or regression outputs ``(n,)`` / ``(n, k)``."""
        scores = self._scores(X)
        if self.task == "regression":
            return scores[:, 0] if np.ndim(self.coef_) == 1 else scores
        return self.classes_[np.argmax(scores, axis=1)]

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """``(n, K)`` class probabilities (logistic solver only), columns as ``classes_``."""
        return softmax(self._scores(X))

    def score(self, X, y) -> float:
        """Accuracy (classification) or R^2 averaged over outputs (regression)."""
        from sklearn.metrics import accuracy_score, r2_score

        if self.task == "regression":
            return float(r2_score(y, self.predict(X)))
        return float(accuracy_score(y, self.predict(X)))
