"""The Dask runner gives the same store and results.json as the in-process runner, and resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from probing import EmbeddingStore
from probing.errors import ConfigError
from probing.run.runner import run_spec

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
title = "dask equality"
seed = 3
output = "{out}"
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = 48

[capture]
kinds = ["cls", "patch"]
pooled = "mean"
layers = [0, 2, 4]
batch_size = 8
shard_size = 8

[analyses.embedding_map]
methods = ["pca"]
layers = [0, 4]

[analyses.layer_probes]
cv = 3
layers = [0, 2, 4]
random_init = false
"""


def _spec(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(SPEC.format(out=tmp / f"report-{name}", store=tmp / f"stores-{name}"))
    return path


def _assert_same_store(a: EmbeddingStore, b: EmbeddingStore) -> None:
    assert a.done_shards() == b.done_shards() == list(range(6))
    assert a.kinds() == b.kinds() and a.layers() == b.layers()
    left, right = a.read(), b.read()
    assert not right.duplicated(["image_id", "layer", "kind", "token"]).any()
    pd.testing.assert_frame_equal(left, right)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("dask")
    local = run_spec(_spec(tmp, "local"), quiet=True)
    dask = run_spec(_spec(tmp, "dask"), workers=2, quiet=True)
    return tmp, local, dask


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # workers and client find analyses/ the same way
    yield mp
    mp.undo()


@pytest.mark.slow
def test_dask_run_equals_in_process_run(runs):
    _, local, dask = runs
    assert not local.reused_store and not dask.reused_store
    _assert_same_store(local.store, dask.store)
    assert (local.report_dir / "results.json").read_bytes() == \
        (dask.report_dir / "results.json").read_bytes()
    for name in ("tables/embedding_map_variance.csv",):
        path = local.report_dir / name
        if path.exists():
            assert path.read_bytes() == (dask.report_dir / name).read_bytes()
    assert not (dask.store.path / ".lock").exists()
    assert not list(dask.store.path.rglob("*.tmp"))


@pytest.mark.slow
def test_dask_resume_redoes_only_missing_shards(runs):
    tmp, local, dask = runs
    store = dask.store.path
    # a killed worker: shard 1 lost its marker (files written), shard 4 lost files and marker,
    # shard 5 has a half-written temporary and no marker
    (store / "_shards" / "shard-00001.json").unlink()
    for f in store.rglob("part-00004.parquet"):
        f.unlink()
    (store / "_shards" / "shard-00004.json").unlink()
    (store / "_shards" / "shard-00005.json").unlink()
    (store / "kind=cls" / "layer=0" / ".part-00005.parquet.999.tmp").write_bytes(b"partial")
    before = {s: (store / "_shards" / f"shard-{s:05d}.json").stat().st_mtime_ns
              for s in (0, 2, 3)}
    shutil.rmtree(dask.report_dir)
    again = run_spec(_spec(tmp, "dask"), workers=2, quiet=True)
    assert not again.reused_store
    for s, mtime in before.items():  # complete shards were not rewritten
        assert (store / "_shards" / f"shard-{s:05d}.json").stat().st_mtime_ns == mtime
    _assert_same_store(local.store, EmbeddingStore(store))
    assert not list(store.rglob("*.tmp"))
    assert (local.report_dir / "results.json").read_bytes() == \
        (again.report_dir / "results.json").read_bytes()


def test_in_memory_model_cannot_go_to_workers():
    from probing import load_model
    from probing.run.distributed import model_recipe

    with pytest.raises(ConfigError, match="cannot be re-created on Dask workers"):
        model_recipe(load_model("demo"))


def test_workers_and_scheduler_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        run_spec(_spec(tmp_path, "x"), workers=2, scheduler="tcp://127.0.0.1:1", quiet=True)
    with pytest.raises(ConfigError, match="workers=0 is invalid"):
        run_spec(_spec(tmp_path, "x"), workers=0, quiet=True)
