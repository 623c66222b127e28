"""One layer at a time: store reads of one layer equal the slice of a full read, and the
analyses that read layer by layer give the same tables as the whole-frame implementation did.

The reference tables in ``tests/data/layer_reads/`` were written by the whole-frame
implementation (before the per-layer reads) with ``python tests/unit/test_layer_reads.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "layer_reads"
#: The analyses and parameters compared (small, so the test takes seconds).
PARAMS = {
    "layer_probes": dict(kinds=["cls", "pooled", "patch"], cv=3, solver="ridge", mdl=False),
    "cka": dict(k=4, n_boot=20),
    "position_probes": dict(max_images=12, patches_per_image=8, cv=3),
    "embedding_map": dict(methods=["pca"], layers="all"),
}
N_IMAGES = 24


def _store(root: Path):
    from probing import extract, load_model
    from probing.data import open_source

    model = load_model("demo")
    source = open_source("shapes").subset(N_IMAGES)
    store = extract(model, source, store=root / "store", kinds=("cls", "patch"),
                    pooled="mean", batch_size=8, shard_size=8, progress=False)
    return model, source, store


def analysis_tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every table of the analyses in :data:`PARAMS` on a small demo-model store."""
    from probing.run.context import RunContext, run_analysis
    from probing.run.registry import load_analysis

    model, source, store = _store(root)
    # the references were written with the first n images (before the stratified default)
    ctx = RunContext(model=model, source=source, store=store, seed=0, batch_size=8, quiet=True,
                     selection="first")
    analyses = Path(__file__).resolve().parents[2] / "analyses"
    out = {}
    for name, params in PARAMS.items():
        section = run_analysis(load_analysis(analyses / f"{name}.py").run, ctx, params,
                               name=name)
        for table in section.tables:
            out[table.name] = table.frame.reset_index(drop=True)
        out[f"{name}_numbers"] = pd.DataFrame(
            {"name": list(section.numbers), "value": list(section.numbers.values())})
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("layer_reads"))[2]


def test_one_layer_read_equals_slice_of_full_read(store):
    full = store.read(kind=["cls", "patch"])
    for layer in (0, 2, store.layers()[-1]):
        one = store.read(kind=["cls", "patch"], layers=[layer])
        part = full[full["layer"] == layer].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, part)


def test_iter_layers_yields_each_layer_as_its_read(store):
    from probing import load_model
    from probing.run.context import RunContext

    ctx = RunContext(model=load_model("demo"), source=None, store=store)
    seen = []
    for layer, frame in ctx.iter_layers("patch", "all"):
        seen.append(layer)
        assert frame["layer"].unique().tolist() == [layer]
        pd.testing.assert_frame_equal(frame, store.read(kind="patch", layers=[layer]))
    assert seen == list(ctx.layers("all"))


def test_tokens_of_some_images_equal_the_filtered_full_read(store):
    """ctx.tokens(image_ids=) reads only those images' row groups and gives exactly the rows
    a filter of the full read keeps, in the same order."""
    from probing import load_model
    from probing.run.context import RunContext

    ctx = RunContext(model=load_model("demo"), source=None, store=store)
    ids = store.labels()["image_id"].to_numpy()
    want = ids[[len(ids) - 1, 3, 0]]  # any order: rows come in store order
    for kind in ("cls", ["cls", "patch"]):
        full = ctx.tokens(kind, "all")
        some = ctx.tokens(kind, "all", image_ids=want)
        expected = full[full["image_id"].isin(want)].reset_index(drop=True)
        pd.testing.assert_frame_equal(some, expected)
    for layer, frame in ctx.iter_layers("patch", "all", image_ids=want[:1]):
        assert set(frame["image_id"]) == {want[0]} and (frame["layer"] == layer).all()


def test_tokens_of_some_images_without_labels_equal_the_filtered_full_read(store):
    from probing import load_model
    from probing.run.context import RunContext

    ctx = RunContext(model=load_model("demo"), source=None, store=store)
    ids = np.array([17, 3, 9])  # any order: rows come in store order
    full = ctx.tokens("patch", [2])
    got = ctx.tokens("patch", [2], image_ids=ids, labels=False)
    want = full[full["image_id"].isin(ids)].reset_index(drop=True)
    assert sorted(got["image_id"].unique()) == [3, 9, 17] and "label" in full.columns
    pd.testing.assert_frame_equal(got, want[[c for c in want.columns if c in got.columns]])
    assert set(full.columns) - set(got.columns) == set(store.labels().columns) - {"image_id"}


def test_context_labels_are_read_once_and_handed_out_as_copies(store, monkeypatch):
    from probing import load_model
    from probing.run.context import RunContext

    ctx = RunContext(model=load_model("demo"), source=None, store=store)
    reads = []
    real = type(store).labels
    monkeypatch.setattr(type(store), "labels", lambda self: reads.append(1) or real(self))
    first = ctx.labels()
    first.loc[0, "label"] = "changed by a caller"
    second = ctx.labels()
    pd.testing.assert_frame_equal(second, real(store))
    assert len(reads) == 1


def test_one_layer_sweep_equals_that_layers_rows_of_the_sweep(store):
    """position_probes sweeps one layer at a time (each layer read once for both probes): the
    folds depend only on the images, so the rows equal those of one sweep over every layer."""
    from probing.probes import probe_layers
    from probing.selection import LayerLabels

    frame = store.read(kind="patch")
    layers = LayerLabels(store.layers("patch"))
    whole = probe_layers(frame, ["row", "col"], "patch", task="regression", cv=3,
                         control=False, random_frame=frame)
    one = pd.concat([probe_layers(lambda _k, f=frame[frame["layer"] == k]: f, ["row", "col"],
                                  "patch", task="regression", layers=LayerLabels([k]), cv=3,
                                  control=False, random_frame=frame) for k in layers],
                    ignore_index=True)
    pd.testing.assert_frame_equal(one, whole)


def test_probe_layers_per_layer_function_equals_whole_frame(store):
    from probing.probes import probe_layers
    from probing.selection import LayerLabels

    frame = store.read(kind=["cls", "pooled"])
    layers = LayerLabels(store.layers("cls"))
    whole = probe_layers(frame, "label", ["cls", "pooled"], cv=3, solver="ridge",
                         random_frame=frame)
    lazy = probe_layers(lambda k: store.read(kind=["cls", "pooled"], layers=[k]), "label",
                        ["cls", "pooled"], layers=layers, cv=3, solver="ridge",
                        random_frame=lambda k: store.read(kind=["cls", "pooled"], layers=[k]))
    pd.testing.assert_frame_equal(lazy, whole)


def test_logistic_on_too_many_rows_is_refused_naming_ridge(store, monkeypatch):
    from probing.errors import ConfigError
    from probing.probes import layers as probe_module

    frame = store.read(kind="patch", layers=[0])
    monkeypatch.setattr(probe_module, "LOGISTIC_MAX_ROWS", len(frame) - 1)
    with pytest.raises(ConfigError, match="solver='ridge'"):
        probe_module.probe_layers(frame, "label", "patch", cv=3, solver="logistic")
    probe_module.probe_layers(frame, "label", "patch", cv=3, solver="ridge")  # allowed


def _undefined_shares(name: str, want: pd.DataFrame) -> pd.DataFrame:
    """The references predate undefined variance shares: the CLS token at layer 0 is the same
    vector for every image, and its share on the first two components read 0 there; it is now
    NaN in the table and has no key number (there is no variance to share out)."""
    if name == "embedding_map_numbers":
        gone = want["name"] == "cls_layer0_pc1_2_variance"
        assert (want.loc[gone, "value"] == 0).all() and gone.sum() == 1
        return want[~gone].reset_index(drop=True)
    flat = (want["kind"] == "cls") & (want["layer"] == 0)
    assert (want.loc[flat, ["pc1", "pc2"]] == 0).all().all() and flat.sum() == 1
    want = want.copy()
    want.loc[flat, ["pc1", "pc2"]] = np.nan
    return want


@pytest.mark.parametrize("name", ["layer_probes", "cka_layers", "mutual_knn_layers",
                                  "cka_vs_random_init", "position_probes",
                                  "embedding_map_variance", "layer_probes_numbers",
                                  "cka_numbers", "position_probes_numbers",
                                  "embedding_map_numbers"])
def test_analysis_tables_unchanged(name, tables):
    want = pd.read_parquet(REFERENCE / f"{name}.parquet")
    got = tables[name]
    # the references predate the `solver` column (which solver each probe used): every
    # other column must be as before
    if "solver" in got.columns and "solver" not in want.columns:
        assert set(got["solver"]) == {"ridge"}  # the solver the reference was run with
        got = got.drop(columns="solver")
    if name.startswith("embedding_map"):
        want = _undefined_shares(name, want)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for column in want.columns:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if pd.api.types.is_float_dtype(want[column].dtype):
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-12,
                                       atol=1e-12, equal_nan=True, err_msg=f"{name}.{column}")
        else:
            text = [[None if pd.isna(x) else str(x) for x in v] for v in (a, b)]
            assert text[0] == text[1], f"{name}.{column}"



def test_a_control_store_of_many_layers_holds_bounded_batches_and_equal_vectors(
        store, tmp_path, monkeypatch):
    from probing import load_model
    from probing.data import open_source
    from probing.run import context
    from probing.run.context import RunContext, control_batches

    model = load_model("demo")
    source = open_source("shapes").subset(N_IMAGES)
    # an image's vectors over the demo's 5 layers: 5 x (65 + 1) x 64 x 4 bytes = 84,480
    per_image = 5 * (model.layout.n_tokens + 1) * model.embed_dim * 4
    monkeypatch.setattr(context, "CONTROL_SHARD_BYTES", 3 * per_image)
    assert control_batches(model, 5, ("cls", "patch"), 8) == (3, 3)
    assert control_batches(model, 1, ("cls", "patch"), 8) == (8, 8)  # 15 fit: one batch
    # CLS (+ pooled) rows only: 99 images fit, whole batches of 8 of them
    assert control_batches(model, 5, ("cls",), 8) == (8, 96)
    ctx = RunContext(model=model, source=source, store=store, seed=0, batch_size=8)
    control = ctx.extract_store(model, kinds=("cls", "patch"), layers="all")
    assert control.manifest["shard_size"] == 3
    # the same vectors as an extraction with the run's batch of 8 (batches do not mix images)
    for kind in ("cls", "patch"):
        pd.testing.assert_frame_equal(control.read(kind=kind, labels=False),
                                      store.read(kind=kind, labels=False))
    # other bounds (another version's) give another control store, not a shard-size error
    monkeypatch.setattr(context, "CONTROL_SHARD_BYTES", 5 * per_image)
    other = RunContext(model=model, source=source, store=store, seed=0, batch_size=8
                       ).extract_store(model, kinds=("cls", "patch"), layers="all")
    assert other.manifest["shard_size"] == 5 and other.path != control.path
    pd.testing.assert_frame_equal(other.read(kind="patch", labels=False),
                                  control.read(kind="patch", labels=False))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return analysis_tables(tmp_path_factory.mktemp("layer_tables"))


if __name__ == "__main__":  # write the reference tables (run with the old implementation)
    import tempfile

    REFERENCE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in analysis_tables(Path(tmp)).items():
            frame.to_parquet(REFERENCE / f"{name}.parquet")
            print(name, frame.shape, file=sys.stderr)


def test_attention_of_first_images_equals_slice_of_all(tmp_path):
    from probing import extract, load_model
    from probing.data import open_source

    store = extract(load_model("demo"), open_source("shapes").subset(12), store=tmp_path / "s",
                    kinds=("cls",), attention=True, layers=[1, 4], batch_size=4, shard_size=4,
                    progress=False)
    full, ids, layers = store.attention()
    some, some_ids, some_layers = store.attention(max_images=5)
    assert some.shape[0] == 5 and some_layers == layers
    np.testing.assert_array_equal(some_ids, ids[:5])
    np.testing.assert_array_equal(some, full[:5])
