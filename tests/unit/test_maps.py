"""Embedding maps from one SVD: several methods at once equal each method alone."""

from __future__ import annotations

import numpy as np
import pytest

from probing.errors import ConfigError, DataError
from probing.maps import embedding_map, embedding_maps, explained_variance


def _clusters(seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(60, 24)) + np.repeat(rng.normal(size=(3, 24)) * 3, 20, axis=0)


def test_maps_of_several_methods_equal_each_method_alone():
    x = _clusters()
    both = embedding_maps(x, ["pca", "tsne"], seed=0, max_iter=300)
    assert list(both) == ["pca", "tsne"]
    np.testing.assert_array_equal(both["pca"], embedding_map(x, "pca"))
    np.testing.assert_array_equal(both["tsne"], embedding_map(x, "tsne", seed=0, max_iter=300))
    # PCA: the first two principal components (the projections on the top right singular
    # vectors, up to sign), computed another way
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    np.testing.assert_allclose(np.abs(both["pca"]), np.abs(ref), rtol=0, atol=1e-10)


def test_tsne_iterations_change_the_map_and_too_few_are_refused():
    x = _clusters()
    short = embedding_map(x, "tsne", seed=0, max_iter=250)  # early exaggeration only
    longer = embedding_map(x, "tsne", seed=0, max_iter=400)
    assert np.abs(short - longer).max() > 1e-3
    with pytest.raises(ConfigError, match="max_iter=200"):
        embedding_map(x, "tsne", max_iter=200)


def test_explained_variance_of_rows_that_do_not_vary_is_undefined_not_zero():
    same = np.tile(np.array([[0.1, -2.0, 3.3]]), (5, 1))  # every row the same vector
    assert explained_variance(same).shape == (3,)
    assert np.isnan(explained_variance(same)).all()
    assert np.isnan(explained_variance(same, 2)).all() and explained_variance(same, 2).size == 2
    assert np.isnan(explained_variance(same[:1])).all()  # one row: no variance either
    varied = same.copy()
    varied[0, 1] += 1e-6  # the tiniest variance is a variance: all of it on one component
    np.testing.assert_allclose(explained_variance(varied), [1.0, 0.0, 0.0], atol=1e-9)
    with pytest.raises(DataError, match=r"\(n, D\) array"):
        explained_variance(np.ones(4))
