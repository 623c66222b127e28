"""CKA against an independent Gram-matrix implementation written here from the papers.

Kornblith et al. (2019): CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) =
tr(K H L H) / (n - 1)^2 with H = I - 11^T / n. Debiased: the unbiased HSIC of Song et al. (2012)
on the raw (uncentred) Gram matrices, written term by term.
"""

from __future__ import annotations

import numpy as np
import pytest

from probing.similarity import linear_cka, minibatch_cka


def _hsic_biased(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _hsic_unbiased(K, L):
    n = K.shape[0]
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def _cka_reference(X, Y, hsic):
    K, L = X @ X.T, Y @ Y.T  # uncentred: the HSIC estimators centre (or need no centring)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(30, 8, 5), (25, 40, 60)])  # n > d and n < d
def test_linear_cka_equals_gram_reference(seed, shape):
    n, dx, dy = shape
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + rng.normal(size=dx)
    Y = np.tanh(X[:, : min(dx, dy)] @ rng.normal(size=(min(dx, dy), dy))) + rng.normal(size=(n, dy))
    for method in ("auto", "feature", "gram"):
        assert linear_cka(X, Y, method=method) == pytest.approx(
            _cka_reference(X, Y, _hsic_biased), abs=1e-10
        )
        assert linear_cka(X, Y, debiased=True, method=method) == pytest.approx(
            _cka_reference(X, Y, _hsic_unbiased), abs=1e-10
        )


def test_minibatch_cka_equals_mean_unbiased_hsic_ratio():
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 9))
    Y[:, :6] += X
    order = np.random.default_rng(11).permutation(40)
    sums = np.zeros(3)
    for start in range(0, 40, 10):
        rows = order[start : start + 10]
        K, L = X[rows] @ X[rows].T, Y[rows] @ Y[rows].T
        sums += (_hsic_unbiased(K, L), _hsic_unbiased(K, K), _hsic_unbiased(L, L))
    expected = sums[0] / np.sqrt(sums[1] * sums[2])
    assert minibatch_cka(X, Y, batch_size=10, seed=11) == pytest.approx(expected, abs=1e-10)
