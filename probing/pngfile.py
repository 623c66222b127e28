"""PNG files of an RGBA pixel buffer, written with no row filter.

PIL's PNG encoder (what matplotlib's ``print_png`` calls) tries its adaptive row filters on
every row, and on the flat colours of a plot that costs more than the compression and gains
nothing: on the demo's 29 figures at 200 dpi, PIL at zlib level 1 took 0.43 CPU s for 2.68 MB,
this writer (filter 0, zlib level 3) 0.18 s for 2.51 MB. The pixels are the same (PNG is
lossless).

A file holds the signature, ``IHDR`` (8-bit RGBA, no interlace), ``pHYs`` (the resolution in
pixels per metre, rounded as PIL rounds it), one ``IDAT`` and ``IEND``: no text chunks, so the
same pixels always give the same bytes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import ReportError

__all__ = ["ZLIB_LEVEL", "png_bytes"]

#: zlib level of the pixel data: 3 of 9 (level 1 wrote 6% more bytes in the same time).
ZLIB_LEVEL = 3

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(rgba: np.ndarray, dpi: float | None = None, level: int = ZLIB_LEVEL) -> bytes:
    """The PNG file of ``rgba``.

    Parameters
    ----------
    rgba : numpy.ndarray
        ``(height, width, 4)`` uint8 pixels, top row first (an Agg canvas's
        ``buffer_rgba()``).
    dpi : float, optional
        Resolution written to the ``pHYs`` chunk (none without it).
    level : int
        zlib compression level, 0 to 9.

    Returns
    -------
    bytes
        The whole file.

    Raises
    ------
    ReportError
        When ``rgba`` is not a non-empty ``(height, width, 4)`` uint8 array.
    """
    pixels = np.asarray(rgba)
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8 or not pixels.size:
        raise ReportError(f"a PNG needs (height, width, 4) uint8 pixels, not an array of shape "
                          f"{pixels.shape} and dtype {pixels.dtype}; pass an RGBA buffer.")
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + 4 * width), dtype=np.uint8)  # each row: filter type 0, pixels
    rows[:, 1:] = pixels.reshape(height, 4 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA
    out = [_SIGNATURE, _chunk(b"IHDR", header)]
    if dpi is not None:
        per_metre = int(dpi / 0.0254 + 0.5)
        out.append(_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)))
    out += [_chunk(b"IDAT", zlib.compress(rows.data, level)), _chunk(b"IEND", b"")]
    return b"".join(out)
