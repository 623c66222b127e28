"""Token frames, embedding_matrix, the parquet store and extraction into it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probing import (
    ConfigError,
    EmbeddingStore,
    LayoutError,
    SchemaError,
    StoreError,
    TokenLayout,
    embedding_matrix,
    extract,
    load_model,
    to_frame,
    validate_frame,
)
from probing.frames import frame_from_table, frame_to_table
from probing.selection import LAYER_EMBED, LAYER_NORM, LayerLabels, resolve_layers


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                      depth=2)


def test_embedding_matrix_zero_copy_and_values():
    layout = TokenLayout(grid=(2, 2), patch_size=(4, 4))
    x = np.random.default_rng(0).random((3, 5, 6)).astype(np.float32)
    frame = to_frame(x, layout, 1, np.arange(3))
    m = embedding_matrix(frame)
    assert m.shape == (15, 6) and m.flags.c_contiguous
    assert np.shares_memory(m, embedding_matrix(frame))
    np.testing.assert_array_equal(m, x.reshape(15, 6))
    sub = frame[frame["kind"] == "patch"].iloc[2:5]
    np.testing.assert_array_equal(embedding_matrix(sub), x[:, 1:].reshape(12, 6)[2:5])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 9), seed=st.integers(0, 1000),
       half=st.booleans(), start=st.integers(0, 20), stop=st.integers(0, 40))
def test_embedding_matrix_equals_slow_reference(n, d, seed, half, start, stop):
    layout = TokenLayout(grid=(1, 3), patch_size=(2, 2), prefix=("cls",))
    dtype = np.float16 if half else np.float32
    x = np.random.default_rng(seed).standard_normal((n, 4, d)).astype(dtype)
    frame = to_frame(x, layout, 0, np.arange(n))
    sub = frame.iloc[start:stop]
    slow = np.array([np.asarray(v, dtype=dtype) for v in sub["emb"].tolist()]).reshape(-1, d)
    np.testing.assert_array_equal(embedding_matrix(sub), slow)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), d=st.integers(1, 6), seed=st.integers(0, 99),
       str_ids=st.booleans(), with_nan_label=st.booleans())
def test_frame_parquet_round_trip(tmp_path_factory, n, d, seed, str_ids, with_nan_label):
    import pyarrow.parquet as pq

    layout = TokenLayout(grid=(2, 1), patch_size=(2, 2), prefix=("cls", "reg"))
    rng = np.random.default_rng(seed)
    ids = np.array([f"img{i}" for i in range(n)]) if str_ids else np.arange(n) * 7
    labels = pd.DataFrame({"label": rng.choice(["a", "b"], n),
                           "score": np.where(rng.random(n) < 0.5, np.nan, 1.0)
                           if with_nan_label else rng.random(n)})
    frame = to_frame(rng.standard_normal((n, 4, d)).astype(np.float32), layout, 2, ids,
                     labels=labels)
    path = tmp_path_factory.mktemp("rt") / "f.parquet"
    pq.write_table(frame_to_table(frame), path)
    back = frame_from_table(pq.read_table(path))
    pd.testing.assert_frame_equal(back, frame)
    assert back["row"].isna().sum() == 2 * n  # prefix tokens have null row/col


def test_validate_frame_rejects_missing_and_non_finite():
    layout = TokenLayout(grid=(1, 1), patch_size=(2, 2))
    x = np.ones((2, 2, 3), dtype=np.float32)
    x[1, 1, 0] = np.nan
    frame = to_frame(x, layout, 0, [0, 1])
    with pytest.raises(SchemaError, match="NaN or inf"):
        validate_frame(frame, finite=True)
    with pytest.raises(SchemaError, match=r"lacks column\(s\) .row."):
        validate_frame(frame.drop(columns="row"))
    with pytest.raises(SchemaError, match="'kind'"):
        validate_frame(frame.assign(kind=frame["kind"].astype(str)))
    with pytest.raises(SchemaError, match="'layer'"):
        validate_frame(frame.assign(layer=1.5))
    assert validate_frame(frame) is frame


def test_extract_tensor_input_and_order(tiny):
    x = torch.randn(3, 3, 32, 32)
    frame = extract(tiny, x, layers=[0, -1], kinds=("cls", "patch"), progress=False)
    assert frame["image_id"].unique().tolist() == [0, 1, 2]
    assert frame.groupby(["layer", "kind"], observed=True).size().to_dict() == {
        (0, "cls"): 3, (0, "patch"): 48, (2, "cls"): 3, (2, "patch"): 48}
    first = frame[(frame["layer"] == 2) & (frame["kind"] == "cls")]
    with torch.inference_mode():
        feats = tiny.model.forward_intermediates(x, indices=[1], intermediates_only=True,
                                                 return_prefix_tokens=True, output_fmt="NLC")
    np.testing.assert_allclose(embedding_matrix(first), feats[0][1][:, 0].numpy(), atol=1e-5)


def test_extract_cls_only_has_only_cls_rows(tiny):
    frame = extract(tiny, "shapes:n=10", layers=-1, kinds="cls", progress=False)
    assert set(frame["kind"].astype(str)) == {"cls"} and len(frame) == 10
    assert "label" in frame.columns and frame["layer"].unique().tolist() == [2]


def test_extract_bad_batch_size(tiny):
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="batch_size"):
            extract(tiny, "shapes:n=4", batch_size=bad)


def test_store_equals_in_memory_and_resumes(tiny, tmp_path):
    mem = extract(tiny, "shapes:n=30", pooled="mean", batch_size=8, progress=False)
    store = extract(tiny, "shapes:n=30", pooled="mean", batch_size=8, store=tmp_path / "s",
                    shard_size=7, progress=False)
    assert store.done_shards() == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(store.read(), mem)
    # drop two shards' markers and files: a rerun recomputes exactly those
    for shard in (1, 3):
        (tmp_path / "s" / "_shards" / f"shard-{shard:05d}.json").unlink()
        for f in (tmp_path / "s").rglob(f"part-{shard:05d}.parquet"):
            f.unlink()
    assert store.done_shards() == [0, 2, 4]
    extract(tiny, "shapes:n=30", pooled="mean", batch_size=8, store=store, shard_size=7,
            progress=False)
    pd.testing.assert_frame_equal(store.read(), mem)
    sub = store.read(kind="cls", layer=1, columns=["image_id", "layer", "kind", "emb"],
                     filters=[("image_id", "<", 5)])
    assert len(sub) == 5 and set(sub["layer"]) == {1}


def test_store_refuses_other_model_and_newer_schema(tiny, tmp_path):
    extract(tiny, "shapes:n=4", store=tmp_path / "s", progress=False, layers=-1)
    other = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                       depth=3)
    with pytest.raises(StoreError, match="different model"):
        extract(other, "shapes:n=4", store=tmp_path / "s", progress=False, layers=-1)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="newer"):
        extract(tiny, "shapes:n=4", store=tmp_path / "s", progress=False, layers=-1)


def test_store_attention_round_trip(tiny, tmp_path):
    tokens, att = extract(tiny, "shapes:n=5", layers=[1], kinds="cls", attention=True,
                          progress=False)
    store = extract(tiny, "shapes:n=5", layers=[1], kinds="cls", attention=True,
                    store=tmp_path / "s", progress=False)
    arr, ids, layers = store.attention()
    assert arr.shape == (5, 2, 3, 17, 17) and layers == [1, 2]
    np.testing.assert_allclose(arr.sum(-1), 1.0, atol=1e-5)
    pd.testing.assert_frame_equal(store.read_attention(), att)


def test_store_lock_refuses_live_holder_and_recovers_stale(tmp_path):
    a = EmbeddingStore(tmp_path / "s")
    a.lock()
    b = EmbeddingStore(tmp_path / "s")
    with pytest.raises(StoreError, match="locked"):
        b.lock(timeout=0.3, poll=0.1)
    a.unlock()
    b.lock()
    b.unlock()
    lock = tmp_path / "s" / ".lock"
    import socket

    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    (tmp_path / "s" / "manifest.json").write_text("{}")  # a store: its temporaries are cleaned
    dead_tmp = tmp_path / "s" / f".part-00000.parquet.{2**22 + 12345}.tmp"
    dead_tmp.write_text("stale")
    live_tmp = tmp_path / "s" / ".part-00001.parquet.1.tmp"  # pid 1 is alive: not touched
    live_tmp.write_text("in progress")
    a.lock()  # stale lock of a dead process is recovered, its temporaries removed
    assert not dead_tmp.exists() and live_tmp.exists()
    a.unlock()


def test_store_lock_is_reentrant_for_the_same_object(tiny, tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    lock = tmp_path / "s" / ".lock"
    with store:
        extract(tiny, "shapes:n=3", layers=[1], kinds="cls", store=store, progress=False)
        # the inner extract released only its own level: the lock is still ours ...
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(StoreError, match="locked"):  # ... and another object is refused
            EmbeddingStore(tmp_path / "s").lock()
    assert not lock.exists()
    assert store.read(kind="cls", layer=1).shape[0] == 3
    store.unlock()  # one more release than takes is harmless
    store.lock()
    store.unlock()
    assert not lock.exists()


def test_store_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        EmbeddingStore(f)


def test_empty_old_lock_is_stale_and_unwritable_store_is_a_store_error(tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    (tmp_path / "s").mkdir()
    lock = tmp_path / "s" / ".lock"
    lock.write_text("")  # a writer killed between creating and filling its lock
    os.utime(lock, (1, 1))
    store.lock()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    store.unlock()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot lock store"):
        EmbeddingStore(tmp_path / "file" / "sub").lock()


def test_store_read_takes_selections_and_names_missing_layers(tiny, tmp_path):
    """Regression (issue 11, defect 2): store.read silently dropped requested layers that are
    not stored, and read a stored -1 (embed) where a selection's -1 means the last block."""
    store = extract(tiny, "shapes:n=3", layers=["embed", 0, 2], kinds=("cls", "patch"),
                    attention=True, store=tmp_path / "s", progress=False)
    assert set(store.read(layer=-1)["layer"]) == {2}  # the last block, not the embed site
    assert set(store.read(kind="patch", layer="embed")["layer"]) == {-1}
    assert set(store.read(layer="all")["layer"]) == {0, 2}
    with pytest.raises(StoreError, match=r"layers \[1\] are not in store"):
        store.read(layer=[1, 2])
    with pytest.raises(StoreError, match=r"\['norm'\] are not in store"):
        store.read(layer="norm")
    assert store.attention(-1)[2] == [2]
    with pytest.raises(LayoutError, match="layer 3 is out of range for 2 blocks"):
        store.read_attention([1, 3])  # the manifest records the model's depth


def test_store_negative_layers_count_from_the_models_last_block(tiny, tmp_path):
    """Regression (issue 11 review, 1): a store holding blocks 0 and 1 of a 2-block model read
    ``-1`` as block 1 (the last block it holds); -1 is the model's last block, block 2."""
    store = extract(tiny, "shapes:n=3", layers=[0, 1], kinds="cls", attention=True,
                    store=tmp_path / "s", progress=False)
    assert store.depth() == 2 and store.manifest["model"]["depth"] == 2
    with pytest.raises(StoreError, match=r"layers \[2\] are not in store .*block 2"):
        store.read(layers=-1)
    assert set(store.read(layers=-2)["layer"]) == {1}
    assert set(store.read_attention(-1)["layer"]) == {2}
    shutil.rmtree(tmp_path / "s" / "attention" / "layer=2")  # attention of block 1 only
    with pytest.raises(StoreError, match=r"layers \[2\] are not in the attention"):
        store.read_attention(-1)
    # a manifest written before the depth was recorded: negative ints are refused, clearly
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    del manifest["model"]["depth"]
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    assert store.depth() is None
    with pytest.raises(ConfigError, match="does not record the model's depth"):
        store.read(layers=-1)
    assert set(store.read(layers=[1, "all"])["layer"]) == {0, 1}


def test_store_all_inside_a_list_is_every_stored_block(tiny, tmp_path):
    """Regression (issue 11 review, 2): ``["all", "embed"]`` asked for every block of the
    model and failed on a store holding some of them; "all" is every stored block."""
    store = extract(tiny, "shapes:n=3", layers=["embed", 0, 2], kinds="patch",
                    store=tmp_path / "s", progress=False)
    assert set(store.read(layers=["all", "embed"])["layer"]) == {LAYER_EMBED, 0, 2}


def test_store_layers_is_the_parameter_name_and_layer_its_old_alias(tiny, tmp_path):
    store = extract(tiny, "shapes:n=3", layers=[0, 2], kinds=("cls", "patch"), attention=True,
                    store=tmp_path / "s", progress=False)
    pd.testing.assert_frame_equal(store.read(kind="cls", layers=2),
                                  store.read(kind="cls", layer=2))
    pd.testing.assert_frame_equal(store.read(kind="cls", layers=2),
                                  store.read(kinds="cls", layers=2))
    assert set(store.read(kind="cls", layers=2)["layer"]) == {2}
    pd.testing.assert_frame_equal(store.read_attention(layers=[1]), store.read_attention(layer=1))
    assert set(store.read_attention(layers=[1])["layer"]) == {1}
    assert store.attention(layers=-1)[2] == [2]
    with pytest.raises(ConfigError, match="layers= and layer= are the same parameter"):
        store.read(layers=1, layer=1)
    with pytest.raises(ConfigError, match="kind= and kinds="):
        store.read(kind="cls", kinds="cls")


@pytest.fixture(scope="module")
def full_store(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "s"
    extract(tiny, "shapes:n=2", layers=["embed", "all", "norm"], kinds=("cls", "patch"),
            attention=True, store=path, progress=False)
    return path


_DEPTH = 2  # of `tiny`
_LABELS = [LAYER_EMBED, LAYER_NORM, *range(_DEPTH + 1)]
_ITEM = st.one_of(st.integers(-(_DEPTH + 1), _DEPTH),
                  st.sampled_from(["embed", "norm", "all", "last"]))


@settings(max_examples=25, deadline=None)
@given(stored=st.sets(st.sampled_from(_LABELS), min_size=1),
       sel=st.one_of(_ITEM, st.lists(_ITEM, min_size=1, max_size=4)))
def test_store_read_is_resolve_layers_within_the_stored_blocks(full_store, stored, sel):
    """A store holding any subset of the model's layers reads a selection as exactly
    ``resolve_layers(sel, depth) & stored``, or raises a StoreError naming what is missing
    (a label named other than through "all"; "all" with no stored block)."""
    items = sel if isinstance(sel, list) else [sel]
    named = [x for x in items if x != "all"]
    named_labels = set(resolve_layers(named, _DEPTH)) if named else set()
    has_all = len(named) < len(items)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        shutil.copytree(full_store, path)
        for label in set(_LABELS) - stored:
            for folder in path.glob(f"*/layer={label}"):  # kind=cls, kind=patch, attention
                shutil.rmtree(folder)
        store = EmbeddingStore(path)
        for held, read in ((stored, lambda: set(store.read(layers=sel)["layer"])),
                           ({v for v in stored if v >= 1},
                            lambda: set(store.read_attention(sel)["layer"]))):
            if not named_labels <= held or (has_all and not any(v >= 0 for v in held)) \
                    or not held:
                with pytest.raises(StoreError, match="are not in|holds no"):
                    read()
            else:
                assert read() == set(LayerLabels(set(resolve_layers(sel, _DEPTH)) & held))


def test_lock_of_another_host_says_how_to_clear_it(tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere-node7"}))
    with pytest.raises(StoreError, match=r"host elsewhere-node7.*delete .*\.lock"):
        store.lock()
    assert (tmp_path / "s" / ".lock").exists()  # never taken over: that host may still run


def test_one_class_per_condition_for_missing_columns():
    """A frame lacking its schema's columns is a SchemaError wherever it is passed; a column
    the user names that is not a label column is a ConfigError wherever it is named."""
    import pandas as pd

    from probing import ConfigError
    from probing.plots import plot_attention_grid, plot_method_maps, plot_probe_layers
    from probing.posenc import halving_distance

    empty = pd.DataFrame({"x": [1]})
    for call in (lambda: plot_attention_grid(empty), lambda: plot_method_maps(empty),
                 lambda: plot_probe_layers(empty), lambda: halving_distance(empty)):
        with pytest.raises(SchemaError, match="lacks column"):
            call()
    from probing.frames import require_label_column

    with pytest.raises(ConfigError, match=r"color='shpe' is not a label column; pick one of "
                                          r"shape, colour\. Did you mean 'shape'"):
        require_label_column(["image_id", "shape", "colour", "emb"], "shpe", "color")


def test_store_part_encodings_and_direct_read(tiny, tmp_path):
    """Part files: float values BYTE_STREAM_SPLIT, no dictionary pages on floats, dictionary
    encoding on strings; read back exactly, and by pandas directly as the docs say."""
    import pyarrow.parquet as pq

    from probing.store import parquet_options

    store = extract(tiny, "shapes:n=5", layers=[1], kinds=["cls", "patch"], store=tmp_path / "s",
                    progress=False)
    part = next((tmp_path / "s" / "kind=patch").glob("layer=1/part-*.parquet"))
    meta = pq.ParquetFile(part).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in columns["emb.list.element"].encodings
    assert not columns["emb.list.element"].has_dictionary_page
    assert columns["kind"].has_dictionary_page
    direct = pd.read_parquet(part, dtype_backend="pyarrow")
    stored = store.read("patch", layers=LayerLabels([1]))
    np.testing.assert_array_equal(embedding_matrix(direct), embedding_matrix(stored))
    labels = pq.read_table(next((tmp_path / "s" / "labels").glob("*.parquet")))
    options = parquet_options(labels)
    assert "label" in options["use_dictionary"] and "image_id" not in options["use_dictionary"]


def test_store_reads_of_a_few_images_decode_their_row_groups(tiny, tmp_path, monkeypatch):
    """Small row groups in image order: a filtered read equals the filter applied to a full
    read, and skips the row groups of other images."""
    import pyarrow.parquet as pq

    from probing import store as store_module

    monkeypatch.setattr(store_module, "ROW_GROUP_BYTES", 4 * 17 * 17 * 4)  # ~ 4 rows a group
    store = extract(tiny, "shapes:n=6", layers=[1], kinds="cls", attention=True,
                    store=tmp_path / "s", progress=False)
    part = next((tmp_path / "s" / "attention").glob("layer=*/part-*.parquet"))
    meta = pq.ParquetFile(part).metadata
    stats = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    ranges = [(s.min, s.max) for s in stats]
    assert len(ranges) >= 3 and all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    full = store.read_attention()
    want = full["image_id"].unique()[[1, 4]].tolist()
    some = store.read_attention(filters=[("image_id", "in", want)])
    expected = full[full["image_id"].isin(want)].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, expected)
