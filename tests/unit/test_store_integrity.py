"""Store identity (one key, one compatibility rule) and integrity (markers list their files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probing import StoreError, extract
from probing.store import EmbeddingStore, manifest_covers, manifest_key, manifest_mismatch

N, SHARD = 16, 8
OPTS = {"layers": [1], "kinds": "cls", "batch_size": 8, "shard_size": SHARD, "progress": False}

ANALYSIS = '''
from probing import embedding_matrix
from probing.sections import Section, Table

NEEDS = {"kinds": ["cls"]}

def run(ctx, layer: int = 1):
    frame = ctx.tokens("cls", [layer])
    x = embedding_matrix(frame)
    table = frame[["image_id"]].assign(norm=(x ** 2).sum(axis=1) ** 0.5)
    return Section(title="cls norms", tables=[Table("cls_norms", table)],
                   numbers={"n_images": float(len(frame)),
                            "mean_norm": float(table["norm"].mean())})
'''


@pytest.fixture(scope="module")
def made(demo_model, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A complete two-shard store and what it reads back."""
    path = tmp_path_factory.mktemp("made") / "s"
    store = extract(demo_model, f"shapes:n={N}", store=path, **OPTS)
    return path, store.read()


@pytest.fixture
def store(made, tmp_path) -> EmbeddingStore:
    """A fresh copy of the complete store (tests damage it)."""
    shutil.copytree(made[0], tmp_path / "s")
    return EmbeddingStore(tmp_path / "s")


def _manifest(**capture) -> dict:
    return {"schema_version": 1, "model": {"fingerprint": "m"}, "preprocessing": {"size": 32},
            "data": {"fingerprint": "d", "n_images": 8}, "shard_size": 8, "layout": {},
            "capture": {"layers": [0, 1, 2], "kinds": ["cls", "patch"], "pooled": "mean",
                        "attention": True, "dtype": "float32", "autocast": None, **capture}}


def test_one_rule_equal_fields_and_superset_fields():
    have = _manifest()
    for field, value in [("autocast", "bf16"), ("dtype", "float16"), ("pooled", "model")]:
        need = _manifest(**{field: value})
        assert manifest_mismatch(have, need) == f"capture.{field}"
        assert manifest_key(have) != manifest_key(need)
    other_data = {**_manifest(), "data": {"fingerprint": "e", "n_images": 8}}
    assert manifest_mismatch(have, other_data) == "data"
    # fewer layers / kinds, no attention, no pooled rows: served by the wider store ...
    narrow = _manifest(layers=[2], kinds=["cls"], attention=False, pooled=None)
    assert manifest_covers(have, narrow) and not manifest_covers(narrow, have)
    # ... but never written into it, and a wider request is never served by it
    assert manifest_mismatch(have, narrow, exact=True) == "capture.attention"
    assert manifest_mismatch(have, _manifest(layers=[0, 3])) == "capture.layers"
    # the key is the whole manifest, as it reads back from JSON
    assert manifest_key(have) == manifest_key(json.loads(json.dumps(have)))


def test_autocast_is_part_of_the_store(demo_model, store):
    with pytest.raises(StoreError, match=r"capture\.autocast"):
        extract(demo_model, f"shapes:n={N}", store=store, autocast="bf16", **OPTS)


def test_deleted_part_is_an_error_then_the_next_extract_redoes_that_shard(demo_model, store,
                                                                         made):
    (store.path / "kind=cls" / "layer=1" / "part-00001.parquet").unlink()
    with pytest.raises(StoreError, match=r"shard 1 is damaged \(kind=cls/layer=1/part-00001"
                                         r"\.parquet is missing\).*re-extract"):
        store.read(kind="cls")
    assert store.done_shards() == [0] and not store.shard_done(1)
    assert list(store.damaged_shards()) == [1]
    extract(demo_model, f"shapes:n={N}", store=store, **OPTS)
    assert store.done_shards() == [0, 1]
    pd.testing.assert_frame_equal(store.read(), made[1])


@pytest.mark.parametrize("part", ["kind=cls/layer=1/part-00000.parquet",
                                  "labels/part-00000.parquet"])
def test_truncated_part_is_an_error_naming_the_shard(store, part):
    path = store.path / part
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match=r"shard 0 is damaged .*truncated"):
        store.read(kind="cls")
    if part.startswith("labels"):
        with pytest.raises(StoreError, match="shard 0"):
            store.labels()
    assert store.done_shards() == [1]


def test_marker_lists_files_with_sizes(store):
    marker = json.loads((store.path / "_shards" / "shard-00000.json").read_text())
    files = {p.relative_to(store.path).as_posix(): p.stat().st_size
             for p in store.path.rglob("part-00000.parquet")}
    assert marker["files"] == files and len(files) == 2 and marker["rows"] == SHARD


@pytest.mark.parametrize("content, what", [(b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
                                           (b'{"schema_version": 1', "JSONDecodeError"),
                                           (b"[1, 2]", "JSON list")])
def test_bad_manifest_is_a_store_error_naming_the_file(demo_model, store, content, what):
    (store.path / "manifest.json").write_bytes(content)
    with pytest.raises(StoreError, match=f"manifest.json.*{what}"):
        store.manifest  # noqa: B018
    with pytest.raises(StoreError, match="manifest.json"):
        extract(demo_model, f"shapes:n={N}", store=store, **OPTS)


def _spec(tmp: Path, root: str, seed: int = 0) -> Path:
    path = tmp / f"spec-{root}-{seed}.toml"
    path.write_text(
        f'store = "{(tmp / root).as_posix()}"\n[model]\nspec = "demo"\n[data]\n'
        f'source = "shapes"\nn = {N}\noptions = {{seed = {seed}}}\n[capture]\n'
        f'layers = [1]\nkinds = ["cls"]\npooled = "mean"\nshard_size = {SHARD}\nbatch_size = 8\n'
        '[analyses.cls_norms]\n')
    return path


def test_run_never_reuses_a_store_holding_other_data(tmp_path, monkeypatch):
    from probing.run.runner import run_spec

    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "cls_norms.py").write_text(ANALYSIS)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(tmp_path / "an"))
    own = run_spec(_spec(tmp_path, "a"), out=tmp_path / "r0", quiet=True).store.path
    other = run_spec(_spec(tmp_path, "b", seed=1), out=tmp_path / "r1", quiet=True).store.path
    shutil.rmtree(own)
    shutil.copytree(other, own)  # the run's own store folder now holds seed-1 images
    with pytest.raises(StoreError, match=r"other data \(data differs\)"):
        run_spec(_spec(tmp_path, "a"), out=tmp_path / "r2", quiet=True)


def test_run_redoes_a_damaged_shard(tmp_path, monkeypatch):
    from probing.run.runner import run_spec

    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "cls_norms.py").write_text(ANALYSIS)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(tmp_path / "an"))
    first = run_spec(_spec(tmp_path, "a"), out=tmp_path / "r0", quiet=True)
    ref = json.loads((first.report_dir / "results.json").read_text())
    assert ref["cls_norms"]["n_images"] == N
    next(first.store.path.glob("kind=cls/layer=1/part-00001.parquet")).unlink()
    again = run_spec(_spec(tmp_path, "a"), out=tmp_path / "r1", quiet=True)
    assert not again.reused_store and again.store.path == first.store.path
    got = json.loads((again.report_dir / "results.json").read_text())
    assert got["cls_norms"]["n_images"] == N
    np.testing.assert_allclose(got["cls_norms"]["mean_norm"], ref["cls_norms"]["mean_norm"],
                               rtol=1e-6)


def test_bf16_run_does_not_reuse_the_float32_store(tmp_path, monkeypatch):
    from probing.run.runner import run_spec

    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "cls_norms.py").write_text(ANALYSIS)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(tmp_path / "an"))
    spec = _spec(tmp_path, "a")
    fp32 = run_spec(spec, out=tmp_path / "r0", quiet=True)
    spec.write_text(spec.read_text().replace("batch_size = 8\n",
                                             'batch_size = 8\nautocast = "bf16"\n'))
    bf16 = run_spec(spec, out=tmp_path / "r1", quiet=True)
    assert not bf16.reused_store and bf16.store.path != fp32.store.path
    assert bf16.store.manifest["capture"]["autocast"] == "bf16"
    assert bf16.store.path.name == manifest_key(bf16.store.manifest)


def test_a_store_from_before_the_depth_was_recorded_is_still_used(tmp_path, demo_model):
    import json as _json

    from probing import ShapesSource, extract

    store = extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"],
                    store=tmp_path / "s", progress=False)
    path = store.path / "manifest.json"
    manifest = _json.loads(path.read_text())
    del manifest["model"]["depth"]  # as the previous release wrote it
    path.write_text(_json.dumps(manifest))
    again = extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"], store=store,
                    progress=False)
    assert len(again.read(kinds="cls")) == 4


def test_a_corrupt_part_of_the_listed_size_is_a_store_error(tmp_path, demo_model):
    from probing import ShapesSource, StoreError, extract

    store = extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"],
                    store=tmp_path / "s", progress=False)
    part = next((store.path / "kind=cls" / "layer=1").glob("part-*.parquet"))
    part.write_bytes(b"\0" * part.stat().st_size)  # same size, not parquet any more
    with pytest.raises(StoreError, match=r"part file .*part-00000.parquet is unreadable"):
        store.read(kinds="cls")


def test_a_lock_being_taken_is_never_read_half_written_as_a_foreign_file(tmp_path):
    # the race of two analyses building one control store: the first has created the lock
    # file (empty) and not yet filled it; the second checks the folder meanwhile
    import fcntl
    import os
    import socket
    import threading

    store = EmbeddingStore(tmp_path / "s")
    store.path.mkdir()
    guard = open(store.path / ".lock.guard", "a")
    fcntl.flock(guard, fcntl.LOCK_EX)  # as _try_lock holds it while it writes the lock
    (store.path / ".lock").write_text("")
    outcome = []
    checker = threading.Thread(target=lambda: outcome.append(_claim(store)))
    checker.start()
    checker.join(0.3)
    assert checker.is_alive()  # waits for the writer instead of calling the lock foreign
    (store.path / ".lock").write_text(json.dumps({"pid": os.getpid(),
                                                  "host": socket.gethostname()}))
    fcntl.flock(guard, fcntl.LOCK_UN)
    guard.close()
    checker.join(10)
    assert outcome == [None]
    (store.path / ".lock").write_text("")  # an empty lock nobody is writing: not ours
    with pytest.raises(StoreError, match="not a probing store"):
        store.check_claimable()


def _claim(store: EmbeddingStore):
    try:
        return store.check_claimable()
    except StoreError as exc:
        return exc


def test_a_store_being_created_by_a_live_writer_is_waited_for_not_called_foreign(tmp_path):
    import os
    import subprocess
    import sys

    from probing.store import _HOST_TAG

    store = EmbeddingStore(tmp_path / "s")
    store.path.mkdir()
    tmp = store.path / f".manifest.json.h{_HOST_TAG}-{os.getpid()}.tmp"  # this live process
    tmp.write_text("{")
    store.check_claimable(live_writer_ok=True)  # before the lock: the writer holds it
    with pytest.raises(StoreError, match="not a probing store"):
        store.check_claimable()  # under the lock: no writer may be busy, so it is not ours
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    tmp.rename(store.path / f".manifest.json.h{_HOST_TAG}-{dead}.tmp")  # its writer is gone
    with pytest.raises(StoreError, match="not a probing store"):
        store.check_claimable(live_writer_ok=True)
    (store.path / f".manifest.json.h{_HOST_TAG}-{dead}.tmp").unlink()
    (store.path / "notes.txt").write_text("the user's")  # a user's file: never claimed
    with pytest.raises(StoreError, match="notes.txt"):
        store.check_claimable(live_writer_ok=True)
    assert (store.path / "notes.txt").read_text() == "the user's"
