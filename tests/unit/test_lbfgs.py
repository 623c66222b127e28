"""LbfgsLogistic is scikit-learn's lbfgs LogisticRegression, bit for bit, with less overhead."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probing.probes.lbfgs import LbfgsLogistic


@pytest.mark.parametrize(("n_classes", "dtype"), [(4, np.float64), (2, np.float64),
                                                  (3, np.float32)])
def test_fits_equal_logistic_regression_bit_for_bit_with_warm_starts(n_classes, dtype):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 200) * 3 + 1  # labels that are not codes
    X = (rng.normal(size=(200, 12)) + 0.4 * y[:, None] * (np.arange(12) < 3)).astype(dtype)
    ref = LogisticRegression(C=0.5, max_iter=500, tol=1e-4, warm_start=True)
    ours = LbfgsLogistic(C=0.5, max_iter=500, tol=1e-4, warm_start=True)
    for rows in (np.arange(200), rng.permutation(200)[:160]):  # the second fit starts warm
        ref.fit(X[rows], y[rows])
        ours.fit(X[rows], y[rows])
        np.testing.assert_array_equal(ours.classes_, ref.classes_)
        np.testing.assert_array_equal(ours.coef_, ref.coef_)
        np.testing.assert_array_equal(ours.intercept_, ref.intercept_)
        assert ours.coef_.dtype == ref.coef_.dtype and ours.n_iter_[0] == ref.n_iter_[0]


def test_probes_fall_back_to_logistic_regression_without_the_private_pieces(monkeypatch):
    import sys

    from probing.probes import lbfgs
    from probing.probes.linear import logistic_model

    assert isinstance(logistic_model(1.0, 100, 1e-4), LbfgsLogistic)
    lbfgs.lbfgs_available.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.linear_model._linear_loss", None)
    try:
        assert not lbfgs.lbfgs_available()
        assert isinstance(logistic_model(1.0, 100, 1e-4), LogisticRegression)
    finally:
        lbfgs.lbfgs_available.cache_clear()
