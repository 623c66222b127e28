"""Attention maps, mean attention distance and rollout: exact properties on hand-made inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from probing.attention import (
    attention_map_frame,
    attention_maps,
    mean_attention_distance,
    mean_attention_distance_per_image,
    rollout,
    rollout_map,
)
from probing.errors import ConfigError, DataError, LayoutError
from probing.layout import TokenLayout


def _random_attention(rng, b, layers, heads, n):
    a = rng.random((b, layers, heads, n, n)) ** 3
    return a / a.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- maps
def test_attention_maps_reads_the_query_row_with_cls_not_first():
    rng = np.random.default_rng(0)
    layout = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=("reg", "cls"))
    a = _random_attention(rng, 2, 3, 2, layout.n_tokens)
    maps = attention_maps(a, layout)
    assert maps.shape == (2, 3, 2, 2, 3)
    np.testing.assert_allclose(maps, a[..., 1, 2:].reshape(2, 3, 2, 2, 3))
    # an explicit token and the mean over patch queries
    at4 = attention_maps(a, layout, query=4)
    np.testing.assert_allclose(at4[0, 0, 0].ravel(), a[0, 0, 0, 4, 2:])
    np.testing.assert_allclose(
        attention_maps(a, layout, query="pooled"), a[..., 2:, 2:].mean(-2).reshape(2, 3, 2, 2, 3)
    )
    # "mean" is not the toolkit's name of that view: refused with the name, never an alias
    with pytest.raises(LayoutError, match="did you mean 'pooled'"):
        attention_maps(a, layout, query="mean")
    with pytest.raises(LayoutError, match="did you mean 'pooled'"):
        rollout_map(a, layout, query="mean")


def test_attention_maps_no_cls_defaults_to_mean_patch_query_and_dict_input():
    rng = np.random.default_rng(1)
    layout = TokenLayout(grid=(3, 2), patch_size=(8, 8), prefix=())
    a = _random_attention(rng, 1, 2, 2, layout.n_tokens)
    as_dict = {1: torch.tensor(a[:, 0]), 2: torch.tensor(a[:, 1])}
    np.testing.assert_allclose(attention_maps(as_dict, layout), a.mean(-2).reshape(1, 2, 2, 3, 2))
    with pytest.raises(LayoutError):
        attention_maps(a, layout, query="cls")
    frame = attention_map_frame(as_dict, layout, image_ids=["img"])
    assert list(frame.columns) == ["image_id", "layer", "head", "row", "col", "value"]
    assert sorted(frame["layer"].unique()) == [1, 2]
    pick = frame[(frame.layer == 2) & (frame["head"] == 1) & (frame.row == 2) & (frame.col == 1)]
    assert pick["value"].item() == pytest.approx(a[0, 1, 1, :, 5].mean())


def test_wrong_token_count_or_shape_is_refused():
    layout = TokenLayout(grid=(2, 2), patch_size=(4, 4))
    with pytest.raises(LayoutError):
        attention_maps(np.ones((1, 1, 1, 4, 4)) / 4, layout)
    with pytest.raises(DataError):
        attention_maps(np.ones((1, 5, 5)), layout)


# ------------------------------------------------------------ mean attention distance
def _mean_pairwise_distance(g: int, patch: float) -> float:
    """Closed form over grid offsets: sum (g-|dy|)(g-|dx|) sqrt(dy^2+dx^2) / g^4, in pixels."""
    total = 0.0
    for dy, dx in itertools.product(range(-(g - 1), g), repeat=2):
        total += (g - abs(dy)) * (g - abs(dx)) * math.hypot(dy, dx)
    return patch * total / g**4


@pytest.mark.parametrize("prefix", [("cls",), (), ("cls", "reg", "reg")])
def test_uniform_attention_distance_is_mean_pairwise_patch_distance(prefix):
    g, patch = 4, 16
    layout = TokenLayout(grid=(g, g), patch_size=(patch, patch), prefix=prefix)
    n = layout.n_tokens
    a = np.full((2, 2, 3, n, n), 1.0 / n)
    expected = _mean_pairwise_distance(g, patch)
    renorm = mean_attention_distance(a, layout, renormalize=True)
    np.testing.assert_allclose(renorm["distance_px"], expected, rtol=1e-12)
    # without renormalising, each query's distance is scaled by 1 - (attention to prefix)
    plain = mean_attention_distance(a, layout)
    np.testing.assert_allclose(plain["distance_px"], expected * g * g / n, rtol=1e-12)
    assert set(renorm.columns) >= {"layer", "head", "distance_px", "distance_std", "n_images"}
    assert (renorm["n_images"] == 2).all() and np.allclose(renorm["distance_std"], 0)


def test_identity_attention_distance_is_zero_and_patch_size_override_scales():
    layout = TokenLayout(grid=(3, 5), patch_size=(4, 4), prefix=("cls",))
    a = np.broadcast_to(np.eye(layout.n_tokens), (1, 2, 2, 16, 16))
    assert np.all(mean_attention_distance(a, layout)["distance_px"] == 0)
    u = np.full((1, 1, 1, 16, 16), 1 / 16)
    d4 = mean_attention_distance(u, layout)["distance_px"].item()
    d8 = mean_attention_distance(u, layout, patch_size=8)["distance_px"].item()
    assert d8 == pytest.approx(2 * d4)


def test_non_square_grid_distance_matches_brute_force_and_per_image_rows():
    rng = np.random.default_rng(2)
    layout = TokenLayout(grid=(2, 5), patch_size=(4, 6), prefix=("dist", "cls"))
    a = _random_attention(rng, 3, 2, 2, layout.n_tokens)
    per = mean_attention_distance_per_image(a, layout, image_ids=["a", "b", "c"])
    assert list(per.columns) == ["image_id", "layer", "head", "distance_px"]
    assert len(per) == 3 * 2 * 2
    b, li, h = 1, 1, 0
    centers = [((r + 0.5) * 4, (c + 0.5) * 6) for r in range(2) for c in range(5)]
    brute = np.mean([
        sum(a[b, li, h, 2 + i, 2 + j] * math.dist(centers[i], centers[j]) for j in range(10))
        for i in range(10)
    ])
    got = per[(per.image_id == "b") & (per.layer == 2) & (per["head"] == 0)]["distance_px"].item()
    assert got == pytest.approx(brute, rel=1e-12)
    summary = mean_attention_distance(a, layout)
    assert list(summary.columns) == ["layer", "head", "distance_px", "distance_std",
                                     "distance_min", "distance_max", "n_images"]
    row = summary[(summary.layer == 2) & (summary["head"] == 0)]
    vals = per[(per.layer == 2) & (per["head"] == 0)]["distance_px"]
    assert row["distance_px"].item() == pytest.approx(vals.mean())
    assert row["distance_max"].item() == pytest.approx(vals.max())
    # the old flag names the function that took its place
    with pytest.raises(ConfigError, match="mean_attention_distance_per_image"):
        mean_attention_distance(a, layout, per_image=True)


# ------------------------------------------------------------------------ rollout
def test_joint_attention_rows_sum_to_one_for_every_fusion_and_discard():
    rng = np.random.default_rng(3)
    layout = TokenLayout(grid=(3, 3), patch_size=(4, 4), prefix=("cls", "reg"))
    a = _random_attention(rng, 2, 4, 3, layout.n_tokens)
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.5, 0.9):
            joint = rollout(a, layout, fusion, ratio)
            assert joint.shape == (2, 11, 11) and not joint.warnings
            np.testing.assert_allclose(joint.sum(-1), 1.0, atol=1e-12)


def test_uniform_attention_gives_uniform_rollout_map():
    layout = TokenLayout(grid=(3, 4), patch_size=(4, 4), prefix=("reg", "cls"))
    n = layout.n_tokens
    a = np.full((1, 5, 2, n, n), 1.0 / n)
    np.testing.assert_allclose(rollout_map(a, layout), 1.0)
    joint = np.asarray(rollout(a))
    off = joint[0][~np.eye(n, dtype=bool)]
    np.testing.assert_allclose(off, off[0])


@pytest.mark.parametrize("query", [None, "pooled", 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rollout_map_one_pass_equals_the_joint_attention_row(query, dtype):
    """The default map (head mean, + I, no discard) propagated in one pass equals the query
    row of rollout()'s joint matrix, rows renormalised (weights that do not sum to 1), with
    start_layer, tokens a block leaves out (zero rows) and the query's row of the last layer
    only."""
    rng = np.random.default_rng(7)
    layout = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=("reg", "cls"))
    n = layout.n_tokens
    a = (_random_attention(rng, 3, 4, 2, n) * rng.uniform(0.5, 1.5, (3, 4, 2, n, 1)))
    a[:, 1, :, 3] = 0.0  # a token the block does not update passes through
    a = a.astype(dtype)
    joint = np.asarray(rollout(a[:, 1:], layout))
    q = layout.query_index(query)
    want = joint[:, layout.patch_slice].mean(1) if q is None else joint[:, q]
    want = want[:, layout.patch_slice].reshape(3, 2, 3)
    want /= want.max(axis=(1, 2), keepdims=True)
    got = rollout_map(a, layout, query=query, start_layer=2)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_rollout_map_rows_summing_to_zero_take_the_general_path():
    layout = TokenLayout(grid=(1, 3), patch_size=(4, 4), prefix=("cls",))
    a = np.full((1, 2, 1, 4, 4), 0.25)
    a[0, 0, 0, 2] = -1.0  # signed weights: (row sum + 1) / 2 < 0, left as zeros with a warning
    with pytest.warns(RuntimeWarning, match="zero rows"):
        got = rollout_map(a, layout)
    assert np.isfinite(got).all()
    a[0, 0, 0, 2] = 0.25
    a[0, 0, 0, 1, 1] = np.nan  # in a row the map uses
    with pytest.raises(DataError, match="NaN"):
        rollout_map(a, layout)


def test_discard_zeroes_k_lowest_per_image_and_protects_cls():
    n = 4
    layout = TokenLayout(grid=(1, 3), patch_size=(4, 4), prefix=("cls",))
    rng = np.random.default_rng(4)
    a = rng.random((2, 1, 1, n, n)) + 0.1
    a[0, 0, 0, 0, 0] = 1e-6  # CLS->CLS is image 0's lowest entry: must survive
    joint = rollout(a, discard_ratio=0.25, layout=layout, residual=False)
    for b in range(2):
        m = a[b, 0, 0].copy()
        flat = m.ravel().copy()
        flat[0] = np.inf
        m.ravel()[np.argsort(flat)[:4]] = 0.0
        expected = m / m.sum(-1, keepdims=True)
        np.testing.assert_allclose(joint[b], expected)
    assert joint[0, 0, 0] > 0


def test_zero_row_gives_zeros_and_a_recorded_warning_never_nan():
    layout = TokenLayout(grid=(1, 2), patch_size=(4, 4), prefix=("cls",))
    a = np.full((1, 2, 1, 3, 3), 1 / 3)
    a[0, 0, 0, 2] = 0.0
    with pytest.warns(RuntimeWarning):
        joint = rollout(a, layout=layout, residual=False)
    assert np.isfinite(joint).all()
    assert len(joint.warnings) == 1 and "layer 1" in joint.warnings[0]
    np.testing.assert_allclose(joint[0], a[0, 1, 0] @ a[0, 0, 0])  # the zero row stays zero


def test_rollout_options_are_validated():
    a = np.full((1, 1, 1, 2, 2), 0.5)
    with pytest.raises(ConfigError):
        rollout(a, head_fusion="median")
    with pytest.raises(ConfigError):
        rollout(a, discard_ratio=1.0)
    with pytest.raises(ConfigError):
        rollout(a, discard_ratio=0.5)  # no layout to protect CLS
    with pytest.raises(DataError):
        rollout(np.full((1, 1, 1, 2, 2), np.nan))
