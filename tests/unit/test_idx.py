"""The IDX reader and source: files written here byte by byte, read back exactly."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from probing.data import IdxSource, open_source
from probing.errors import DataError
from probing.idx import read_idx


def _write_idx(path, array: np.ndarray, zipped: bool = True) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = head + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if zipped else body)


@pytest.fixture()
def idx_pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def test_read_idx_gets_the_array_back_gzipped_or_not(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)  # non-square: rows before cols
    _write_idx(tmp_path / "a-idx3-ubyte", a, zipped=False)
    _write_idx(tmp_path / "a-idx3-ubyte.gz", a)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and np.array_equal(out, a)


def test_open_source_reads_images_and_the_sibling_labels_file(idx_pair):
    folder, images, labels = idx_pair
    source = open_source(str(folder / "t10k-images-idx3-ubyte.gz"))
    assert isinstance(source, IdxSource) and len(source) == 5
    assert source.labels()["label"].tolist() == [7, 2, 1, 0, 4]
    assert np.array_equal(np.asarray(source.image(3)), images[3])
    assert source.describe()["kind"] == "idx"


def test_labels_option_names_the_file_or_turns_labels_off(idx_pair, tmp_path):
    folder, _, labels = idx_pair
    other = tmp_path / "other-idx1-ubyte.gz"
    _write_idx(other, labels[::-1].copy())
    path = folder / "t10k-images-idx3-ubyte.gz"
    assert open_source(path, labels=str(other)).labels()["label"].tolist() == [4, 0, 1, 2, 7]
    assert list(open_source(path, labels=False).labels().columns) == ["image_id"]


def test_bad_idx_inputs_raise_one_sentence_data_errors(idx_pair, tmp_path):
    folder, images, _ = idx_pair
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _write_idx(lonely / "x-images-idx3-ubyte.gz", images)
    with pytest.raises(DataError, match="labels ="):
        open_source(lonely / "x-images-idx3-ubyte.gz")
    (tmp_path / "bad-idx3-ubyte").write_bytes(b"\x01\x02\x08\x03")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad-idx3-ubyte")
    full = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(gzip.decompress(full)[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut-idx3-ubyte")
    with pytest.raises(DataError, match="rows for"):  # labels of another length
        open_source(folder / "t10k-images-idx3-ubyte.gz",
                    labels=str(folder / "t10k-images-idx3-ubyte.gz"))
    with pytest.raises(DataError, match="unknown option"):
        open_source(folder / "t10k-images-idx3-ubyte.gz", label="x")
