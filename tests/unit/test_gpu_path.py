"""The GPU extraction path, checked on the CPU: autocast tolerance, loader workers, devices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from probing import ArraySource, ModelError, extract, load_model
from probing.data import iter_batches
from probing.extract import _to_device
from probing.frames import embedding_matrix

# documented in probing.extract.extract: per-vector relative error against float32
TOLERANCE = {"bf16": 0.05, "fp16": 0.01}


@pytest.fixture(scope="module")
def model():
    return load_model("demo")


@pytest.fixture(scope="module")
def reference(model):
    return extract(model, "shapes:n=12", kinds=("cls", "patch"), pooled="mean", batch_size=5,
                   progress=False)


def _relative_error(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    x, y = embedding_matrix(a).astype(np.float64), embedding_matrix(b).astype(np.float64)
    return np.linalg.norm(y - x, axis=1) / np.linalg.norm(x, axis=1)


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_autocast_on_cpu_within_documented_tolerance(model, reference, autocast):
    got = extract(model, "shapes:n=12", kinds=("cls", "patch"), pooled="mean", batch_size=5,
                  autocast=autocast, progress=False)
    meta = ["image_id", "layer", "kind", "token", "row", "col"]
    pd.testing.assert_frame_equal(got[meta], reference[meta])
    assert got["emb"].dtype == reference["emb"].dtype  # cast back to the stored float32
    err = _relative_error(reference, got)
    assert err.max() <= TOLERANCE[autocast]
    assert err.max() > 0  # the forward pass really ran in reduced precision


def test_bf16_is_coarser_than_fp16(model, reference):
    errs = {ac: _relative_error(reference, extract(
        model, "shapes:n=12", kinds=("cls", "patch"), pooled="mean", batch_size=5,
        autocast=ac, progress=False)).mean() for ac in ("bf16", "fp16")}
    assert errs["bf16"] > errs["fp16"]  # 8 vs 11 mantissa bits


def test_loader_workers_give_identical_frames(model, reference):
    got = extract(model, "shapes:n=12", kinds=("cls", "patch"), pooled="mean", batch_size=5,
                  num_workers=2, progress=False)
    pd.testing.assert_frame_equal(got, reference)


def test_loader_workers_into_a_store_equal_in_memory(model, reference, tmp_path):
    store = extract(model, "shapes:n=12", kinds=("cls", "patch"), pooled="mean", batch_size=5,
                    num_workers=2, store=tmp_path / "s", shard_size=4, progress=False)
    pd.testing.assert_frame_equal(store.read(), reference)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_a_model_error(model):
    with pytest.raises(ModelError, match="CUDA is not available"):
        extract(model, "shapes:n=2", device="cuda", progress=False)


def test_pinned_batches_equal_plain_batches(model):
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    source = ArraySource(images)
    plain = list(iter_batches(source, model.data_config, 3))
    pinned = list(iter_batches(source, model.data_config, 3, pin_memory=True))
    assert [len(b.images) for b in plain] == [3, 3, 1]
    for a, b in zip(plain, pinned):
        assert torch.equal(a.images, b.images)
        np.testing.assert_array_equal(a.image_ids, b.image_ids)


def test_to_device_keeps_order_and_empty_batches():
    batches = [(torch.full((2, 1), float(k)), np.array([2 * k, 2 * k + 1]), [])
               for k in range(3)]
    batches.insert(1, (torch.empty(0), np.empty(0, np.int64), [{"image_id": 9}]))
    out = list(_to_device(iter(batches), torch.device("cpu")))
    assert len(out) == 4
    for (x, ids, skip), (y, ids2, skip2) in zip(batches, out):
        assert torch.equal(x, y) and np.array_equal(ids, ids2) and skip == skip2
