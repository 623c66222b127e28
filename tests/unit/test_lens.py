"""Logit lens: identity at the last block, a hand computation at an intermediate block."""

import numpy as np
import pandas as pd
import pytest
import torch

from probing import load_model
from probing.data import ArraySource, iter_batches
from probing.errors import DataError, ModelError
from probing.extract import extract
from probing.lens import lens_from_frame, lens_from_source, lens_kinds, lens_positions, lens_scores


def _tiny(**kw):
    torch.manual_seed(0)
    return load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                      depth=3, num_classes=5, **kw)


@pytest.fixture(scope="module")
def source():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    return ArraySource(images, pd.DataFrame({"label": [0, 1, 2, 3, 4, 0]}))


def _images(loaded, source):
    return torch.cat([b.images for b in iter_batches(source, loaded.data_config, 6,
                                                     np.arange(len(source)))])


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_lens_at_last_block_is_the_models_logits(pool, source):
    loaded = _tiny(global_pool=pool)
    with torch.no_grad():
        own = loaded.model(_images(loaded, source)).numpy()
    frame = extract(loaded, source, layers="all", kinds=lens_kinds(loaded), progress=False)
    ids, stored = lens_from_frame(loaded, frame)
    _, forward = lens_from_source(loaded, source, layers="all")
    assert list(ids) == list(range(6)) and sorted(stored) == [0, 1, 2, 3]
    np.testing.assert_array_equal(stored[3], own)  # the identity, to the bit
    np.testing.assert_array_equal(forward[3], own)
    for layer in stored:  # stored tokens and a forward pass give the same lens
        np.testing.assert_allclose(stored[layer], forward[layer], rtol=0, atol=1e-5)


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_lens_at_an_intermediate_block_by_hand(pool, source):
    loaded = _tiny(global_pool=pool)
    m = loaded.model
    with torch.no_grad():
        x = m.norm_pre(m._pos_embed(m.patch_embed(_images(loaded, source))))
        x = m.blocks[1](m.blocks[0](x))  # output of block 2
        if pool == "token":
            z = m.norm(x)[:, 0]
        else:  # avg: norm is an identity, fc_norm after the mean of the patch tokens
            z = m.fc_norm(m.norm(x)[:, m.num_prefix_tokens:].mean(1))
        hand = (z @ m.head.weight.T + m.head.bias).numpy()
    _, lens = lens_from_source(loaded, source, layers=[2])
    np.testing.assert_allclose(lens[2], hand, rtol=0, atol=1e-5)
    assert lens_positions(loaded).tolist() == ([0] if pool == "token" else list(range(1, 17)))


def test_lens_scores_rank_and_accuracy_by_hand():
    logits = {1: np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]]),
              2: np.array([[1.0, 3.0, 2.0], [0.0, 1.0, 5.0]])}
    out = lens_scores(logits, np.array([2, 1])).set_index(["layer", "metric"])["value"]
    assert out[(1, "mean_rank")] == 0.5 and out[(1, "accuracy")] == 0.5  # ranks 1 and 0
    assert out[(2, "mean_rank")] == 1.0 and out[(2, "accuracy")] == 0.0  # ranks 1 and 1
    assert out[(2, "agreement")] == 1.0 and out[(1, "agreement")] == 0.0
    with pytest.raises(DataError, match="class indices"):
        lens_scores(logits, np.array([3, 1]))


def test_lens_refuses_missing_tokens_and_headless_models(source):
    loaded = _tiny()
    frame = extract(loaded, source, layers=[1], kinds=["patch"], progress=False)
    with pytest.raises(DataError, match="capture kinds"):
        lens_from_frame(loaded, frame)
    with pytest.raises(ModelError, match="global_pool"):
        lens_positions(_tiny(global_pool=""))
