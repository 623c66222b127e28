"""Nulls and intervals in the studies: raw-pixel probe, positional null, bootstrap columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SPEC = """
title = "nulls test"
seed = 5
output = "unused"
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = 64

[capture]
kinds = ["cls", "patch"]
pooled = "mean"
attention = true
batch_size = 64

[analyses.layer_probes]
kinds = ["cls"]
layers = [0, 4]
cv = 4
solver = "ridge"
random_init = false

[analyses.cka]
kinds = ["pooled"]
layers = [0, 2, 4]
k = 5
random_init = false
n_boot = 40

[analyses.pe_similarity]
metrics = ["cosine"]
n_null = 19

[analyses.pe_decay]
n_null = 19

[analyses.attention_distance]
max_images = 16
n_boot = 50
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, run_spec_text):
    tmp = tmp_path_factory.mktemp("nulls")
    result, numbers = run_spec_text(tmp, SPEC, "report")
    return result.report_dir, numbers


def _table(report, name: str) -> pd.DataFrame:
    return pd.read_csv(report[0] / "tables" / f"{name}.csv")


def test_raw_pixel_probe_matches_sklearn_on_the_same_folds(report):
    """sklearn's RidgeClassifier (targets +-1) on standardised pixels, fold by fold: the same
    objective as the toolkit's closed-form ridge probe (one-hot targets) up to a factor 2."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    from probing import load_model
    from probing.data import iter_batches, open_source
    from probing.probes.cv import group_folds

    table = _table(report, "layer_probes")
    pixels = table[table["probe"] == "raw_pixels"]
    assert sorted(pixels["layer"]) == [0, 4] and pixels["value"].nunique() == 1
    row = pixels.iloc[0]
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["n"] == 64
    model = load_model("demo")
    source = open_source("shapes", n=64)
    batch = next(iter(iter_batches(source, model.data_config, 64)))
    X = batch.images.reshape(64, -1).numpy().astype(np.float64)
    y = source.labels().set_index("image_id").loc[batch.image_ids, "label"].to_numpy()
    fold = group_folds(batch.image_ids, 4, seed=5)
    scores = []
    for f in range(4):
        train, test = fold != f, fold == f
        scaler = StandardScaler().fit(X[train])
        clf = RidgeClassifier(alpha=1.0).fit(scaler.transform(X[train]), y[train])
        scores.append(np.mean(clf.predict(scaler.transform(X[test])) == y[test]))
    assert row["value"] == pytest.approx(np.mean(scores), abs=1e-9)


def test_cka_intervals_bracket_the_estimate(report):
    cka = _table(report, "cka_layers")
    off = cka[cka["layer_a"] != cka["layer_b"]]
    assert (off["ci_low"] <= off["value"] + 1e-9).all()
    assert (off["value"] <= off["ci_high"] + 1e-9).all()
    assert (off["ci_high"] > off["ci_low"]).all() and (cka["n_boot"] == 40).all()
    diag = cka[cka["layer_a"] == cka["layer_b"]]
    np.testing.assert_allclose(diag[["ci_low", "ci_high"]].to_numpy(), 1.0)


def test_positional_sections_state_the_null_test(report):
    summary = _table(report, "pe_decay_summary").set_index("key")
    p = summary.loc["learned", "p_value"]
    assert 1 / 20 <= p <= 1 and "random_null" in summary.index
    assert summary.loc["learned", "null_slope_low"] <= summary.loc["learned", "null_slope_high"]
    html = (report[0] / "index.html").read_text()
    assert html.count("from random at the 5% level") == 1
    assert html.count("from a random table of the same norms at the 5% level") == 1
    assert report[1]["pe_decay"]["learned_decay_null_p"] == pytest.approx(p)
    assert (report[0] / "figures" / "pe_similarity_cosine_null.png").exists()


def test_attention_distance_has_bootstrap_intervals(report):
    table = _table(report, "attention_distance_both")
    for tag in ("raw", "renorm"):
        assert (table[f"ci_low_{tag}"] <= table[f"distance_px_{tag}"] + 1e-9).all()
        assert (table[f"distance_px_{tag}"] <= table[f"ci_high_{tag}"] + 1e-9).all()
