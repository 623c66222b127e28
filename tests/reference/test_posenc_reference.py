"""Known values and identities of positional encodings, and agreement with timm's builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probing import posenc as P


def test_worked_example_pos5_dim3():
    np.testing.assert_allclose(P.sincos_1d(6, 3)[5], [-0.9589, 0.2837, 0.0108], atol=5e-5)
    table = P.worked_example()
    np.testing.assert_allclose(table["value"], [np.sin(5), np.cos(5), np.sin(5 * 1e4 ** (-2 / 3))])
    assert list(table["function"]) == ["sin", "cos", "sin"]


@pytest.mark.parametrize("dim", [2, 8, 64, 130])
def test_sincos_1d_closed_form_dot(dim):
    pe = P.sincos_1d(200, dim)
    w = 1e4 ** (-2.0 * np.arange(dim // 2) / dim)
    k = np.arange(200)
    closed = np.cos(k[:, None] * w[None, :]).sum(axis=1)
    np.testing.assert_allclose(pe @ pe[0], closed, atol=1e-9)


@pytest.mark.parametrize("layout", ["interleaved", "concat"])
def test_sincos_1d_shift_invariance_and_norm(layout):
    pe = P.sincos_1d(120, 32, layout=layout)
    np.testing.assert_allclose(np.linalg.norm(pe, axis=1), np.sqrt(16), atol=1e-12)
    for k in (1, 7, 30):
        dots = np.einsum("ij,ij->i", pe[:-k], pe[k:])
        np.testing.assert_allclose(dots, dots[0], atol=1e-9)
    frame = P.decay_1d(pe, positions=[0, 10, 40, 60])
    spread = frame.groupby("k")["dot"].agg(lambda s: s.max() - s.min())
    assert spread.max() < 1e-9


def test_sincos_1d_layouts_are_column_permutations_and_odd_dim():
    a = P.sincos_1d(10, 7)
    b = P.sincos_1d(10, 7, layout="concat")
    np.testing.assert_allclose(b, a[:, [0, 2, 4, 1, 3, 5, 6]])
    np.testing.assert_allclose(a[:, -1], np.sin(np.arange(10) * 1e4 ** (-6 / 7)))
    np.testing.assert_allclose(P.sincos_1d(4, 1)[:, 0], np.sin(np.arange(4)))


def _mae_2d(dim: int, rows: int, cols: int, base: float = 1e4) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed as described: [sin(col)|cos(col)|sin(row)|cos(row)]."""
    omega = 1.0 / base ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    out_c = np.outer(c.reshape(-1), omega)
    out_r = np.outer(r.reshape(-1), omega)
    return np.concatenate([np.sin(out_c), np.cos(out_c), np.sin(out_r), np.cos(out_r)], axis=1)


@pytest.mark.parametrize("grid", [(3, 5), (6, 2), (4, 4)])
def test_sincos_2d_equals_timm_and_mae(grid):
    from timm.layers import build_sincos2d_pos_embed

    for layout, kw in (("timm", {}), ("timm_interleave", {"interleave_sin_cos": True})):
        ref = build_sincos2d_pos_embed(list(grid), dim=32, temperature=100.0, **kw)
        np.testing.assert_allclose(P.sincos_2d(grid, 32, base=100.0, layout=layout),
                                   ref.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(P.sincos_2d(grid, 24, layout="mae"), _mae_2d(24, *grid),
                               atol=1e-12)


def test_resample_equals_timm_on_non_square_grids():
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    pos = torch.randn(1, 2 + 3 * 5, 16)
    for new in ((6, 4), (2, 3)):
        ref = resample_abs_pos_embed(pos, list(new), old_size=[3, 5], num_prefix_tokens=2)
        out = P.resample(pos.double().numpy()[0], new, old_grid=(3, 5), num_prefix_tokens=2)
        np.testing.assert_allclose(out, ref.double().numpy()[0], atol=1e-5)
    same = P.resample(pos.double().numpy()[0], (3, 5), old_grid=(3, 5), num_prefix_tokens=2)
    np.testing.assert_allclose(same, pos.double().numpy()[0], atol=1e-12)


@pytest.mark.parametrize("grid", [(5, 7), (4, 4)])
def test_similarity_grid_peaks_at_self_and_decreases_in_first_ring(grid):
    sim = P.similarity_grid(P.sincos_2d(grid, 64), grid)
    rows, cols = grid
    for r in range(rows):
        for c in range(cols):
            m = sim[r, c]
            assert m[r, c] == pytest.approx(1.0)
            others = np.delete(m.ravel(), r * cols + c)
            assert others.max() < 1.0 - 1e-6
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1)):
                if 0 <= r + dr < rows and 0 <= c + dc < cols:
                    assert m[r + dr, c + dc] < 1.0
            # first ring: diagonal neighbours are less similar than their edge-sharing ones
            if r + 1 < rows and c + 1 < cols:
                assert m[r + 1, c + 1] < min(m[r + 1, c], m[r, c + 1])
    # mean similarity over Chebyshev rings 0, 1, 2 decreases
    frame = P.decay_2d(P.sincos_2d(grid, 64), grid)
    ring = np.maximum(frame["dr"].abs(), frame["dc"].abs())
    w = frame["n_pairs"] * frame["cosine_mean"]
    means = [w[ring == d].sum() / frame["n_pairs"][ring == d].sum() for d in (0, 1, 2)]
    assert means[0] > means[1] > means[2]


def test_principal_angles_identity_and_orthogonal():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 4))
    np.testing.assert_allclose(P.principal_angles(a, a @ rng.standard_normal((4, 4))), 0,
                               atol=1e-6)
    e = np.eye(10)
    np.testing.assert_allclose(P.principal_angles(e[:, :3], e[:, 3:7]), 90.0, atol=1e-12)
    # a 45-degree pair: span(e0) vs span(e0 + e1)
    np.testing.assert_allclose(P.principal_angles(e[:, :1], e[:, :1] + e[:, 1:2]), 45.0)


def test_subspace_overlap_self_and_null():
    table = P.sincos_2d((6, 6), 32)
    out = P.subspace_overlap(table, table, k=4, n_null=300, seed=1).set_index("metric")
    ang = out.loc["angle_deg"]
    np.testing.assert_allclose(ang["value"], 0, atol=1e-5)
    assert out.loc["pe_variance_in_content", "value"] == pytest.approx(
        out.loc["content_variance_in_pe", "value"])
    # a random k-subspace of R^D holds k/D of any variance on average
    null = out.loc["pe_variance_in_content"]
    assert null["null_mean"] == pytest.approx(4 / 32, abs=0.02)
    assert null["null_low"] < null["null_mean"] < null["null_high"]


def test_subspace_overlap_disjoint_blocks():
    rng = np.random.default_rng(3)
    pe = np.zeros((50, 12))
    pe[:, :3] = rng.standard_normal((50, 3))
    content = np.zeros((400, 12))
    content[:, 6:9] = rng.standard_normal((400, 3))
    out = P.subspace_overlap(pe, content, k=3, n_null=50).set_index("metric")
    np.testing.assert_allclose(out.loc["angle_deg", "value"], 90.0, atol=1e-9)
    assert out.loc["pe_variance_in_content", "value"] == pytest.approx(0.0, abs=1e-12)
    assert out.loc["content_variance_in_pe", "value"] == pytest.approx(0.0, abs=1e-12)


def test_variance_fraction_matches_pca():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 6)) * np.array([5.0, 3, 1, 1, 0.5, 0.1])
    basis = P.principal_subspace(x, 2)
    xc = x - x.mean(0)
    eig = np.sort(np.linalg.eigvalsh(xc.T @ xc))[::-1]
    assert P.variance_fraction(x, basis) == pytest.approx(eig[:2].sum() / eig.sum())
