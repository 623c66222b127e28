"""scikit-learn's lbfgs logistic regression, fitted without its per-iteration overhead.

``LogisticRegression(solver="lbfgs", penalty="l2", fit_intercept=True).fit`` minimises scikit-
learn's ``LinearModelLoss`` with ``scipy.optimize.minimize(method="L-BFGS-B")``. On a probe's
small problems (hundreds of rows, tens of features) most of the time of each of the ~100 loss
evaluations of a fit goes to array-API dispatch (namespace and device look-ups, conversions)
around a few microseconds of arithmetic. :class:`LbfgsLogistic` makes the same call with a loss
function that does the same numpy and Cython operations in the same order on numpy arrays only:
the optimiser sees the same values, takes the same steps and returns the same coefficients,
bit for bit (``tests/unit/test_lbfgs.py`` checks it against ``LogisticRegression``, which also
catches a scikit-learn release that changes its arithmetic).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["LbfgsLogistic", "lbfgs_available"]


@functools.cache
def lbfgs_available() -> bool:
    """Whether this scikit-learn has the private pieces :class:`LbfgsLogistic` calls (its loss
    classes and result check); where not, probes fit ``LogisticRegression`` itself (the same
    coefficients, with its overhead)."""
    try:
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss  # noqa: F401
        from sklearn.linear_model._linear_loss import LinearModelLoss  # noqa: F401
        from sklearn.utils.optimize import _check_optimize_result  # noqa: F401
    except ImportError:
        return False
    return True


class LbfgsLogistic:
    """L2-penalised logistic regression (multinomial for more than two classes), lbfgs.

    Parameters
    ----------
    C : float
        Inverse penalty, as ``LogisticRegression(C=...)``.
    max_iter : int
        lbfgs iteration limit.
    tol : float
        lbfgs gradient tolerance (``gtol``).
    warm_start : bool
        Start the next :meth:`fit` from this fit's coefficients (same classes), as
        ``LogisticRegression(warm_start=True)``.

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``(K,)`` sorted class labels.
    coef_ : numpy.ndarray
        ``(1, d)`` (binary) or ``(K, d)`` weights.
    intercept_ : numpy.ndarray
        ``(1,)`` or ``(K,)`` biases.
    n_iter_ : numpy.ndarray
        ``(1,)`` lbfgs iterations.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4,
                 warm_start: bool = False) -> None:
        self.C, self.max_iter, self.tol, self.warm_start = C, max_iter, tol, warm_start
        self.classes_ = self.coef_ = self.intercept_ = self.n_iter_ = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> LbfgsLogistic:
        """Fit on ``(n, d)`` features ``X`` (float32 or float64) and ``(n,)`` labels ``y``."""
        from scipy import optimize
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
        from sklearn.linear_model._linear_loss import LinearModelLoss
        from sklearn.utils.optimize import _check_optimize_result

        X = np.asarray(X)
        X = np.ascontiguousarray(X, dtype=X.dtype if X.dtype in (np.float32, np.float64)
                                 else np.float64)
        y = np.asarray(y)
        classes = np.unique(y)
        n, d = X.shape
        k = classes.size
        binary = k == 2
        if k < 2:
            raise ValueError(f"logistic regression needs two classes; y holds {k}.")
        warm = None
        if self.warm_start and self.coef_ is not None:
            warm = np.concatenate([self.coef_, self.intercept_[:, None]], axis=1)
        if binary:  # as scikit-learn: HalfBinomialLoss on y in {0, 1}, one logit
            target = np.ones(y.shape, dtype=X.dtype)
            target[y != classes[1]] = 0.0
            loss = LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=True)
            w0 = np.zeros(d + 1, dtype=X.dtype)
            if warm is not None:
                w0[:] = warm[0]
        else:  # class codes as floats, F-ordered (K, d + 1) weights ravelled
            target = np.searchsorted(classes, y).astype(X.dtype)
            loss = LinearModelLoss(base_loss=HalfMultinomialLoss(n_classes=k),
                                   fit_intercept=True)
            w0 = np.zeros((k, d + 1), order="F", dtype=X.dtype)
            if warm is not None:
                w0[:, :] = warm
            w0 = w0.ravel(order="F")
        res = optimize.minimize(
            _loss_gradient, w0, method="L-BFGS-B", jac=True,
            args=(X, target, loss, 1.0 / (self.C * n)),
            options={"maxiter": self.max_iter, "maxls": 50, "gtol": self.tol,
                     "ftol": 64 * np.finfo(float).eps})
        n_iter = _check_optimize_result("lbfgs", res, self.max_iter)
        w = res.x.astype(X.dtype)  # as scikit-learn: coefficients in the features' dtype
        if binary:
            self.coef_, self.intercept_ = w[:-1][None, :], w[-1:]
        else:
            w = np.reshape(w, (k, -1), order="F")
            self.coef_, self.intercept_ = w[:, :-1], w[:, -1]
        self.classes_, self.n_iter_ = classes, np.array([n_iter], dtype=np.int32)
        return self


def _loss_gradient(coef: np.ndarray, X: np.ndarray, y: np.ndarray, loss,
                   l2: float) -> tuple[float, np.ndarray]:
    """``LinearModelLoss.loss_gradient`` (no sample weights, intercept) for numpy arrays: the
    same operations in the same order, without the array-API dispatch."""
    n, d = X.shape
    weights, intercept = loss.weight_intercept(coef)
    w = np.asarray(weights, dtype=X.dtype)
    b = np.asarray(intercept, dtype=X.dtype)
    multi = loss.base_loss.is_multiclass
    raw = X @ w.T + b if multi else X @ w + b
    pointwise, grad_pointwise = loss.base_loss.loss_gradient(
        y_true=y, raw_prediction=raw, sample_weight=None, n_threads=1)
    value = float(np.sum(pointwise) / n) + loss.l2_penalty(weights, l2)
    grad_pointwise /= n
    if multi:
        grad = np.empty((loss.base_loss.n_classes, d + 1), dtype=weights.dtype, order="F")
        grad[:, :d] = grad_pointwise.T @ X + l2 * weights
        grad[:, -1] = np.sum(grad_pointwise, axis=0)
        return value, grad.ravel(order="F")
    grad = np.empty_like(coef, dtype=weights.dtype)
    grad[:d] = X.T @ grad_pointwise + l2 * weights
    grad[-1] = np.sum(grad_pointwise)
    return value, grad
