"""The `probing` command end to end: extract, info, list, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probing import EmbeddingStore

ROOT = Path(__file__).resolve().parents[2]


def probing(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probing.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_extract_writes_store(tmp_path):
    res = probing("--quiet", "extract", "--model", "demo", "--data", "shapes:n=12", "--out",
                  str(tmp_path / "s"), "--layers", "0,-1", "--kinds", "cls,pooled",
                  "--attention", "--batch-size", "5")
    assert res.returncode == 0, res.stderr
    store = EmbeddingStore(tmp_path / "s")
    assert store.kinds() == ["cls", "pooled"] and store.layers() == [0, 4]
    assert len(store.read(kind="cls", layer=4)) == 12
    arr, _, layers = store.attention()
    assert arr.shape[:2] == (12, 4)


def invoke(*args: str):
    from click.testing import CliRunner

    from probing.cli import main

    return CliRunner().invoke(main, list(args))


def test_info_prints_layout():
    res = invoke("info", "demo")
    assert res.exit_code == 0, res.output
    assert "8 x 8 = 64 patches" in res.stdout and "CLS position      0" in res.stdout


def test_list_shows_analyses():
    res = invoke("list")
    assert res.exit_code == 0, res.output
    assert "embedding_map" in res.stdout and "shapes" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["info", "vit_nope_patch16"], "neither a timm model name"),
    (["extract", "--model", "demo", "--data", "nowhere/", "--out", "x"], "data source"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--batch-size", "0"], "--batch-size 0 is invalid"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--kinds", "reg"], "token kind 'reg' does not exist"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--layers", "9"], "layer 9 is out of range"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--device", "cuda:9"], "device"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, needle):
    res = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "_shards").exists()


def test_debug_shows_traceback():
    res = probing("--debug", "info", "vit_nope_patch16")
    assert res.returncode != 0 and "Traceback" in res.stderr
