"""Similarity: CKA identities and invariances, frame-level CKA, cosine and mutual k-NN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probing.errors import ConfigError
from probing.frames import to_frame
from probing.layout import TokenLayout
from probing.selection import resolve_layers
from probing.similarity import (
    cls_patch_cosine,
    layer_mutual_knn,
    layer_similarity,
    linear_cka,
    minibatch_cka,
    minibatch_cka_matrix,
    mutual_knn,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 15))
Y = X @ RNG.normal(size=(15, 25)) + RNG.normal(size=(60, 25))


def _orthogonal(d, seed=1):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", ["feature", "gram"])
def test_cka_identities(debiased, method):
    c = linear_cka(X, Y, debiased, method)
    assert c == pytest.approx(linear_cka(Y, X, debiased, method), abs=1e-12)
    assert linear_cka(X, X, debiased, method) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X @ _orthogonal(15), Y, debiased, method) == pytest.approx(c, abs=1e-10)
    assert linear_cka(3.7 * X, Y, debiased, method) == pytest.approx(c, abs=1e-10)
    assert linear_cka(X + 42.0, Y - 7.0, debiased, method) == pytest.approx(c, abs=1e-10)
    assert 0 < c < 1


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_and_gram_forms_agree(debiased):
    for x, y in [(X, Y), (Y[:, :20], X[:, :3])]:
        f = linear_cka(x, y, debiased, "feature")
        g = linear_cka(x, y, debiased, "gram")
        assert f == pytest.approx(g, abs=1e-12)


def test_debiased_cka_of_independent_features_is_near_zero():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 300)), rng.normal(size=(400, 300))
    assert abs(linear_cka(a, b, debiased=True)) < 0.02
    assert linear_cka(a, b) > 0.3  # the biased estimator is far from 0 at d ~ n


def test_minibatch_cka_with_one_batch_equals_debiased():
    assert minibatch_cka(X, Y, batch_size=60) == pytest.approx(linear_cka(X, Y, True), abs=1e-12)
    mb = minibatch_cka(X, Y, batch_size=20, seed=1)
    assert abs(mb - linear_cka(X, Y, True)) < 0.2


def _hsic_u_reference(A: np.ndarray, B: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC written out on raw (uncentred) linear Grams."""
    n = len(A)
    K, L = A @ A.T, B @ B.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    value = (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * (one @ K @ L @ one))
    return value / (n * (n - 3))


def test_minibatch_cka_matrix_equals_the_estimator_written_out():
    rng = np.random.default_rng(7)
    # widths on both sides of the batch size, so both computational forms run; shifted
    # features (the unbiased HSIC does not depend on the features' mean)
    mats = [X + 3.0, Y - 1.0, rng.normal(size=(60, 4)) + 5.0]
    got = minibatch_cka_matrix(mats, batch_size=16, seed=3)
    order = np.random.default_rng(3).permutation(60)
    batches = [order[s:s + 16] for s in range(0, 60, 16)]  # 16, 16, 16, 12 rows
    hsic = np.array([[np.mean([_hsic_u_reference(a[r], b[r]) for r in batches]) for b in mats]
                     for a in mats])
    want = hsic / np.sqrt(np.outer(np.diag(hsic), np.diag(hsic)))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert got[0, 1] == pytest.approx(minibatch_cka(mats[0], mats[1], 16, 3), abs=1e-12)
    other = minibatch_cka_matrix(mats[:2], mats[1:], batch_size=16, seed=3)
    np.testing.assert_allclose(other, got[:2, 1:], rtol=1e-10, atol=1e-12)


def test_cka_bad_input():
    with pytest.raises(ConfigError, match="rows"):
        linear_cka(X, Y[:10])
    with pytest.raises(ConfigError, match="method"):
        linear_cka(X, Y, method="svd")


def test_mutual_knn_known_values():
    assert mutual_knn(X, X @ _orthogonal(15), k=5) == pytest.approx(1.0)
    assert mutual_knn(X, 2.0 * X, k=5) == pytest.approx(1.0)
    rng = np.random.default_rng(4)
    chance = mutual_knn(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), k=10)
    assert chance < 0.1


LAYOUT = TokenLayout(grid=(3, 2), patch_size=(8, 8), prefix=("cls", "reg"))


def _frame(n=40, d=10, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, LAYOUT.n_tokens, d))
    parts = []
    for layer in range(layers):
        tokens = base @ _orthogonal(d, seed=layer) if layer < 2 else rng.normal(size=base.shape)
        ids = [f"im{i}" for i in range(n)]
        parts.append(to_frame(tokens.astype(np.float32), LAYOUT, layer, ids))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("kind", ["cls", "pooled", "patch"])
def test_layer_similarity_one_model(kind):
    out = layer_similarity(_frame(), kind=kind)
    grid = out.pivot(index="layer_a", columns="layer_b", values="value").to_numpy()
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-10)
    np.testing.assert_allclose(grid, grid.T, atol=1e-12)
    assert grid[0, 1] == pytest.approx(1.0, abs=1e-6)  # layer 1 = rotation of layer 0
    assert grid[0, 2] < 0.9


def test_layer_similarity_two_models_aligns_on_image_id():
    a = _frame()
    b = _frame().sample(frac=1.0, random_state=1)  # same content, shuffled rows
    out = layer_similarity(a, b, kind="cls", debiased=True)
    same = out[out.layer_a == out.layer_b]["value"]
    np.testing.assert_allclose(same, 1.0, atol=1e-10)
    gram = layer_similarity(a, b, kind="cls", debiased=True, method="gram")
    np.testing.assert_allclose(out["value"], gram["value"], atol=1e-10)


def test_layer_mutual_knn_frame():
    out = layer_mutual_knn(_frame(), kind="cls", k=5)
    assert out[(out.layer_a == 0) & (out.layer_b == 1)]["value"].iloc[0] == pytest.approx(1)


def test_cls_patch_cosine_known_value():
    n, d = 6, 4
    tokens = np.zeros((n, LAYOUT.n_tokens, d), dtype=np.float32)
    tokens[:, LAYOUT.cls_index, 0] = 1.0
    patches = np.arange(LAYOUT.patch_slice.start, LAYOUT.patch_slice.stop)
    tokens[:, patches[::2], 0] = 2.0  # cosine 1
    tokens[:, patches[1::2], 1] = 3.0  # cosine 0
    tokens[:, LAYOUT.positions("reg"), 0] = -1.0  # registers are not patches
    frame = to_frame(tokens, LAYOUT, 0, np.arange(n))
    out = cls_patch_cosine(frame)
    assert out["value"].iloc[0] == pytest.approx(0.5)
    assert out["n"].iloc[0] == n


def test_similarity_figures():
    from probing.plots.similarity import plot_cka_heatmap, plot_similarity_vs_layer

    fig = plot_cka_heatmap(layer_similarity(_frame(), kind="cls"))
    image = fig.axes[0].images[0]
    assert image.get_clim() == (0.0, 1.0) and image.get_cmap().name == "viridis"
    assert fig.axes[1].get_ylabel() == "linear CKA"  # the colour bar is labelled
    fig = plot_similarity_vs_layer(cls_patch_cosine(_frame()))
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].get_ylabel() == "cosine similarity"


def test_layer_similarity_checks_frame_b_rows_per_layer_too():
    """Regression (issue 11, defect 4): frame_b's layers were not checked to hold the same
    images, so misaligned layers of frame_b gave a CKA instead of an error."""
    from probing.errors import DataError

    a = _frame()
    b = _frame(seed=3)
    late = b["layer"] == 2  # layer 2 of b holds two other images in place of im0, im1
    b.loc[late, "image_id"] = b.loc[late, "image_id"].replace({"im0": "im40", "im1": "im41"})
    with pytest.raises(DataError, match="layer 2 of frame_b"):
        layer_similarity(a, b, kind="cls")
    with pytest.raises(DataError, match="layer 2 of frame_b"):
        layer_mutual_knn(a, b, kind="cls", k=3)
    with pytest.raises(DataError, match="layer 2 of frame_a"):
        layer_similarity(b, a, kind="cls")


def test_layer_similarity_layers_take_every_selection_form():
    frame = _frame()
    full = layer_similarity(frame, kind="cls")
    assert layer_similarity(frame, kind="cls", layers="all").equals(full)
    # a bare frame records no model: -1 (the model's last block) must be resolved against it
    with pytest.raises(ConfigError, match=r"resolve_layers\(layers, model.depth\)"):
        layer_similarity(frame, kind="cls", layers=[-1])
    last = layer_similarity(frame, kind="cls", layers=resolve_layers([-1], 2))
    assert set(last["layer_a"]) == {2}
    # "all" inside a list is every block the frame holds (here 0 and 2, block 1 left out)
    gap = frame[frame["layer"] != 1]
    assert layer_similarity(gap, kind="cls", layers=["all", 2]).equals(
        layer_similarity(gap, kind="cls"))
    with pytest.raises(Exception, match=r"\[5\] are not in frame_a"):
        layer_similarity(frame, kind="cls", layers=[5])


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_form_over_many_panels_and_chunks_equals_the_gram_form(debiased, monkeypatch):
    # layers stacked into several panels (small block cap) and rows cut into several chunks:
    # every block of the symmetric syrk accumulator (diagonal, upper, skipped lower) is read
    import probing.similarity as sim

    rng = np.random.default_rng(5)
    base = rng.normal(size=(230, 6))
    mats = [base @ rng.normal(size=(6, w)) + rng.normal(size=(230, w)) for w in (7, 3, 11, 5, 9)]
    monkeypatch.setattr(sim, "MAX_BLOCK_BYTES", 8 * 14**2)
    monkeypatch.setattr(sim, "_chunks", lambda n, size=40: [slice(s, min(s + size, n))
                                                             for s in range(0, n, size)])
    assert len(sim._panels([7, 3, 11, 5, 9], 14)) > 2
    feature = sim._cka_matrix(sim._Reps(mats), None, debiased, "feature")
    gram = sim._cka_matrix(sim._Reps(mats), None, debiased, "gram")
    np.testing.assert_allclose(feature, gram, atol=1e-12)
    np.testing.assert_allclose(np.diag(feature), 1.0, atol=1e-12)
