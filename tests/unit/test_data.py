"""Data sources: built-ins, image folders, manifests, conversion and unreadable files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from probing import (
    ArraySource,
    DataError,
    DigitsSource,
    ImageFolderSource,
    ManifestSource,
    ShapesSource,
    extract,
    load_model,
    open_source,
)
from probing.data import convert_mode, iter_batches

CONFIG = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
          "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "crop_mode": "center"}


def _folder(tmp_path, n_per_class=3):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir(parents=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def test_shapes_are_deterministic_and_subset_stable():
    a = ShapesSource(n=20, seed=3)
    b = ShapesSource(n=5, seed=3)
    pd.testing.assert_frame_equal(a.labels().iloc[:5], b.labels())
    assert np.array_equal(np.asarray(a.image(4)), np.asarray(b.image(4)))
    c = ShapesSource(n=5, seed=4)
    assert not np.array_equal(np.asarray(a.image(0)), np.asarray(c.image(0)))
    assert set(a.labels()["split"]) == {"train", "test"}
    assert a.fingerprint() != c.fingerprint()


def test_shapes_factors_match_pixels():
    src = ShapesSource(n=30, seed=0, backgrounds=("plain",))
    lab = src.labels()
    for i in range(30):
        img = np.asarray(src.image(i)).astype(float)
        r, c = int(lab["center_row"][i]), int(lab["center_col"][i])
        # the centre lies inside the shape (colour value >= 0.8) and the corner on the plain
        # background (grey level <= 0.3): the stored factors describe the pixels
        assert img[r, c].max() >= 0.8 * 255 - 2
        assert img[0, 0].max() <= 0.3 * 255 + 1 and np.ptp(img[0, 0]) <= 1


def test_open_source_specs(tmp_path):
    assert len(open_source("shapes:n=7,seed=2,backgrounds=plain+noise,rotation=true")) == 7
    digits = open_source("digits")
    assert len(digits) == 1797 and digits.labels()["label"].nunique() == 10
    assert isinstance(open_source(_folder(tmp_path / "f")), ImageFolderSource)
    with pytest.raises(DataError, match="not 'shapes'"):
        open_source(tmp_path / "missing")
    with pytest.raises(DataError, match="key=value"):
        open_source("shapes:n")


def test_image_folder_ids_and_labels(tmp_path):
    src = ImageFolderSource(_folder(tmp_path))
    lab = src.labels()
    assert lab["image_id"].tolist() == list(range(6))
    assert lab["label"].tolist() == ["cat"] * 3 + ["dog"] * 3
    batch = next(iter_batches(src, CONFIG, 4))
    assert batch.images.shape == (4, 3, 16, 16)


def test_empty_folder(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolderSource(tmp_path)


def test_corrupt_image_raises_or_is_skipped(tmp_path):
    root = _folder(tmp_path)
    bad = root / "cat" / "1.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="1.png"):
        list(iter_batches(ImageFolderSource(root), CONFIG, 8))
    src = ImageFolderSource(root, on_error="skip")
    model = load_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                       depth=1)
    frame = extract(model, src, kinds="cls", layers=-1, progress=False)
    assert sorted(frame["image_id"].tolist()) == [0, 2, 3, 4, 5]
    assert [s["image_id"] for s in src.skipped] == [1]


def test_manifest_csv_and_parquet(tmp_path):
    root = _folder(tmp_path / "imgs")
    rows = [{"file": f"imgs/{c}/{i}.png", "label": c, "uid": f"{c}{i}"}
            for c in ("cat", "dog") for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    for name in ("m.csv", "m.parquet"):
        src = ManifestSource(tmp_path / name, path_column="file", id_column="uid")
        assert src.labels()["image_id"].tolist() == [r["uid"] for r in rows]
        assert len(list(iter_batches(src, CONFIG, 2))) == 3
    assert root.exists()


def test_manifest_errors(tmp_path):
    pd.DataFrame({"x": ["a.png"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(DataError, match="no 'path' column"):
        ManifestSource(tmp_path / "nopath.csv")
    pd.DataFrame({"path": ["missing.png"]}).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataError, match="missing file"):
        ManifestSource(tmp_path / "missing.csv")
    _folder(tmp_path / "imgs", 1)
    pd.DataFrame({"path": ["imgs/cat/0.png", "imgs/dog/0.png"], "id": [1, 1]}).to_csv(
        tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="duplicate image ids"):
        ManifestSource(tmp_path / "dup.csv", id_column="id")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "LA", "F"])
def test_modes_are_converted(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16))
    elif mode == "F":
        img = Image.fromarray(rng.random((8, 8)).astype(np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert(mode)
    for channels, target in ((3, "RGB"), (1, "L")):
        out = convert_mode(img, channels)
        assert out.mode == target and out.size == (8, 8)


def test_sixteen_bit_scaled_not_clipped():
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    out = np.asarray(convert_mode(Image.fromarray(arr), 1))
    assert out.max() == 255 and out[0, 0] == 0 and out[1, 1] == 255


def test_array_source_and_digits_on_rgb_model():
    src = ArraySource(np.zeros((3, 8, 8), dtype=np.uint8), pd.DataFrame({"label": [1, 2, 3]}))
    assert src.labels()["image_id"].tolist() == [0, 1, 2]
    batch = next(iter_batches(DigitsSource(n=5), CONFIG, 5))
    assert batch.images.shape == (5, 3, 16, 16)
    with pytest.raises(DataError, match="uint8"):
        ArraySource(np.zeros((2, 4, 4), dtype=np.float32))


def test_worker_errors_stay_one_sentence_and_blank_manifest_paths(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "cat" / "0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="0.png") as info:
        list(iter_batches(ImageFolderSource(root), CONFIG, 4, num_workers=2))
    assert "Traceback" not in str(info.value)
    pd.DataFrame({"path": ["f/dog/0.png", None]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="without a 'path'"):
        ManifestSource(tmp_path / "m.csv")
    with pytest.raises(DataError, match="unknown option"):
        open_source(root, colour="red")


@pytest.mark.parametrize("column", ["row", "col", "layer", "kind", "token", "emb"])
def test_label_columns_may_not_take_token_frame_names(tmp_path, column):
    import numpy as np
    import pandas as pd

    from probing import ArraySource, DataError, ManifestSource

    with pytest.raises(DataError, match=f"label column named '{column}'.*rename"):
        ArraySource(np.zeros((2, 8, 8), np.uint8), pd.DataFrame({column: [1, 2]}))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    pd.DataFrame({"path": ["a.png"], column: [1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=f"label column named '{column}'"):
        ManifestSource(tmp_path / "m.csv")


def test_a_manifest_image_id_column_is_its_id_column(tmp_path):
    import pandas as pd

    from probing import ManifestSource

    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    pd.DataFrame({"path": ["a.png", "b.png"], "image_id": ["x7", "y9"], "label": [0, 1]}).to_csv(
        tmp_path / "m.csv", index=False)
    labels = ManifestSource(tmp_path / "m.csv").labels()
    assert list(labels["image_id"]) == ["x7", "y9"] and list(labels["label"]) == [0, 1]


def test_image_cache_reads_each_image_once_and_hands_out_copies(monkeypatch):
    """A small source is decoded once per preprocessing; cached batches equal fresh ones, are
    new tensors (editing one changes no later read), and a large source caches nothing."""
    import pickle

    from probing import image_cache
    from probing.image_cache import ImageCache

    cfg = {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.5,) * 3,
           "std": (0.5,) * 3, "crop_pct": 1.0, "crop_mode": "center"}
    source = open_source("shapes:n=6").keep_images()
    fresh = open_source("shapes:n=6")  # keeps nothing
    assert fresh.image_cache() is None
    reads = []
    original = type(source).image
    monkeypatch.setattr(type(source), "image", lambda self, i: reads.append(i) or original(self, i))
    first = torch.cat([b.images for b in iter_batches(source, cfg, 4)])
    assert sorted(reads) == list(range(6))
    again = list(iter_batches(source, cfg, 4, positions=[5, 0, 3]))
    assert sorted(reads) == list(range(6)), "a cached image was decoded again"
    assert [len(b.images) for b in again] == [3] and list(again[0].positions) == [5, 0, 3]
    torch.testing.assert_close(again[0].images, first[[5, 0, 3]], rtol=0, atol=0)
    again[0].images.zero_()  # the caller's copy: the next read is unchanged
    torch.testing.assert_close(next(iter_batches(source, cfg, 6)).images, first, rtol=0, atol=0)
    other = {**cfg, "input_size": (3, 4, 4)}  # another preprocessing is another entry
    assert next(iter_batches(source, other, 6)).images.shape == (6, 3, 4, 4)
    assert len(reads) == 12
    reads.clear()
    for _ in range(2):  # a source without keep_images() decodes every time
        fresh_batches = torch.cat([b.images for b in iter_batches(fresh, cfg, 4)])
    torch.testing.assert_close(fresh_batches, first, rtol=0, atol=0)
    assert len(reads) == 12
    assert pickle.loads(pickle.dumps(source)).image_cache().get(ImageCache.key(cfg), [0]) is None
    monkeypatch.setattr(image_cache, "CACHE_BYTES", 6 * 3 * 8 * 8 * 4 - 1)  # too big: none kept
    big = open_source("shapes:n=6").keep_images()
    reads.clear()
    for _ in range(2):
        list(iter_batches(big, cfg, 6))
    assert len(reads) == 12
