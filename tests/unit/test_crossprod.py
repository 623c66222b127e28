"""Symmetric cross-products by ``syrk``: equal to ``z.T @ z`` summed over chunks."""

from __future__ import annotations

import numpy as np
import pytest

from probing.crossprod import accumulator, add_cross_product, symmetrised

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("acc_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("z_dtype", [np.float64, np.float32])
def test_chunks_add_up_to_the_full_cross_product(acc_dtype, z_dtype):
    z = RNG.normal(size=(301, 17)).astype(z_dtype)
    acc = accumulator(17, acc_dtype)
    for start in range(0, 301, 64):
        assert add_cross_product(acc, z[start : start + 64]) is acc
    want = z.astype(np.float64).T @ z.astype(np.float64)
    tol = 1e-10 if acc_dtype == z_dtype == np.float64 else 1e-3
    np.testing.assert_allclose(np.triu(acc), np.triu(want), atol=tol * np.abs(want).max())
    assert not np.any(np.tril(acc, -1))  # the strict lower triangle is never written
    full = symmetrised(acc)
    np.testing.assert_allclose(full, want, atol=tol * np.abs(want).max())
    np.testing.assert_array_equal(full, full.T)


def test_non_contiguous_chunk_and_c_ordered_accumulator():
    z = RNG.normal(size=(50, 30))[:, ::2]  # a strided view
    acc = np.zeros((15, 15))  # C-ordered: summed through a copy, still correct
    add_cross_product(acc, z)
    add_cross_product(acc, z)
    np.testing.assert_allclose(symmetrised(acc), 2 * z.T @ z, rtol=1e-12, atol=1e-12)
