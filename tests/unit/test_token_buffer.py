"""TokenBuffer: captured batches copied once into the frame's row order."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import timm
import torch
from PIL import Image

from probing import extract
from probing.data import open_source
from probing.errors import SchemaError
from probing.frames import frame_from_table, token_table
from probing.layout import TOKEN_KINDS, TokenLayout
from probing.token_buffer import TokenBuffer

LAYOUT = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=("cls", "reg"))


def _reference(batches, token_index, layout):
    """The rows built the way extraction built them before: one ``token_table`` per batch,
    layer and kind, concatenated in (layer, kind order) groups, batches in order."""
    kinds = layout.token_table()["kind"]
    parts: dict[tuple[int, int], list[pa.Table]] = {}
    for arrays, ids in batches:
        for layer, idx in token_index.items():
            kind_of = np.where(idx < 0, "pooled", kinds[np.maximum(idx, 0)])
            for kind in TOKEN_KINDS:
                sel = np.flatnonzero(kind_of == kind)
                if sel.size:
                    parts.setdefault((layer, TOKEN_KINDS.index(kind)), []).append(
                        token_table(arrays[layer][:, sel], layout, layer, ids, idx[sel], None))
    return frame_from_table(pa.concat_tables([t for key in sorted(parts) for t in parts[key]]))


def test_rows_equal_per_group_tables_in_layer_kind_image_token_order():
    rng = np.random.default_rng(0)
    n_tok = LAYOUT.n_tokens
    # layer 0: all tokens and the pooled vector; layer 2: patches and the cls (no reg)
    token_index = {0: np.r_[np.arange(n_tok), -1], 2: np.r_[0, np.arange(2, n_tok)]}
    batches = []
    for ids in (np.array([5, 3, 9]), np.array([1, 7])):
        arrays = {layer: rng.normal(size=(len(ids), len(idx), 4)).astype(np.float32)
                  for layer, idx in token_index.items()}
        batches.append((arrays, ids))
    buffer = TokenBuffer(LAYOUT, token_index, 5, np.float32)
    for arrays, ids in batches:
        buffer.add(arrays, ids)
    got = frame_from_table(buffer.table())
    pd.testing.assert_frame_equal(got, _reference(batches, token_index, LAYOUT))
    groups = buffer.group_tables(buffer.table())
    assert list(groups) == [(k, 0) for k in ("cls", "reg", "patch", "pooled")] + \
        [(k, 2) for k in ("cls", "patch")]
    assert sum(t.num_rows for t in groups.values()) == len(got)


def test_fewer_images_than_room_keep_each_group_whole():
    token_index = {1: np.arange(LAYOUT.n_tokens)}
    arrays = {1: np.arange(2 * LAYOUT.n_tokens * 3, dtype=np.float32).reshape(2, -1, 3)}
    buffer = TokenBuffer(LAYOUT, token_index, 4, np.float16)  # room for 4, 2 arrive
    buffer.add(arrays, np.array([0, 1]))
    got = frame_from_table(buffer.table())
    want = _reference([(arrays, np.array([0, 1]))], token_index, LAYOUT)
    assert got["emb"].dtype.pyarrow_dtype.value_type == pa.float16()
    np.testing.assert_array_equal(np.stack(got["emb"].to_numpy()),
                                  np.stack(want["emb"].to_numpy()).astype(np.float16))
    pd.testing.assert_frame_equal(got.drop(columns="emb"), want.drop(columns="emb"))
    with pytest.raises(SchemaError, match="holds 4 images"):
        buffer.add({1: np.zeros((3, LAYOUT.n_tokens, 3), np.float32)}, np.arange(3))


def test_skipped_image_mid_batch_gives_the_frame_of_the_readable_images(tmp_path, caplog):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=2, num_classes=3).eval()
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    for folder in (clean, broken):
        (folder / "a").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((32, 32, 3), 30 * i + 10, np.uint8)).save(
                folder / "a" / f"{i}.png")
    (broken / "a" / "2b.png").write_bytes(b"not an image")  # sorted between 2 and 3
    kwargs = dict(layers="all", kinds=("cls", "patch"), pooled="mean", batch_size=2,
                  progress=False)
    want = extract(model, open_source(clean), **kwargs)
    with caplog.at_level(logging.WARNING, logger="probing"):
        got = extract(model, open_source(broken, on_error="skip"), **kwargs)
    assert len(got.attrs["skipped"]) == 1
    assert "1 of 6 images were skipped as unreadable (the first: image id 3)" in caplog.text
    assert 'the frame\'s attrs["skipped"] lists them' in caplog.text
    cols = ["layer", "kind", "token", "row", "col"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    np.testing.assert_array_equal(np.stack(got["emb"].to_numpy()),
                                  np.stack(want["emb"].to_numpy()))
