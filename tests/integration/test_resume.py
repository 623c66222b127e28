"""A real extraction process killed with SIGKILL part-way, rerun: same rows, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from probing import EmbeddingStore, extract, load_model

SCRIPT = """
import sys, torch
torch.manual_seed(0)
from probing import extract, load_model
m = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2)
extract(m, "shapes:n={n}", store=sys.argv[1], shard_size=8, batch_size=4, pooled="mean",
        attention=True, progress=False)
"""
N = 160


def _run_until_partial(store: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(n=N), str(store)],
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 240
    marker = store / "_shards" / "shard-00002.json"
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"extraction ended (rc={proc.returncode}) before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    store_path = tmp_path / "store"
    _run_until_partial(store_path)
    partial = EmbeddingStore(store_path)
    done = partial.done_shards()
    assert 0 < len(done) < N // 8, "the kill should leave the store incomplete"
    assert (store_path / ".lock").exists()  # left behind by the killed process

    import torch

    torch.manual_seed(0)
    model = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                       depth=2)
    store = extract(model, f"shapes:n={N}", store=store_path, shard_size=8, batch_size=4,
                    pooled="mean", attention=True, progress=False)
    assert store.done_shards() == list(range(N // 8))
    assert not list(store_path.rglob("*.tmp")) and not (store_path / ".lock").exists()

    ref_tokens, ref_att = extract(model, f"shapes:n={N}", batch_size=4, pooled="mean",
                                  attention=True, progress=False)
    resumed = store.read()
    assert not resumed.duplicated(["image_id", "layer", "token"]).any()
    pd.testing.assert_frame_equal(resumed, ref_tokens)
    pd.testing.assert_frame_equal(store.read_attention(), ref_att)


def test_provenance_lists_skipped_images_when_the_store_is_reused(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from probing.run.runner import run_spec

    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"not an image")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'store = "{(tmp_path / "stores").as_posix()}"\n[model]\nspec = "demo"\n'
        f'[data]\nsource = "{(tmp_path / "images").as_posix()}"\n'
        'options = { on_error = "skip" }\n[capture]\nkinds = ["cls"]\n'
        '[analyses.embedding_map]\nmethods = ["pca"]\n')
    first = run_spec(spec, out=tmp_path / "r1", quiet=True)
    second = run_spec(spec, out=tmp_path / "r2", quiet=True)
    assert not first.reused_store and second.reused_store
    for report in ("r1", "r2"):
        prov = json.loads((tmp_path / report / "provenance.json").read_text())
        skipped = prov["data"]["skipped"]
        assert len(skipped) == 1 and "broken.png" in json.dumps(skipped), skipped
