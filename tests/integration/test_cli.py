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


def test_info_and_extract_take_a_foreign_mapping(shared_fixtures, tmp_path):
    weights = str(shared_fixtures / "mnist_vit" / "vit_mnist_gpu.pt")
    flags = ["--mapping", "lucidrains", "--mapping-option", "act=relu",
             "--mapping-option", "mean=0.1307", "--mapping-option", "std=0.3081"]
    res = invoke("info", weights, *flags)
    assert res.exit_code == 0, res.output
    assert "mean (0.1307,), std (0.3081,)" in res.output and "6 blocks x 64, 4 heads" in res.output
    res = invoke("info", weights, "--mapping", "lucidrains")  # no preprocessing: refused
    assert res.exit_code == 2 and "mapping_options = {mean, std}" in res.output
    assert "Traceback" not in res.output
    res = invoke("info", weights, "--mapping", "lucidrains", "--mapping-option", "mean")
    assert res.exit_code == 2 and "is not KEY=VALUE" in res.output
    out = tmp_path / "s"
    res = invoke("--quiet", "extract", "--model", weights, *flags, "--data", "digits",
                 "--n-images", "6", "--layers", "-1", "--kinds", "cls", "--out", str(out))
    assert res.exit_code == 0, res.output
    manifest = EmbeddingStore(out).manifest
    assert manifest["preprocessing"]["mean"] == [0.1307]
    assert len(EmbeddingStore(out).read(kind="cls", layer=6)) == 6


def test_mapping_option_values_parse_to_numbers_and_tuples():
    from probing.cli import _mapping_options

    assert _mapping_options(("mean=0.5,0.4,0.3", "heads=4", "eps=1e-6", "act=gelu")) == {
        "mean": (0.5, 0.4, 0.3), "heads": 4, "eps": 1e-6, "act": "gelu"}
