"""The linear probe estimator (scikit-learn API).

A linear probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") is a linear map from a layer's features to a target, trained on frozen features.

Standardisation is part of the probe: features are centred and divided by their population
standard deviation (as ``sklearn.preprocessing.StandardScaler``; constant features keep scale 1),
and the fitted ``coef_`` / ``intercept_`` are mapped back to raw feature units, so
``decision_function(X) = X @ coef_.T + intercept_``.

Ridge is solved in closed form from sufficient statistics (:mod:`.moments`), logistic
regression by :func:`probing.probes.logistic.fit_logistic`.
"""

from __future__ import annotations

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
from .moments import (
    Solver,
    Task,
    blas_threads,
    linear_scores,
    moments,
    one_hot,
    ridge_solve,
    softmax,
    standardisation,
)

__all__ = ["LinearProbe"]


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
