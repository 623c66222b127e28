"""The layer-probe and CKA studies end to end, and the issue's model-level probe checks.

The studies run through :func:`probing.run.runner.run_spec` on the demo model (128 shapes images);
the assertions are properties that hold for any correct implementation (CKA symmetric with a
unit diagonal, selectivity = task - control, every control present), not snapshots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_IMAGES = 128
SPEC = """
title = "probe studies test"
seed = 3
output = "{out}"
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = {n}

[capture]
kinds = ["cls", "patch"]
pooled = "mean"
batch_size = 128

[analyses.layer_probes]
mdl = true

[analyses.cka]
k = 5
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from probing.run.runner import run_spec

    root = tmp_path_factory.mktemp("probe_studies")
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(out=root / "report", store=root / "stores", n=N_IMAGES))
    return run_spec(spec, quiet=True).report_dir


def _table(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / "tables" / f"{name}.csv")


def _numbers(report: Path, section: str) -> dict:
    return json.loads((report / "results.json").read_text())[section]


# --------------------------------------------------------------------------- layer_probes
def test_probe_table_has_every_control_for_every_layer_and_kind(report):
    table = _table(report, "layer_probes")
    assert set(table["kind"]) == {"cls", "pooled"}
    assert set(table["layer"]) == set(range(5))  # demo depth 4: layers 0..4
    for (layer, kind), part in table.groupby(["layer", "kind"]):
        assert {"task", "majority", "control", "random_init", "mdl"} <= set(part["probe"]), (
            layer, kind)
    assert (table["n"] == N_IMAGES).all() and (table["n_folds"] == 5).all()


def test_probe_scores_and_selectivity_are_consistent(report):
    table = _table(report, "layer_probes")
    acc = table[table["metric"] == "accuracy"]
    assert acc["value"].between(0, 1).all()
    assert (acc["ci_low"] <= acc["value"] + 1e-12).all()
    assert (acc["value"] <= acc["ci_high"] + 1e-12).all()
    wide = acc.pivot_table(index=["layer", "kind"], columns="probe", values="value")
    sel = table[table["metric"] == "selectivity"].set_index(["layer", "kind"])["value"]
    np.testing.assert_allclose(sel.sort_index(), (wide["task"] - wide["control"]).sort_index(),
                               atol=1e-12)
    # one image-level majority baseline whatever the vector kind (same folds, same labels)
    image_level = wide.xs("cls", level="kind")["majority"]
    np.testing.assert_allclose(image_level, wide.xs("pooled", level="kind")["majority"])
    # the CLS vector at layer 0 is the same for every image: its probe is the majority class
    assert wide.loc[(0, "cls"), "task"] == pytest.approx(wide.loc[(0, "cls"), "majority"])
    mdl = table[(table["probe"] == "mdl") & (table["metric"] == "compression")]
    assert (mdl["value"] > 0).all()


def test_probe_key_numbers_match_the_table(report):
    numbers = _numbers(report, "layer_probes")
    table = _table(report, "layer_probes")
    last = table[(table["layer"] == 4) & (table["kind"] == "cls")].set_index(
        ["probe", "metric"])["value"]
    assert numbers["cls_last_accuracy"] == pytest.approx(last[("task", "accuracy")])
    assert numbers["cls_last_selectivity"] == pytest.approx(last[("control", "selectivity")])
    assert numbers["cls_last_random_init_accuracy"] == pytest.approx(
        last[("random_init", "accuracy")])
    assert numbers["cls_last_majority_accuracy"] == pytest.approx(last[("majority", "accuracy")])
    # the trained model's last CLS layer decodes the shape far better than chance
    assert numbers["cls_last_accuracy"] > numbers["cls_last_majority_accuracy"] + 0.3
    assert numbers["cls_last_selectivity"] > 0.3
    assert (report / "figures" / "layer_probes_label.png").is_file()


# --------------------------------------------------------------------------- cka
def test_cka_matrix_is_symmetric_with_unit_diagonal(report):
    cka = _table(report, "cka_layers")
    assert set(cka["kind"]) == {"cls", "pooled"}
    for _, part in cka.groupby("kind"):
        grid = part.pivot_table(index="layer_a", columns="layer_b", values="value",
                                dropna=False).to_numpy()
        assert grid.shape == (5, 5)
        np.testing.assert_allclose(grid, grid.T, atol=1e-10, equal_nan=True)
        finite = np.isfinite(np.diag(grid))
        np.testing.assert_allclose(np.diag(grid)[finite], 1.0, atol=1e-10)
        off = grid[np.isfinite(grid)]
        assert ((off >= -1e-10) & (off <= 1 + 1e-10)).all()
    # CLS at layer 0 is one constant vector: CKA undefined; every mean-patch layer is defined
    cls = cka[cka["kind"] == "cls"]
    assert cls.loc[cls["layer_a"] == 0, "value"].isna().all()
    assert cka.loc[cka["kind"] == "pooled", "value"].notna().all()


def test_mutual_knn_and_random_init_comparison(report):
    knn = _table(report, "mutual_knn_layers")
    mean = knn[knn["kind"] == "pooled"]
    same = mean[mean["layer_a"] == mean["layer_b"]]
    np.testing.assert_allclose(same["value"], 1.0)
    assert knn.loc[(knn["kind"] == "cls") & (knn["layer_a"] == 0), "value"].isna().all()
    cross = _table(report, "cka_vs_random_init")
    # per kind, one CKA and one mutual k-NN row for each of the 5 x 5 layer pairs
    assert len(cross) == 2 * 2 * 5 * 5 and (cross["n"] == N_IMAGES).all()
    assert set(cross["metric"]) == {"cka", "mutual_knn"}
    numbers = _numbers(report, "cka")
    assert numbers["mutual_knn_chance"] == pytest.approx(5 / (N_IMAGES - 1))
    assert -1 <= numbers["cls_patch_cosine_last"] <= 1
    # training moves the last CLS layer away from what the architecture alone computes
    assert numbers["cka_cls_vs_random_init_last"] < 0.95
    curves = _table(report, "similarity_vs_layer")
    assert set(curves["key"]) == {"cls_patch_cosine", "mutual_knn_cls_consecutive",
                                  "mutual_knn_pooled_consecutive"}
    for name in ("cka_heatmap_cls", "cka_heatmap_pooled", "similarity_vs_layer",
                 "similarity_vs_random_init"):
        assert (report / "figures" / f"{name}.png").is_file()


# --------------------------------------------------------------------------- no CLS token
def test_studies_skip_cls_for_a_model_without_it(tmp_path):
    from probing import load_model, open_source
    from probing.extract import extract
    from probing.run.registry import get_analysis
    from probing.run.runner import RunContext

    model = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                       embed_dim=32, depth=2, num_heads=2, class_token=False, global_pool="avg")
    source = open_source("shapes").subset(48)
    store = extract(model, source, kinds=["patch"], pooled="mean", store=tmp_path / "store",
                    progress=False)
    ctx = RunContext(model=model, source=source, store=store, seed=0, quiet=True)
    probes = get_analysis("layer_probes").run(ctx, kinds=["cls", "pooled", "patch"],
                                              patch_target="row", cv=3, solver="ridge")
    assert "no CLS" in probes.text
    table = probes.tables[0].frame
    assert set(table["kind"]) == {"pooled", "patch"}
    # the patch probe predicts each patch's grid row (4 x 4 grid) on every patch of every image
    patch = table[table["kind"] == "patch"]
    assert set(patch["target"]) == {"row"} and (patch["n"] == 48 * 16).all()
    assert {f.name for f in probes.figures} == {"layer_probes_label", "layer_probes_row"}
    cka = get_analysis("cka").run(ctx, k=3)
    assert "no CLS" in cka.text
    assert set(cka.tables[0].frame["kind"]) == {"pooled"}
    assert not any(key.startswith("cls") for key in cka.numbers)


# --------------------------------------------------------------------------- model-level
def _last_cls_probe(model, source, n: int) -> pd.DataFrame:
    from probing.extract import extract
    from probing.probes import probe_layers

    frame = extract(model, source, kinds=["cls"], layers=[model.depth], n_images=n,
                    batch_size=256, progress=False)
    return probe_layers(frame, "label", "cls", control=False).set_index("probe")


def test_demo_last_cls_probe_beats_majority_by_a_wide_margin(demo_model):
    from probing import open_source

    result = _last_cls_probe(demo_model, open_source("shapes"), 400)
    assert result.loc["task", "n"] == 400
    assert result.loc["task", "value"] >= 0.85
    assert result.loc["task", "value"] - result.loc["majority", "value"] >= 0.5


def test_mnist_vit_last_cls_probe_is_at_least_95_percent(mnist_model, mnist_source):
    result = _last_cls_probe(mnist_model, mnist_source, 2000)
    assert result.loc["task", "n"] == 2000
    assert result.loc["task", "value"] >= 0.95


def test_layer_probes_of_embed_and_a_block_probe_those_sites(tmp_path):
    """Regression (issue 11, defect 1): ``layers = ["embed", 1]`` resolved to labels
    ``[-1, 1]`` that were resolved again as a selection (-1 = last block) by the store read,
    the probe views and the random-init extraction: no embed row, block 1 reported twice."""
    from probing import load_model, open_source
    from probing.extract import extract
    from probing.frames import embedding_matrix
    from probing.run.registry import get_analysis
    from probing.run.runner import RunContext
    from probing.selection import LAYER_EMBED

    model = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                       embed_dim=32, depth=3, num_heads=2)
    source = open_source("shapes").subset(30)
    store = extract(model, source, layers=["embed", "all"], kinds=["cls", "patch"],
                    pooled="mean", store=tmp_path / "store", progress=False)
    ctx = RunContext(model=model, source=source, store=store, seed=0, quiet=True)
    assert set(ctx.tokens("patch", ctx.layers(["embed", 1]))["layer"]) == {LAYER_EMBED, 1}
    section = get_analysis("layer_probes").run(ctx, kinds=["pooled"], layers=["embed", 1],
                                               cv=3, solver="ridge")
    table = section.tables[0].frame
    assert sorted(table["layer"].unique()) == [LAYER_EMBED, 1]
    assert (table.groupby(["layer", "probe", "metric"]).size() == 1).all()
    # the random-init copy was extracted at the same sites (embed is patch tokens only there)
    random = ctx.extract(ctx.random_init_model(), kinds=["pooled"], layers=ctx.layers(
        ["embed", 1]), pooled="mean", n_images=30)
    assert set(random["layer"]) == {LAYER_EMBED, 1}
    direct = extract(ctx.random_init_model(), source, layers="embed", kinds=["pooled"],
                     pooled="mean", progress=False)
    np.testing.assert_array_equal(embedding_matrix(random[random["layer"] == LAYER_EMBED]),
                                  embedding_matrix(direct))
