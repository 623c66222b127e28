"""The positional-encoding studies end to end through run_spec, and the issue's model-level tests.

- the four studies (pe_similarity, pe_decay, pe_subspace, position_probes) on the trained demo
  model, small n;
- the same studies on a non-square model without a positional table (fallbacks and skips);
- model-level: on the trained demo model, PE grid neighbours are more similar than far patches,
  and position probes on layer 0 recover (row, col) with R^2 near 1 where the patch content is
  held fixed (uniform images), and not at all once the positional table is zeroed. (On the shapes
  images the content's variance holds the layer-0 R^2 near 0.5 while the grid cell is still
  classified almost perfectly: the test on the data asserts that.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probing.errors import ConfigError
from probing.run.runner import run_spec
from probing.run.spec import load_spec
from probing.selection import LAYER_EMBED

DEMO_SPEC = """
title = "pe studies"
seed = 0
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = 96

[capture]
kinds = ["cls", "patch"]

[analyses.pe_similarity]

[analyses.pe_decay]
n_positions = 64
positions = [0, 8, 24]

[analyses.pe_subspace]
k = 6
n_null = 60
max_images = 64

[analyses.position_probes]
max_images = 32
patches_per_image = 0
cv = 4
"""

# a non-square (8 x 12) grid and no positional table at all
NO_PE_SPEC = """
title = "no positional table"
seed = 1
store = "{store}"

[model]
spec = "vit_tiny_patch16_224"
pretrained = false
options = {{ img_size = [32, 48], patch_size = 4, embed_dim = 32, depth = 1, num_heads = 2, \
num_classes = 4, pos_embed = "none" }}

[data]
source = "shapes"
n = 16

[capture]
kinds = ["patch"]

[analyses.pe_similarity]
metrics = ["cosine"]

[analyses.pe_decay]
n_positions = 32
positions = [0, 4]

[analyses.pe_subspace]
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, run_spec_text):
    pytest.importorskip("probing.demo")
    from probing import demo

    if not demo.WEIGHTS.exists():
        pytest.skip("the demo weights are not built yet")
    return run_spec_text(tmp_path_factory.mktemp("pe"), DEMO_SPEC, "demo")


@pytest.fixture(scope="module")
def no_pe_run(tmp_path_factory, run_spec_text):
    return run_spec_text(tmp_path_factory.mktemp("pe_none"), NO_PE_SPEC, "nope")


def _table(result, name: str) -> pd.DataFrame:
    return pd.read_csv(result.report_dir / "tables" / f"{name}.csv")


def test_demo_report_has_every_figure_and_table(demo_run):
    result, numbers = demo_run
    assert set(numbers) >= {"pe_similarity", "pe_decay", "pe_subspace", "position_probes"}
    for name in ("pe_similarity_cosine", "pe_similarity_dot", "pe_decay_1d", "pe_decay_2d",
                 "pe_subspace", "position_probes_r2", "position_probes_cell"):
        assert (result.report_dir / "figures" / f"{name}.png").is_file(), name
        assert (result.report_dir / "tables" / f"{name}.csv").is_file(), name


def test_similarity_grid_is_the_learned_table(demo_run):
    from probing import load_model
    from probing.frames import embedding_matrix
    from probing.posenc import learned_table

    result, _ = demo_run
    sim = _table(result, "pe_similarity_cosine")
    assert len(sim) == 64 * 64
    own = sim[(sim["query_row"] == sim["row"]) & (sim["query_col"] == sim["col"])]
    np.testing.assert_allclose(own["value"], 1.0, atol=1e-12)
    # one entry by hand: patch (0, 0) against patch (2, 5) of the demo model's pos_embed
    table = learned_table(load_model("demo"))
    x = embedding_matrix(table[table["kind"] == "patch"]).astype(np.float64)
    a, b = x[0], x[2 * 8 + 5]
    expect = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    got = sim.query("query_row == 0 and query_col == 0 and row == 2 and col == 5")["value"]
    assert got.iloc[0] == pytest.approx(expect, abs=1e-9)
    dot = _table(result, "pe_similarity_dot")
    got = dot.query("query_row == 0 and query_col == 0 and row == 2 and col == 5")["value"]
    assert got.iloc[0] == pytest.approx(a @ b, rel=1e-9)


def test_trained_demo_pe_neighbours_more_similar_than_far_patches(demo_run):
    """Issue 5: on the trained demo model, neighbours' PE cosine exceeds far patches'."""
    _, numbers = demo_run
    sim = numbers["pe_similarity"]
    assert sim["neighbour_cosine"] > sim["far_cosine"] + 0.1
    assert sim["neighbour_minus_far_cosine"] == pytest.approx(
        sim["neighbour_cosine"] - sim["far_cosine"])


def test_decay_worked_numbers_shift_invariance_and_comparison(demo_run):
    result, numbers = demo_run
    dec = numbers["pe_decay"]
    got = [dec[f"worked_pos5_dim3_col{i}"] for i in range(3)]
    np.testing.assert_allclose(np.round(got, 4), [-0.9589, 0.2837, 0.0108])
    assert dec["shift_invariance_max_spread"] < 1e-9
    # the 1-D curve is the closed form sum_i cos(k w_i) at the model's width (64)
    curves = _table(result, "pe_decay_1d")
    w = 10000.0 ** (-2.0 * np.arange(32) / 64)
    for k in (1, 7, 30):
        expect = np.cos(k * w).sum()
        np.testing.assert_allclose(curves.loc[curves["k"] == k, "dot"], expect, atol=1e-9)
    assert sorted(curves["p"].unique()) == [0, 8, 24]
    summary = _table(result, "pe_decay_summary")
    assert list(summary["key"]) == ["learned", "sincos_2d", "resampled", "random_null",
                                    "sincos_1d"]
    assert summary.loc[summary["key"] == "resampled", "grid"].item() == "16x16"
    by_dist = _table(result, "pe_decay_2d")
    assert by_dist["source"].nunique() == 4  # with the norm-matched random null
    at0 = by_dist[by_dist["distance"] == 0]
    np.testing.assert_allclose(at0["cosine_mean"], 1.0, atol=1e-9)
    # resampling to twice the grid spreads similarity over twice as many patches
    assert dec["resampled_halving_distance"] > dec["learned_halving_distance"]
    offsets = _table(result, "pe_decay_by_offset")
    learned = offsets[offsets["source"] == "learned 8x8"]
    assert len(learned) == 15 * 15 and learned["n_pairs"].sum() == 64 * 64


def test_subspace_uses_the_embed_site_and_a_sound_null(demo_run):
    result, numbers = demo_run
    assert LAYER_EMBED in result.store.layers("patch")  # NEEDS layers merged into "all"
    sub = numbers["pe_subspace"]
    assert 0 <= sub["mean_angle_deg"] <= 90
    # a Haar-random 6-dimensional subspace of R^64 holds 6/64 of any variance on average
    assert sub["pe_variance_in_content_null"] == pytest.approx(6 / 64, abs=0.02)
    assert sub["content_variance_in_pe_null"] == pytest.approx(6 / 64, abs=0.02)
    angles = _table(result, "pe_subspace")
    angles = angles[angles["metric"] == "angle_deg"]
    assert len(angles) == 6 and np.all(np.diff(angles["value"]) >= 0)
    # the "embed" site is the patch projection before the table is added: embed + PE = layer 0
    from probing import load_model
    from probing.frames import embedding_matrix
    from probing.posenc import learned_table

    pe = learned_table(load_model("demo"))
    pe = embedding_matrix(pe[pe["kind"] == "patch"])
    tokens = result.store.read(kind="patch", layer=["embed", 0],
                               filters=[("image_id", "<", 3)], labels=False)
    x = {k: embedding_matrix(tokens[tokens["layer"] == k]).reshape(3, 64, -1)
         for k in (LAYER_EMBED, 0)}
    np.testing.assert_allclose(x[LAYER_EMBED] + pe[None], x[0], atol=1e-5)


def test_trained_demo_position_probes_on_shapes(demo_run):
    result, numbers = demo_run
    probes = numbers["position_probes"]
    # the grid cell is read off layer 0 almost perfectly; (row, col) linearly only in part
    assert probes["cell_accuracy_layer0"] > 0.8 > 50 * probes["cell_chance"]
    assert probes["r2_layer0"] > 0.3
    frame = _table(result, "position_probes")
    task = frame[frame["probe"] == "task"]
    assert sorted(task["layer"].unique()) == [0, 1, 2, 3, 4]
    assert set(task["metric"]) == {"r2", "accuracy"}
    assert (frame["probe"] == "random_init").sum() == 10
    assert (task["n"] == 32 * 64).all()
    assert (task["n_folds"] == 4).all()
    majority = frame[(frame["probe"] == "majority") & (frame["metric"] == "r2")]
    assert (majority["value"] < 0.05).all()


def test_trained_demo_position_probe_layer0_recovers_row_col():
    """Issue 5: on layer 0 of a learned-PE model, (row, col) is recovered with R^2 near 1.

    Uniform grey images give every patch the same content, so layer 0 is a constant plus the
    learned table; zeroing the table must then leave nothing to decode.
    """
    import torch

    from probing import load_model
    from probing.demo import WEIGHTS
    from probing.extract import extract
    from probing.probes import probe_layers

    if not WEIGHTS.exists():
        pytest.skip("the demo weights are not built yet")
    model = load_model("demo")
    grey = torch.zeros(24, 3, 32, 32)

    def r2() -> float:
        frame = extract(model, grey, layers=[0], kinds=["patch"], progress=False)
        scores = probe_layers(frame, ["row", "col"], kind="patch", task="regression", cv=4,
                              control=False)
        return float(scores.loc[scores["probe"] == "task", "value"].iloc[0])

    assert r2() > 0.95
    with torch.no_grad():
        model.model.pos_embed.zero_()
    assert r2() < 0.05


def test_model_without_positional_table_falls_back_and_skips(no_pe_run):
    result, numbers = no_pe_run
    assert result.store.layers("patch")[0] == LAYER_EMBED
    html = (result.report_dir / "index.html").read_text()
    assert "no absolute positional table" in html
    # the grid of grids shows the 2-D sin-cos table of the same 8 x 12 grid
    sim = _table(result, "pe_similarity_cosine")
    assert (sim["row"].max(), sim["col"].max()) == (7, 11)
    assert numbers["pe_similarity"]["neighbour_cosine"] > numbers["pe_similarity"]["far_cosine"]
    summary = _table(result, "pe_decay_summary")
    assert list(summary["key"]) == ["sincos_2d", "sincos_1d"]
    assert not (result.report_dir / "figures" / "pe_subspace.png").exists()
    assert "pe_subspace" not in numbers or numbers["pe_subspace"] == {}


def test_bad_parameter_names_the_fix(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(NO_PE_SPEC.replace("positions = [0, 4]", "positions = [0, 40]")
                    .format(store=(tmp_path / "stores").as_posix()))
    with pytest.raises(ConfigError, match="pe_decay.positions"):
        run_spec(load_spec(spec), out=tmp_path / "out", quiet=True)
