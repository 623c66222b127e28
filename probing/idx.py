"""The IDX file format (MNIST's): a big-endian header, then the raw array.

Header: two zero bytes, a type byte (``0x08`` = unsigned byte, the only type MNIST uses), the
number of dimensions ``d``, then ``d`` big-endian 32-bit sizes; the data follow in C order. Files
may be gzipped (``.gz``). An images file (``*-idx3-ubyte``) holds ``(n, rows, cols)``, its labels
file (``*-idx1-ubyte``, the same name with ``idx1`` for ``idx3`` and ``labels`` for ``images``)
holds ``(n,)``.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["IDX_PATTERN", "idx_labels_path", "is_idx_path", "read_idx"]

#: File names the IDX source recognises (``t10k-images-idx3-ubyte.gz``, ``x.idx3``...).
IDX_PATTERN = re.compile(r"[-.]idx\d(-ubyte)?(\.gz)?$", re.IGNORECASE)


def is_idx_path(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is an IDX file name (``...-idx3-ubyte`` optionally ``.gz``)."""
    return bool(IDX_PATTERN.search(Path(path).name))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array.

    Parameters
    ----------
    path : str or path
        The file (``.gz`` is decompressed).

    Returns
    -------
    numpy.ndarray
        uint8 of the header's shape, e.g. ``(n, 28, 28)`` for images, ``(n,)`` for labels.

    Raises
    ------
    DataError
        When the file is missing, not IDX, not unsigned bytes, or shorter than its header says.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist; check the path.")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"IDX file {path} cannot be read ({exc}); check the file.") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (its magic number does not start with two "
                        "zero bytes); pass an MNIST-style -idx3-ubyte / -idx1-ubyte file.")
    if data[2] != 0x08:
        raise DataError(f"IDX file {path} holds type 0x{data[2]:02x}, not unsigned bytes (0x08); "
                        "only uint8 IDX files are images and labels.")
    ndim = data[3]
    head = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims)) if dims else 0
    if ndim == 0 or len(data) < head + size:
        raise DataError(f"IDX file {path} is truncated: its header says {dims} bytes of data but "
                        f"it has {max(len(data) - head, 0)}; download it again.")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=head).reshape(dims)


def idx_labels_path(images: str | os.PathLike) -> Path:
    """The labels file next to an images file: ``idx3`` -> ``idx1``, ``images`` -> ``labels``.

    Raises
    ------
    DataError
        When no such sibling exists (pass the labels file explicitly).
    """
    images = Path(images).expanduser()
    name = re.sub(r"idx3", "idx1", images.name, flags=re.IGNORECASE)
    name = re.sub(r"images", "labels", name, flags=re.IGNORECASE)
    candidate = images.with_name(name)
    if candidate == images or not candidate.is_file():
        raise DataError(
            f"no labels file {candidate.name} next to IDX images {images}; pass its path as the "
            "source option labels = \"...-idx1-ubyte.gz\" (or labels = false for none)."
        )
    return candidate
