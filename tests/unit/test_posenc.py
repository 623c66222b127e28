"""Unit tests of probing.posenc: tables from models, frames, decay summaries, errors, figures."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import timm
import torch

from probing import posenc as P
from probing.errors import ConfigError, DataError, LayoutError, ModelError
from probing.frames import embedding_matrix
from probing.layout import TokenLayout


def _model(name: str, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw).eval()


@pytest.fixture(scope="module")
def deit():
    return _model("deit_tiny_distilled_patch16_224", img_size=(32, 48), patch_size=8, depth=1)


@pytest.fixture(scope="module")
def reg4():
    return _model("vit_small_patch14_reg4_dinov2", img_size=56, depth=1)


def test_learned_table_deit_cls_and_dist_non_square(deit):
    frame = P.learned_table(deit)
    assert frame.attrs["grid"] == (4, 6)
    assert list(frame["kind"][:3]) == ["cls", "dist", "patch"]
    assert frame["token"].tolist() == list(range(2 + 24))
    assert frame["row"].isna().tolist()[:3] == [True, True, False]
    assert frame["emb"].dtype == pd.ArrowDtype(pa.list_(pa.float64(), 192))
    np.testing.assert_array_equal(embedding_matrix(frame),
                                  deit.pos_embed.detach().double().numpy()[0])
    # row-major patches: token 2 + 6 is patch (1, 0)
    assert (frame.loc[8, "row"], frame.loc[8, "col"]) == (1, 0)


def test_learned_table_no_embed_class(reg4):
    frame = P.learned_table(reg4)
    assert (frame["kind"] == "patch").all() and len(frame) == 16
    assert frame["token"].iloc[0] == 5  # cls + 4 registers come first in the sequence
    assert frame.attrs["prefix"] == ("cls", "reg", "reg", "reg", "reg")
    np.testing.assert_array_equal(embedding_matrix(frame),
                                  reg4.pos_embed.detach().double().numpy()[0])
    # resampling keeps the token numbering after the prefix
    bigger = P.resample(frame, (5, 6))
    assert bigger["token"].tolist() == list(range(5, 5 + 30))


def test_learned_table_gap_model_and_loaded_model_wrapper():
    model = _model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                   class_token=False, global_pool="avg")
    frame = P.learned_table(model)
    assert (frame["kind"] == "patch").all() and frame["token"].iloc[0] == 0
    wrapped = types.SimpleNamespace(model=model, layout=TokenLayout.from_model(model))
    pd.testing.assert_frame_equal(P.learned_table(wrapped), frame)


def test_relpos_model_has_bias_but_no_table():
    model = _model("vit_relpos_medium_patch16_cls_224", img_size=(32, 48), patch_size=8, depth=2)
    with pytest.raises(ModelError, match="relative-position"):
        P.learned_table(model)
    bias = P.relpos_bias(model, layer=2)
    assert bias.shape == (8, 24, 24)
    full = model.blocks[1].attn.rel_pos.get_bias().detach().double().numpy()[0]
    np.testing.assert_array_equal(bias, full[:, 1:, 1:])
    np.testing.assert_array_equal(P.relpos_bias(model, -1), bias)
    with pytest.raises(LayoutError):
        P.relpos_bias(model, layer=3)


def test_relpos_bias_and_rope_errors_on_plain_vit(deit):
    with pytest.raises(ModelError, match="learned absolute"):
        P.relpos_bias(deit)
    with pytest.raises(ModelError, match="rotary"):
        P.rope_frequencies(deit)


def test_rope_frequencies_eva02():
    model = _model("eva02_tiny_patch14_224", img_size=56, depth=1)
    freq = P.rope_frequencies(model)
    bands = model.rope.bands.double().numpy()
    assert len(freq) == 2 * len(bands)
    # EVA-02 rescales a 4x4 grid onto its 16x16 reference grid: 4 coordinate units per patch
    np.testing.assert_allclose(freq["rad_per_patch"], np.tile(bands, 2) * 4.0)
    np.testing.assert_allclose(freq["period_patches"] * freq["rad_per_patch"], 2 * np.pi)
    # the module's own sine table: the row-axis angle of patch (1, 0) is one row step
    sin = model.rope.get_embed()[:, : model.rope.get_embed().shape[1] // 2].double().numpy()
    row_rates = freq.loc[freq["axis"] == "row", "rad_per_patch"].to_numpy()
    assert np.allclose(np.sort(np.unique(np.round(sin[4], 5))),
                       np.sort(np.unique(np.round(np.r_[np.sin(row_rates), 0.0], 5))))


def test_sincos_validation():
    with pytest.raises(ConfigError):
        P.sincos_1d(4, 0)
    with pytest.raises(ConfigError):
        P.sincos_1d(4, 8, layout="bogus")
    with pytest.raises(ConfigError):
        P.sincos_2d((3, 4), 30)
    with pytest.raises(DataError):
        P.similarity_grid(np.ones((11, 4)), (3, 4))


def test_table_frame_roundtrip_and_similarity_frame():
    table = P.sincos_2d((3, 4), 16)
    frame = P.table_frame(table, (3, 4))
    np.testing.assert_array_equal(P.patch_matrix(frame)[0], table)
    sim = P.similarity_grid(frame, metric="dot")
    np.testing.assert_allclose(sim.reshape(12, 12), table @ table.T)
    tidy = P.similarity_frame(frame, metric="dot")
    assert len(tidy) == 144
    row = tidy[(tidy.query_row == 1) & (tidy.query_col == 2) & (tidy.row == 2) & (tidy.col == 0)]
    assert row["value"].item() == pytest.approx(table[6] @ table[8])


def test_decay_2d_matches_brute_force_non_square():
    rng = np.random.default_rng(0)
    grid = (3, 5)
    x = rng.standard_normal((15, 6))
    by_offset = P.decay_2d(x, grid)
    by_dist = P.decay_2d(x, grid, by="distance")
    rc = np.stack(np.divmod(np.arange(15), 5), axis=1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [(i, j) for i in range(15) for j in range(15)
             if tuple(rc[j] - rc[i]) == (1, -2)]
    cos = np.array([xn[i] @ xn[j] for i, j in pairs])
    got = by_offset[(by_offset.dr == 1) & (by_offset.dc == -2)].iloc[0]
    assert got["n_pairs"] == len(pairs)
    assert got["cosine_mean"] == pytest.approx(cos.mean())
    assert got["cosine_std"] == pytest.approx(cos.std())
    assert by_offset["n_pairs"].sum() == by_dist["n_pairs"].sum() == 225
    d5 = by_dist[np.isclose(by_dist.distance, np.sqrt(5))].iloc[0]
    both = by_offset[np.isclose(by_offset.distance, np.sqrt(5))]
    assert d5["n_pairs"] == both["n_pairs"].sum()
    assert d5["dot_mean"] == pytest.approx((both.dot_mean * both.n_pairs).sum() / d5["n_pairs"])


def test_halving_distance_linear_interpolation():
    frame = pd.DataFrame({"distance": [0.0, 1.0, 2.0, 3.0], "cosine_mean": [1.0, 0.8, 0.4, 0.2],
                          "n_pairs": [4, 4, 4, 4]})
    assert P.halving_distance(frame) == pytest.approx(1.75)
    assert np.isnan(P.halving_distance(frame.assign(cosine_mean=[1.0, 0.9, 0.8, 0.7])))
    one_d = P.decay_1d(P.sincos_1d(64, 16), positions=[0, 5])
    h = P.halving_distance(one_d)
    curve = one_d.groupby("distance")["cosine"].mean()
    assert curve[np.floor(h)] > 0.5 >= curve[np.ceil(h)]
    with pytest.raises(Exception, match="distance-0"):
        P.halving_distance(frame.iloc[1:])


def test_subspace_overlap_frame_shape_and_seed():
    rng = np.random.default_rng(1)
    pe, content = rng.standard_normal((20, 10)), rng.standard_normal((100, 10))
    a = P.subspace_overlap(pe, content, k=3, n_null=20, seed=5)
    b = P.subspace_overlap(pe, content, k=3, n_null=20, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["metric"]) == ["angle_deg"] * 3 + [
        "mean_angle_deg", "pe_variance_in_content", "content_variance_in_pe"]
    assert a["component"].isna().sum() == 3
    with pytest.raises(ConfigError):
        P.subspace_overlap(pe, content, k=11)


def test_figures_draw_result_frames():
    from matplotlib.figure import Figure

    from probing.plots.posenc import (
        plot_decay_1d,
        plot_decay_2d,
        plot_similarity_grid,
        plot_subspace_angles,
    )

    table = P.sincos_2d((3, 5), 16)
    figs = [plot_similarity_grid(P.similarity_frame(table, (3, 5)))]
    figs.append(plot_decay_1d(P.decay_1d(P.sincos_1d(30, 16))))
    both = pd.concat([P.decay_2d(table, (3, 5), by="distance").assign(source="sincos"),
                      P.decay_2d(P.resample(table, (4, 4), (3, 5)), (4, 4), by="distance")
                      .assign(source="resampled")])
    figs.append(plot_decay_2d(both, halving={"sincos": 1.5}))
    rng = np.random.default_rng(0)
    figs.append(plot_subspace_angles(P.subspace_overlap(table, rng.standard_normal((50, 16)),
                                                        k=3, n_null=10)))
    import matplotlib.pyplot as plt

    for fig in figs:
        assert isinstance(fig, Figure)
        plt.close(fig)
