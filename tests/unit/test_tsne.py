"""Exact t-SNE: the affinities, the gradient and the optimised map, each checked another way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from probing.errors import ConfigError
from probing.maps import embedding_map
from probing.tsne import exact_tsne, joint_probabilities, kl_gradient


def _clusters(n: int = 90, k: int = 3, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + np.repeat(rng.normal(size=(k, d)) * 3, n // k, axis=0)


def _kl(p: np.ndarray, y: np.ndarray) -> float:
    """KL(P || Q) from pairwise differences (no inner-product distances)."""
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    num = 1.0 / (1.0 + d)
    np.fill_diagonal(num, 0.0)
    q = num / num.sum()
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


def test_affinities_match_a_root_found_bandwidth_per_point():
    x = _clusters(42, d=6)
    perplexity = 7.0
    p = joint_probabilities(x, perplexity)
    np.testing.assert_allclose(p, p.T, rtol=0, atol=0)
    assert abs(p.sum() - 1) < 1e-12 and np.all(np.diag(p) == 0)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    cond = np.zeros_like(d)
    for i in range(len(x)):  # each row's bandwidth by Brent's method on the perplexity equation
        others = np.delete(d[i], i) - np.delete(d[i], i).min()

        def gap(log_beta, others=others):
            w = np.exp(-np.exp(log_beta) * others)
            q = w / w.sum()
            return -(q[q > 0] * np.log(q[q > 0])).sum() - np.log(perplexity)

        w = np.exp(-np.exp(brentq(gap, -30, 30, xtol=1e-12)) * others)
        cond[i, np.arange(len(x)) != i] = w / w.sum()
    ref = (cond + cond.T) / (2 * len(x))
    np.testing.assert_allclose(p, ref, rtol=1e-3, atol=1e-9)


def test_gradient_is_the_derivative_of_the_kl():
    rng = np.random.default_rng(3)
    x = _clusters(30, d=5)
    p = joint_probabilities(x, 5.0)
    y = rng.normal(size=(30, 2)) * 2
    y -= y.mean(axis=0)
    grad, num, z = kl_gradient(torch.from_numpy(y), torch.from_numpy(p))
    h = 1e-6
    numeric = np.zeros_like(y)
    for i in range(30):
        for c in range(2):
            e = np.zeros_like(y)
            e[i, c] = h
            numeric[i, c] = (_kl(p, y + e) - _kl(p, y - e)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-5, atol=1e-9)
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    assert abs(z - (1 / (1 + d)).sum() + len(y)) < 1e-9 and np.all(np.diag(num.numpy()) == 0)
    # float32 with a reused scratch array: the same gradient to float32 rounding
    work = torch.empty((2, 30, 30))
    g32 = kl_gradient(torch.from_numpy(y).float(), torch.from_numpy(p).float(), work)[0]
    np.testing.assert_allclose(g32.numpy(), grad.numpy(), rtol=0,
                               atol=1e-5 * np.abs(grad.numpy()).max())


def test_the_map_is_as_good_as_scikit_learns_exact_tsne():
    """The same definitions and schedule as scikit-learn's method="exact"; the optimisation is
    chaotic (a 1e-6 change of the start moves scikit-learn's own map by a tenth of its
    extent), so the maps are compared by their cost and neighbourhoods, not coordinates."""
    from sklearn.manifold import TSNE, trustworthiness

    for seed in range(3):
        x = _clusters(120, k=4, seed=seed)
        xc = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        init = u[:, :2] * s[:2] / np.std(u[:, 0] * s[0]) * 1e-4
        ours = exact_tsne(x, 20.0, 500, init=init)
        ref = TSNE(2, perplexity=20.0, init=init.astype(np.float32), learning_rate="auto",
                   max_iter=500, method="exact").fit_transform(x)
        p = joint_probabilities(x, 20.0)
        assert ours.n_iter == 500
        assert abs(ours.kl_divergence - _kl(p, ours.embedding)) < 1e-4
        assert _kl(p, ours.embedding) < 1.05 * _kl(p, ref)
        assert trustworthiness(x, ours.embedding, n_neighbors=10) > \
            trustworthiness(x, ref, n_neighbors=10) - 0.01
        assert _kl(p, ours.embedding) < 0.5 * _kl(p, init)


def test_the_run_is_deterministic_and_later_iterations_lower_the_cost():
    x = _clusters()
    a, b = exact_tsne(x, 15.0, 300), exact_tsne(x, 15.0, 300)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    longer = exact_tsne(x, 15.0, 600)
    assert longer.kl_divergence < a.kl_divergence
    mirrored = exact_tsne(-x, 15.0, 300)  # the default start fixes the components' signs
    np.testing.assert_allclose(mirrored.embedding, a.embedding, rtol=0,
                               atol=1e-6 * np.ptp(a.embedding))


def test_bad_perplexity_and_start_are_refused():
    x = _clusters(9, d=3)
    with pytest.raises(ConfigError, match="perplexity 8.5"):
        joint_probabilities(x, 8.5)
    with pytest.raises(ConfigError, match="init has shape"):
        exact_tsne(x, 3.0, 250, init=np.zeros((8, 2)))


def test_maps_above_the_exact_size_use_barnes_hut(monkeypatch):
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    import probing.maps as maps

    x = _clusters(60, d=8)
    exact = embedding_map(x, "tsne", seed=0, max_iter=300)
    monkeypatch.setattr(maps, "EXACT_MAX_POINTS", 59)
    bh = embedding_map(x, "tsne", seed=0, max_iter=300)
    reduced = maps._pca(x, 8)
    with threadpool_limits(1):
        ref = TSNE(2, perplexity=min(30.0, 59 / 3), init="pca", random_state=0,
                   learning_rate="auto", max_iter=300).fit_transform(reduced)
    np.testing.assert_allclose(bh, ref, rtol=0, atol=1e-8 * np.ptp(ref))
    assert np.abs(bh - exact).max() > 1e-3 * np.ptp(ref)
