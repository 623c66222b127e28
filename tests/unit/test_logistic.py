"""The probes' logistic regression: scikit-learn's objective, its optimum and its stopping rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from probing.probes import fold_sweep, fold_sweeps
from probing.probes.logistic import fit_logistic, fit_logistic_many
from probing.probes.moments import moments, standardisation


def _features(n=300, d=24, k=4, seed=0, sep=1.5):
    """Standardised features with class signal in a few directions, correlated noise and
    unequal scales (before standardisation), as layer features have."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ mix * np.logspace(-1, 1, d)
    X[:, :3] += sep * rng.normal(size=(k, 3))[y]
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    return Z, np.unique(y, return_inverse=True)[1].ravel()


def _objective(Z, codes, coef, intercept, C=1.0):
    """scikit-learn's lbfgs objective written out directly: mean cross-entropy of the softmax
    plus ``||W||^2 / (2 C n)`` (for two classes, of the single logit ``w = W_1 - W_0``)."""
    n = len(Z)
    z = Z @ coef.T + intercept
    if coef.shape[0] == 2:
        m = z[:, 1] - z[:, 0]
        w = coef[1] - coef[0]
        return np.mean(np.logaddexp(0, m) - (codes == 1) * m) + w @ w / (2 * C * n)
    top = z.max(axis=1)
    lse = np.log(np.exp(z - top[:, None]).sum(axis=1)) + top
    return np.mean(lse - z[np.arange(n), codes]) + (coef**2).sum() / (2 * C * n)


def _gradient(Z, codes, coef, intercept, C=1.0):
    """Gradient of :func:`_objective` in scikit-learn's variables (``w`` alone for K = 2)."""
    n, k = len(Z), coef.shape[0]
    z = Z @ coef.T + intercept
    if k == 2:
        m = z[:, 1] - z[:, 0]
        r = 1 / (1 + np.exp(-m)) - (codes == 1)
        w = coef[1] - coef[0]
        return np.concatenate([Z.T @ r / n + w / (C * n), [r.mean()]])
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(n), codes] -= 1
    return np.hstack([p.T @ Z / n + coef / (C * n), p.mean(axis=0)[:, None]]).ravel()


def _sklearn(Z, codes, tol, C=1.0):
    model = LogisticRegression(C=C, tol=tol, max_iter=10_000).fit(Z, codes)
    if model.coef_.shape[0] == 1:
        w, b = model.coef_[0], model.intercept_[0]
        return np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    return model.coef_, model.intercept_


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("d, n", [(24, 300), (80, 40)])  # d > n: the row-space fit
def test_the_optimum_is_sklearns(k, d, n):
    Z, codes = _features(n=n, d=d, k=k)
    ref_coef, ref_bias = _sklearn(Z, codes, tol=1e-10)
    fit = fit_logistic(Z, codes, k, tol=1e-10)
    f_ref = _objective(Z, codes, ref_coef, ref_bias)
    assert _objective(Z, codes, fit.coef, fit.intercept) <= f_ref * (1 + 1e-9)
    np.testing.assert_allclose(fit.coef, ref_coef, atol=1e-5)
    np.testing.assert_allclose(fit.intercept, ref_bias, atol=1e-5)
    assert fit.converged and fit.n_iter > 0


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("d, n", [(24, 300), (80, 40)])
def test_default_tolerance_meets_sklearns_stopping_rule(k, d, n):
    Z, codes = _features(n=n, d=d, k=k, seed=1)
    fit = fit_logistic(Z, codes, k)  # tol = 1e-4 on the largest gradient entry
    ref_coef, ref_bias = _sklearn(Z, codes, tol=1e-4)
    for coef, bias in ((fit.coef, fit.intercept), (ref_coef, ref_bias)):  # the same rule
        assert np.abs(_gradient(Z, codes, coef, bias)).max() <= 1e-4
    f_star = _objective(Z, codes, *_sklearn(Z, codes, tol=1e-10))
    assert 0 <= _objective(Z, codes, fit.coef, fit.intercept) - f_star < 1e-4
    ours = np.argmax(Z @ fit.coef.T + fit.intercept, 1)
    assert (ours == np.argmax(Z @ ref_coef.T + ref_bias, 1)).mean() >= 0.99


def test_binary_probabilities_are_sklearns():
    Z, codes = _features(k=2, sep=0.5)
    fit = fit_logistic(Z, codes, 2, C=0.3, tol=1e-10)
    model = LogisticRegression(C=0.3, tol=1e-10, max_iter=10_000).fit(Z, codes)
    logits = Z @ fit.coef.T + fit.intercept
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    np.testing.assert_allclose(proba, model.predict_proba(Z), atol=1e-7)
    np.testing.assert_allclose(fit.coef.sum(axis=0), 0, atol=1e-12)  # (-w/2, w/2)


def test_problems_solved_together_equal_problems_solved_alone():
    # the first three share a padded shape (one batch); the others have shapes of their own
    problems = [(*_features(n=n, d=d, k=k, seed=s), k) for n, d, k, s in (
        (300, 24, 4, 0), (290, 24, 4, 1), (295, 24, 4, 2), (250, 24, 2, 3), (40, 80, 3, 4))]
    together = fit_logistic_many(problems)
    for (Z, codes, k), fit in zip(problems, together):
        alone = fit_logistic(Z, codes, k)
        assert fit.n_iter == alone.n_iter
        np.testing.assert_array_equal(fit.coef, alone.coef)  # to the last bit
        np.testing.assert_array_equal(fit.intercept, alone.intercept)


def test_stopping_short_warns_and_says_so():
    Z, codes = _features()
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        fit = fit_logistic(Z, codes, 4, max_iter=3)
    assert fit.n_iter == 3 and not fit.converged


def test_sweep_with_a_class_absent_from_a_training_fold_matches_sklearn():
    # class 3 lives in fold 0 only: fold 0's probe is trained on 3 classes, the others on 4
    Z, codes = _features(n=200, d=10, k=4, seed=4, sep=3.0)
    fold = np.arange(200) % 5
    codes = codes % 3
    codes[fold == 0] = np.where(np.arange(40) % 4 == 0, 3, codes[fold == 0])
    got = fold_sweep(Z, {"task": codes}, fold, 5)["task"]
    for f in range(5):
        train = fold != f
        mean, scale = standardisation(moments(Z[train], full=False))
        model = LogisticRegression(max_iter=10_000, tol=1e-10).fit(
            (Z[train] - mean) / scale, codes[train])
        want = model.score((Z[fold == f] - mean) / scale, codes[fold == f])
        assert got[f] == pytest.approx(want)


@pytest.mark.parametrize("solver", ["logistic", "ridge"])
def test_sweeps_together_score_as_sweeps_alone(solver):
    # probe_layers solves every kind of a layer and its random-init control in one call
    rng = np.random.default_rng(5)
    jobs = []
    for n, k in ((150, 3), (120, 4), (90, 2)):
        Z, codes = _features(n=n, d=12, k=k, seed=n)
        fold = rng.permutation(np.arange(n) % 5)
        jobs.append((Z.astype(np.float32), {"task": codes, "control": rng.permutation(codes)},
                     fold))
    together = fold_sweeps(jobs, 5, solver=solver)
    for (X, targets, fold), got in zip(jobs, together):
        alone = fold_sweep(X, targets, fold, 5, solver=solver)
        assert got.keys() == alone.keys()
        for name in alone:
            np.testing.assert_array_equal(got[name], alone[name])
