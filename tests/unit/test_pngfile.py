"""PNG files written without PIL (probing.pngfile): PIL reads back the same pixels and dpi."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from probing.errors import ReportError
from probing.pngfile import png_bytes


def _read(data: bytes) -> tuple[np.ndarray, object]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA"
        return np.asarray(im), im.info.get("dpi")


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (37, 64)])
def test_pil_reads_back_the_pixels_and_the_resolution(shape):
    rgba = np.random.default_rng(0).integers(0, 256, size=(*shape, 4), dtype=np.uint8)
    pixels, dpi = _read(png_bytes(rgba, dpi=200))
    assert (pixels == rgba).all()
    # as PIL writes 200 dpi: round(200 / 0.0254) pixels per metre, read back as 199.9996
    with io.BytesIO() as buf:
        Image.fromarray(rgba).save(buf, format="png", dpi=(200, 200))
        assert dpi == Image.open(io.BytesIO(buf.getvalue())).info["dpi"]


def test_the_same_pixels_give_the_same_bytes_and_no_dpi_no_phys_chunk():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    assert png_bytes(rgba, 72) == png_bytes(rgba.copy(), 72)
    plain = png_bytes(rgba)
    assert b"pHYs" not in plain and b"tEXt" not in plain
    assert _read(plain)[1] is None
    # rows are stored with filter type 0 and the pixels as they are
    idat = plain[plain.index(b"IDAT") + 4:plain.index(b"IEND") - 8]
    assert zlib.decompress(idat) == (b"\x00" + bytes(16)) * 4


def test_a_non_rgba_array_is_refused_with_the_fix():
    for bad in (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 4), np.float32),
                np.zeros((0, 4, 4), np.uint8)):
        with pytest.raises(ReportError, match="RGBA buffer"):
            png_bytes(bad)
