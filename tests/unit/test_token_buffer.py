"""TokenBuffer: captured batches copied once into the frame's row order."""

from __future__ import annotations

import importlib
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
from probing.frames import (
    embedding_matrix,
    embedding_rows,
    frame_from_table,
    token_table,
    validate_frame,
    vectors_to_arrow,
)
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


def test_layers_put_one_at_a_time_in_any_order_equal_a_whole_batch_added():
    rng = np.random.default_rng(1)
    token_index = {0: np.r_[np.arange(LAYOUT.n_tokens), -1], 3: np.arange(2, LAYOUT.n_tokens)}
    batches = [({layer: rng.normal(size=(len(ids), len(idx), 4)).astype(np.float32)
                 for layer, idx in token_index.items()}, ids)
               for ids in (np.array([4, 2]), np.array([8, 0, 6]))]
    whole, by_layer = (TokenBuffer(LAYOUT, token_index, 5, np.float32) for _ in range(2))
    for arrays, ids in batches:
        whole.add(arrays, ids)
        for layer in (3, 0):  # the order the hooks run in does not matter
            by_layer.put(layer, arrays[layer])
        by_layer.commit(ids)
    pd.testing.assert_frame_equal(frame_from_table(by_layer.table()),
                                  frame_from_table(whole.table()))
    with pytest.raises(SchemaError, match="holds 5 images; 6 were added"):
        by_layer.commit(np.array([9]))
    with pytest.raises(SchemaError, match="holds 5 images; 7 were added"):
        by_layer.put(0, batches[0][0][0])


def test_one_vector_chunk_per_group_and_a_group_slice_is_a_view():
    token_index = {1: np.arange(LAYOUT.n_tokens), 2: np.arange(LAYOUT.n_tokens)}
    arrays = {layer: np.random.default_rng(layer).normal(size=(3, LAYOUT.n_tokens, 5))
              .astype(np.float32) for layer in token_index}
    buffer = TokenBuffer(LAYOUT, token_index, 3, np.float32)
    buffer.add(arrays, np.arange(3))
    table = buffer.table()
    assert table.column("emb").num_chunks == len(buffer.groups) == 6  # cls, reg, patch x 2
    frame = frame_from_table(table)
    # layer 2's patch rows: 3 images x 6 patches, the table's last group
    patches = frame.iloc[len(frame) - 18:]
    assert (patches["layer"] == 2).all() and (patches["kind"] == "patch").all()
    got = embedding_matrix(patches)
    np.testing.assert_array_equal(got, arrays[2][:, 2:].reshape(18, 5))
    assert np.shares_memory(got, embedding_matrix(patches.iloc[4:]))  # no copy
    np.testing.assert_array_equal(embedding_matrix(frame)[-18:], got)  # whole: combined once


def test_copying_in_the_hooks_and_after_the_pass_give_the_same_frame(monkeypatch):
    extract_module = importlib.import_module("probing.extract")  # not the function
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=3, num_classes=3, reg_tokens=2,
                              no_embed_class=True).eval()
    x = torch.randn(5, 3, 32, 32)
    kwargs = dict(layers=[0, 2, "norm"], kinds=("cls", "reg", "patch"), pooled="mean",
                  batch_size=2, progress=False)
    in_hooks = extract(model, x, **kwargs)
    monkeypatch.setattr(extract_module, "_copy_in_hooks", lambda dev: False)
    after = extract(model, x, **kwargs)
    pd.testing.assert_frame_equal(in_hooks, after)
    with torch.inference_mode():
        last = model.forward_features(x)  # the "norm" site, read another way
    norm = in_hooks[(in_hooks["layer"] == -2) & (in_hooks["kind"] != "pooled")]
    np.testing.assert_allclose(_tokens_by_image(norm), last.numpy(), atol=1e-6)


def _tokens_by_image(frame: pd.DataFrame) -> np.ndarray:
    """``(images, tokens, D)`` of one layer's rows, ordered by image and token."""
    f = frame.sort_values(["image_id", "token"], kind="stable")
    return embedding_matrix(f).reshape(f["image_id"].nunique(), -1, embedding_matrix(f).shape[1])


def test_rows_of_a_many_chunk_frame_equal_rows_of_the_combined_matrix():
    token_index = {1: np.arange(LAYOUT.n_tokens), 2: np.r_[np.arange(LAYOUT.n_tokens), -1]}
    rng = np.random.default_rng(3)
    arrays = {layer: rng.normal(size=(4, len(idx), 3)).astype(np.float32)
              for layer, idx in token_index.items()}
    buffer = TokenBuffer(LAYOUT, token_index, 4, np.float32)
    buffer.add(arrays, np.arange(4))
    frame = frame_from_table(buffer.table())
    assert frame["emb"].array.__arrow_array__().num_chunks == 7
    whole = embedding_matrix(frame)
    rows = rng.permutation(len(frame))[:40]
    np.testing.assert_array_equal(embedding_rows(frame, rows), whole[rows])
    np.testing.assert_array_equal(embedding_rows(frame, rows[:0]), whole[:0])
    assert len(frame) == 4 * 8 + 4 * 9
    with pytest.raises(SchemaError, match="outside the frame's 68 rows"):
        embedding_rows(frame, np.array([68]))
    validate_frame(frame, finite=True)
    bad = frame.copy()
    bad_emb = whole.copy()
    bad_emb[[5, 60]] = np.nan
    bad["emb"] = pd.arrays.ArrowExtensionArray(pa.chunked_array(
        [vectors_to_arrow(bad_emb[:30]), vectors_to_arrow(bad_emb[30:])]))
    with pytest.raises(SchemaError, match="2 vector"):
        validate_frame(bad, finite=True)


def test_a_batch_whose_layers_were_not_all_put_is_refused_at_commit():
    token_index = {1: np.arange(LAYOUT.n_tokens), 2: np.arange(LAYOUT.n_tokens)}
    batch = np.ones((2, LAYOUT.n_tokens, 3), np.float32)
    buffer = TokenBuffer(LAYOUT, token_index, 4, np.float32)
    buffer.put(1, batch)
    with pytest.raises(SchemaError, match=r"layers \[2\] .* not copied for this batch of 2"):
        buffer.commit(np.arange(2))  # a hook that never fired: rows of no vectors
    buffer.put(1, batch)
    buffer.put(2, batch[:1])
    with pytest.raises(SchemaError, match=r"layers \[2\]"):
        buffer.commit(np.arange(2))  # layer 2 got one image, the batch has two
    with pytest.raises(SchemaError, match="layer 3 is not one"):
        buffer.put(3, batch)
    assert buffer.n_added == 0
    buffer.add({1: batch, 2: 2 * batch}, np.arange(2))  # a complete batch still goes in
    assert buffer.n_added == 2


def test_rows_must_be_integer_positions_and_float16_vectors_keep_their_dtype():
    token_index = {1: np.arange(LAYOUT.n_tokens), 2: np.arange(LAYOUT.n_tokens)}
    arrays = {k: np.random.default_rng(k).normal(size=(2, LAYOUT.n_tokens, 3)) for k in (1, 2)}
    buffer = TokenBuffer(LAYOUT, token_index, 2, np.float16)
    buffer.add(arrays, np.arange(2))
    frame = frame_from_table(buffer.table())
    rows = np.array([31, 0, 17])
    got = embedding_rows(frame, rows)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, embedding_matrix(frame)[rows])
    with pytest.raises(SchemaError, match="np.flatnonzero"):
        embedding_rows(frame, np.arange(len(frame)) % 2 == 0)  # a mask, not positions


def test_frame_views_of_a_many_chunk_frame_equal_those_of_its_one_chunk_copy():
    from probing.views import FrameViews

    token_index = {k: np.r_[np.arange(LAYOUT.n_tokens)] for k in (0, 3)}
    rng = np.random.default_rng(5)
    buffer = TokenBuffer(LAYOUT, token_index, 5, np.float32)
    for ids in (np.array([7, 2, 9]), np.array([4, 1])):
        buffer.add({k: rng.normal(size=(len(ids), LAYOUT.n_tokens, 4)) for k in token_index},
                   ids)
    table = buffer.table()
    many, one = frame_from_table(table), frame_from_table(table.combine_chunks())
    assert many["emb"].array.__arrow_array__().num_chunks == 6
    assert one["emb"].array.__arrow_array__().num_chunks == 1
    a, b = FrameViews(many), FrameViews(one)
    for layer in (0, 3):
        for kind in ("cls", "patch", "pooled"):  # pooled: the mean of the patch rows
            (xa, ma), (xb, mb) = a.get(layer, kind), b.get(layer, kind)
            np.testing.assert_array_equal(xa, xb)
            pd.testing.assert_frame_equal(ma, mb)
    patches = embedding_matrix(one)[(one["layer"] == 3).to_numpy()
                                    & (one["kind"] == "patch").to_numpy()]
    means = a.get(3, "pooled")[0]
    order = np.argsort([7, 2, 9, 4, 1])  # views order rows by image id
    np.testing.assert_allclose(means, patches.reshape(5, 6, 4).mean(axis=1)[order], atol=1e-6)
