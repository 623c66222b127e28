"""Crashes, concurrency, offline runs and determinism of whole runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probing import StoreError, extract
from probing.run.runner import run_spec

ROOT = Path(__file__).resolve().parents[2]
SLOW = Path(__file__).resolve().parent / "slow_analyses"


def write_spec(tmp: Path, name: str = "spec", seed: int = 0, n: int = 24,
               analyses: str = "[analyses.slow_step]\n") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f'title = "reliability"\nseed = {seed}\noutput = "{tmp / "report"}"\n'
        f'store = "{tmp / "stores"}"\n[model]\nspec = "demo"\n[data]\nsource = "shapes"\n'
        f'n = {n}\n[capture]\nshard_size = 8\nbatch_size = 8\n'
        '[analyses.embedding_map]\nmethods = ["pca", "tsne"]\nmax_points = 24\n'
        '[analyses.layer_probes]\ncv = 3\n' + analyses)
    return path


def _env(**extra: str) -> dict:
    env = {**os.environ, "PROBING_ANALYSES_PATH": str(SLOW), **extra}
    return env


def _kill_when(marker: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[1] if proc.stderr else ""
            pytest.fail(f"run ended (rc={proc.returncode}) before the kill point: {out}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _report_bytes(report: Path) -> dict[str, bytes]:
    files = [report / "results.json", *sorted((report / "tables").glob("*.csv"))]
    return {p.name: p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted run of the same spec."""
    tmp = tmp_path_factory.mktemp("ref")
    os.environ["PROBING_ANALYSES_PATH"] = str(SLOW)
    try:
        result = run_spec(write_spec(tmp), quiet=True)
    finally:
        del os.environ["PROBING_ANALYSES_PATH"]
    return _report_bytes(result.report_dir)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["analysis", "report"])
def test_sigkill_during_analysis_or_report_then_rerun(tmp_path, where, reference):
    spec = write_spec(tmp_path)
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-m", "probing.cli", "--quiet", "run", str(spec)], cwd=ROOT,
        env=_env(PROBING_TEST_STALL=where, PROBING_TEST_MARKER=str(marker)),
        stderr=subprocess.PIPE, text=True)
    _kill_when(marker, proc)
    report = tmp_path / "report"
    assert not (report / "index.html").exists(), "a killed run left a complete-looking report"
    rerun = subprocess.run([sys.executable, "-m", "probing.cli", "--quiet", "run", str(spec)],
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _report_bytes(report) == reference
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.")]
    assert not leftovers, f"stale temporary report folders: {leftovers}"
    assert not list((tmp_path / "stores").rglob("*.tmp"))


def test_two_writers_on_one_store(tmp_path):
    from probing import EmbeddingStore

    holder = EmbeddingStore(tmp_path / "s")
    holder.lock()  # another live process would hold it the same way
    try:
        with pytest.raises(StoreError, match="locked by process"):
            extract("demo", "shapes:n=4", store=tmp_path / "s", progress=False)
        # a waiting writer gets the store once the holder is done
        import threading

        threading.Timer(0.5, holder.unlock).start()
        store = extract("demo", "shapes:n=4", store=tmp_path / "s", progress=False,
                        lock_timeout=30)
        assert store.done_shards() == [0]
    finally:
        holder.unlock()


def test_runs_make_no_network_connection(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    spec = write_spec(tmp_path, analyses="")
    result = run_spec(spec, quiet=True)
    assert (result.report_dir / "index.html").exists()
    # a local checkpoint of a timm architecture, too
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    local = tmp_path / "local.toml"
    local.write_text(
        f'output = "{tmp_path / "local-report"}"\nstore = "{tmp_path / "stores"}"\n'
        f'[model]\nspec = "{tmp_path / "w.safetensors"}"\narch = "vit_tiny_patch16_224"\n'
        'options = { img_size = 32, patch_size = 8, depth = 2 }\n'
        '[data]\nsource = "digits"\nn = 20\n[analyses.embedding_map]\nmethods = ["pca"]\n')
    assert (run_spec(local, quiet=True).report_dir / "results.json").exists()


def test_same_spec_fresh_stores_identical_other_seed_differs(tmp_path):
    a = run_spec(write_spec(tmp_path / "a", analyses=""), quiet=True).report_dir
    b = run_spec(write_spec(tmp_path / "b", analyses=""), quiet=True).report_dir
    assert _report_bytes(a) == _report_bytes(b)
    c = run_spec(write_spec(tmp_path / "c", seed=7, analyses=""), quiet=True).report_dir
    ra, rc = (json.loads((r / "results.json").read_text()) for r in (a, c))
    # seeded steps (probe folds, control labels, t-SNE) change; the model's features do not
    assert ra["layer_probes"] != rc["layer_probes"]
    assert ra["embedding_map"] == rc["embedding_map"]


@pytest.fixture(autouse=True)
def _mkdirs(tmp_path):
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()


def test_manifest_paths_are_only_read(tmp_path):
    """Paths in a manifest are read as given (even outside its folder); nothing is written
    anywhere but the store."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "a.png")
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"path": ["../elsewhere/a.png", str(outside / "a.png")],
                  "label": ["x", "y"]}).to_csv(data / "m.csv", index=False)
    before = {p for p in tmp_path.rglob("*")}
    store = extract("demo", data / "m.csv", store=tmp_path / "store", progress=False)
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(tmp_path / "store" in p.parents or p == tmp_path / "store"
                           for p in written)
    assert sorted(store.labels()["label"].tolist()) == ["x", "y"]
