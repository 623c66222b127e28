"""The attention and attribution studies end to end through run_spec.

- attention_maps, attention_distance, rollout and attribution on the trained demo model (small n);
- the same four on a model without a CLS token whose token 0 is a register and whose grid is not
  square (4 x 6), to show that nothing assumes token 0 is CLS.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

STUDIES = """
[analyses.attention_maps]
n_images = 2

[analyses.attention_distance]
max_images = 16

[analyses.rollout]
n_images = 3

[analyses.attribution]
n_images = 3
n_steps = 32
n_random = 1
step = 4
sanity_images = 2
"""

DEMO_SPEC = """
title = "attention studies"
seed = 0
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = 32
# the first images, as before the stratified default: on 3 stratified images occlusion's
# insertion AUC (from a blurred start) does not beat random order (0.46 vs 0.60)
selection = "first"

[capture]
kinds = ["cls"]
""" + STUDIES

# no CLS (global average pooling), one register token at position 0, a 4 x 6 grid
NO_CLS_SPEC = """
title = "no CLS"
seed = 1
store = "{store}"

[model]
spec = "vit_medium_patch16_gap_256"
pretrained = false
options = {{ img_size = [32, 48], patch_size = 8, depth = 2, reg_tokens = 1, embed_dim = 32, \
num_heads = 2, num_classes = 4 }}

[data]
source = "shapes"
n = 16

[capture]
kinds = ["patch"]
""" + STUDIES


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, run_spec_text):
    from probing import demo

    if not demo.WEIGHTS.exists():
        pytest.skip("the demo weights are not built yet")
    return run_spec_text(tmp_path_factory.mktemp("attn"), DEMO_SPEC, "demo")


@pytest.fixture(scope="module")
def no_cls_run(tmp_path_factory, run_spec_text):
    return run_spec_text(tmp_path_factory.mktemp("attn_nocls"), NO_CLS_SPEC, "nocls")


@pytest.fixture(params=["demo", "no_cls"])
def any_run(request, demo_run, no_cls_run):
    return demo_run if request.param == "demo" else no_cls_run


def _map_figures(result) -> list[str]:
    """The per-image attention-map figures (images chosen by the stratified selection)."""
    names = sorted(p.stem for p in (result.report_dir / "figures").glob(
        "attention_maps_image*.png"))
    assert len(names) == 2, names
    return names


def _table(result, name: str) -> pd.DataFrame:
    return pd.read_csv(result.report_dir / "tables" / f"{name}.csv")


def test_every_figure_and_table_is_written(any_run):
    result, numbers = any_run
    assert set(numbers) >= {"attention_maps", "attention_distance", "rollout", "attribution"}
    figures = result.report_dir / "figures"
    for name in (*_map_figures(result), "attention_multihead",
                 "attention_distance", "rollout_maps", "attribution_maps",
                 "attribution_faithfulness", "attribution_sanity"):
        assert (figures / f"{name}.png").stat().st_size > 0, name
        assert (result.report_dir / "tables" / f"{name}.csv").exists(), name


def test_attention_maps_are_weights_over_the_grid(any_run):
    result, numbers = any_run
    maps = _table(result, _map_figures(result)[0])
    assert maps["value"].between(0, 1).all()
    # one map per layer and head over the whole grid
    per_map = maps.groupby(["layer", "head"]).size()
    assert per_map.nunique() == 1
    rows, cols = maps["row"].max() + 1, maps["col"].max() + 1
    assert per_map.iloc[0] == rows * cols
    mass = _table(result, "attention_maps_mass")
    assert ((mass["patch_mass"] > 0) & (mass["patch_mass"] <= 1 + 1e-6)).all()
    assert (mass["peak"] <= mass["patch_mass"] + 1e-9).all()


def test_attention_distance_is_positive_and_inside_the_image(any_run):
    result, numbers = any_run
    n = numbers["attention_distance"]
    both = _table(result, "attention_distance_both")
    for col in ("distance_px_raw", "distance_px_renorm"):
        assert (both[col] > 0).all() and (both[col] < n["image_diagonal_px"]).all()
    # renormalising over patch keys only scales each query's weights up
    assert (both["distance_px_renorm"] >= both["distance_px_raw"] - 1e-9).all()
    assert (both["distance_min_raw"] <= both["distance_px_raw"] + 1e-9).all()
    assert (both["distance_max_raw"] >= both["distance_px_raw"] - 1e-9).all()
    layers = sorted(both["layer"].unique())
    for layer in layers:
        g = both[both["layer"] == layer]
        assert n[f"layer{layer}_mean_px_raw"] == pytest.approx(g["distance_px_raw"].mean())
    # the figure draws the default (raw) convention
    fig = _table(result, "attention_distance")
    assert np.allclose(np.sort(fig["distance_px"]), np.sort(both["distance_px_raw"]))


def test_rollout_maps_are_scaled_to_max_one(any_run):
    result, _ = any_run
    maps = _table(result, "rollout_maps")
    assert set(maps["method"]) == {"rollout", "gradient_rollout"}
    assert (maps["value"] >= -1e-12).all()
    peaks = maps.groupby(["image_id", "method"])["value"].max()
    assert np.allclose(peaks, 1.0)
    assert maps["image_id"].nunique() == 3


def test_attribution_tables(any_run):
    result, numbers = any_run
    auc = _table(result, "attribution_auc")
    assert set(auc["method"]) == {"rollout", "gradient_rollout", "integrated_gradients",
                                  "occlusion", "random"}
    assert set(auc[auc["method"] == "random"]["mode"]) == {"deletion", "insertion"}
    assert auc["auc_mean"].between(0, 1).all()
    flags = _table(result, "attribution_sanity_flags")
    assert set(flags["method"]) == {"rollout", "gradient_rollout", "integrated_gradients",
                                    "occlusion"}
    assert numbers["attribution"]["sanity_flagged"] == flags["flagged"].sum()


def test_ig_completeness_on_the_demo_model(demo_run):
    result, _ = demo_run
    deltas = _table(result, "attribution_ig_delta")
    assert len(deltas) == 3
    gap = deltas["logit_gap"].abs()
    assert (gap > 0.5).all()  # a trained model's logit moves away from the baseline's
    assert (deltas["delta"].abs() < 0.05 * gap).all()


def test_demo_explanations_beat_random_order(demo_run):
    _, numbers = demo_run
    n = numbers["attribution"]
    for method in ("rollout", "gradient_rollout", "integrated_gradients", "occlusion"):
        assert n[f"{method}_deletion_auc"] < n["random_deletion_auc"], method
        assert n[f"{method}_insertion_auc"] > n["random_insertion_auc"], method


def test_no_cls_model_says_what_it_did(no_cls_run):
    result, numbers = no_cls_run
    results = json.loads((result.report_dir / "results.json").read_text())
    assert "attention_maps" in results
    html = (result.report_dir / "index.html").read_text()
    assert "no CLS token" in html
    assert "mean over patch queries" in html
    # a 4 x 6 grid: six columns, four rows
    maps = _table(result, "rollout_maps")
    assert (maps["row"].max() + 1, maps["col"].max() + 1) == (4, 6)
