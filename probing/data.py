"""Image sources and their preprocessing.

A source is an ordered collection of images with a stable ``image_id`` per image and label
columns. Built in: ``shapes`` (generated, known factors; :mod:`probing.shapes`) and ``digits``
(scikit-learn's bundled 8x8 handwritten digits). From disk: an image folder (one subfolder per
class), a manifest (CSV or parquet with a path column and any label columns) and an IDX file
pair (MNIST's format: :class:`IdxSource`, :mod:`probing.idx`). In memory:
:class:`ArraySource`.

Images are converted to what the model takes (``input_size[0]`` channels): grayscale and 16-bit
images are scaled to 8 bits, RGBA/LA are composited on black, CMYK and palette images are
converted to RGB; then timm's eval transform for the model's data config is applied (resize,
centre crop, to tensor, normalise).
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from .constraints import MAX_COUNT, SEED, Interval, Is, Items, Name, Options, check, suggesting
from .errors import ConfigError, DataError
from .frames import FRAME_COLUMNS
from .idx import idx_labels_path, is_idx_path, read_idx
from .image_cache import ImageCache
from .shapes import BACKGROUNDS, SHAPES, factors_frame, render_shape, shape_factors

__all__ = [
    "ArraySource",
    "check_label_columns",
    "DigitsSource",
    "ImageFolderSource",
    "IdxSource",
    "ImageSource",
    "ManifestSource",
    "Batch",
    "ShapesSource",
    "convert_mode",
    "iter_batches",
    "make_transform",
    "open_source",
    "select_source",
]

OnError = Literal["raise", "skip"]
_COUNT = Interval(int, 1, MAX_COUNT)
N_DIGITS = 1797
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


class ImageSource(ABC):
    """An ordered image collection with stable ids and label columns."""

    name: str = "images"
    on_error: OnError = "raise"

    def __init__(self) -> None:
        self.skipped: list[dict] = []

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def labels(self) -> pd.DataFrame:
        """One row per image, in order: ``image_id`` then label columns."""

    @abstractmethod
    def image(self, i: int) -> Image.Image:
        """The ``i``-th image (0-based position) as a PIL image; DataError when unreadable."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able description (kind and options) that identifies the source."""

    def keep_images(self) -> ImageSource:
        """Keep this source's preprocessed images in memory from now on
        (:mod:`probing.image_cache`): :func:`iter_batches` then reads each image once when
        the whole source fits the budget. A run does this for its source (it reads the images
        several times); a one-off extraction does not need it. Returns the source."""
        if self.image_cache() is None:
            self.__dict__["_image_cache"] = ImageCache(len(self))
        return self

    def image_cache(self) -> ImageCache | None:
        """The images kept by :meth:`keep_images`, or None when it was not called."""
        cache = self.__dict__.get("_image_cache")
        return cache if cache is not None and cache.n_images == len(self) else None

    def fingerprint(self) -> str:
        """Stable hash of the source's identity and content summary (16 hex digits)."""
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def subset(self, n: int | None) -> ImageSource:
        """The first ``n`` images (all when None or when ``n`` is at least their number).

        Raises
        ------
        ConfigError
            When ``n`` is not None or an integer >= 1.
        """
        check(Name.arg("n"), n, (Interval(int, 1, None), None), 512, ConfigError)
        if n is None or n >= len(self):
            return self
        return _Subset(self, np.arange(int(n)), {"first_n": int(n)})

    def where(self, where: str | Sequence[Any] | None) -> ImageSource:
        """The images whose label row matches ``where``, in source order.

        Parameters
        ----------
        where : str, sequence of ids or None
            A pandas query over the label columns (``"label == 1"``, ``"split == 'test'"``,
            ``"image_id < 100"``), or a list of image ids (matched by value or by text, so
            ``["7"]`` finds id 7); None keeps every image.

        Raises
        ------
        ConfigError
            A query pandas cannot evaluate or that is not a true/false condition per image,
            ids that are not in the source, or a filter that keeps no image; the message
            names the expression.
        """
        if where is None:
            return self
        labels = self.labels()
        if isinstance(where, str):
            keep = _query_mask(labels, where, self.name)
        else:
            wanted = [str(w) for w in where]
            text = labels["image_id"].astype(str)
            missing = sorted(set(wanted) - set(text))
            if missing or not wanted:
                raise ConfigError(
                    f"[data] where = {list(where)!r} names image ids that are not in source "
                    f"{self.name!r} ({', '.join(missing[:5]) or 'none listed'}); list ids of "
                    "the source or write a query such as \"label == 1\"."
                )
            keep = text.isin(wanted).to_numpy()
            where = [_py(w) for w in where]
        if not keep.any():
            raise ConfigError(
                f"[data] where = {where!r} keeps none of the {len(labels)} images of source "
                f"{self.name!r}; loosen the condition."
            )
        if keep.all():
            return self
        return _Subset(self, np.flatnonzero(keep), {"where": where})

    def take(self, positions: Sequence[int] | np.ndarray) -> ImageSource:
        """The images at ``positions`` (0-based, in that order) as a source of their own."""
        pos = np.asarray(positions, dtype=np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= len(self)):
            raise DataError(f"positions outside 0..{len(self) - 1} of source {self.name!r}.")
        return _Subset(self, pos, {"positions": pos.tolist()})


def _query_mask(labels: pd.DataFrame, where: str, name: str) -> np.ndarray:
    """Boolean ``(n_images,)`` mask of a pandas query over ``labels``."""
    columns = ", ".join(map(str, labels.columns))
    try:
        mask = labels.eval(where)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad expression
        raise ConfigError(
            f"[data] where = {where!r} is not a query pandas can evaluate over the columns of "
            f"source {name!r} ({columns}): {type(exc).__name__}: {exc}; write e.g. "
            "\"label == 1\"."
        ) from exc
    if not isinstance(mask, pd.Series) or len(mask) != len(labels) \
            or not pd.api.types.is_bool_dtype(mask.dtype):
        raise ConfigError(
            f"[data] where = {where!r} is not a true/false condition per image over the "
            f"columns of source {name!r} ({columns}); write a comparison such as \"label == 1\"."
        )
    return mask.fillna(False).to_numpy(dtype=bool)


def select_source(source: ImageSource, where: str | Sequence[Any] | None = None,
                  n: int | None = None) -> ImageSource:
    """A run's images: ``source`` filtered by ``where`` (:meth:`ImageSource.where`), then its
    first ``n`` (:meth:`ImageSource.subset`)."""
    return source.where(where).subset(n)


class _Subset(ImageSource):
    """Images of ``parent`` at ``positions``; ``tag`` is added to the parent's description."""

    def __init__(self, parent: ImageSource, positions: np.ndarray, tag: dict) -> None:
        super().__init__()
        self.parent, self.positions, self.tag = parent, np.asarray(positions, np.int64), tag
        self.name, self.on_error = parent.name, parent.on_error
        self.skipped = parent.skipped

    def __len__(self) -> int:
        return len(self.positions)

    def labels(self) -> pd.DataFrame:
        return self.parent.labels().iloc[self.positions].reset_index(drop=True)

    def image(self, i: int) -> Image.Image:
        return self.parent.image(int(self.positions[i]))

    def describe(self) -> dict:
        return {**self.parent.describe(), **self.tag}


class ShapesSource(ImageSource):
    """Generated shape images with known factors (see :mod:`probing.shapes`).

    Parameters
    ----------
    n : int
        Number of images (1 to 2**31 - 1); ``image_id`` is 0..n-1.
    seed : int
        Dataset seed (0 to 2**32 - 1); image ``i`` depends on ``(seed, i)`` only.
    size : int
        Image side in pixels (8 to 4096).
    shapes, backgrounds : sequence of str
        Shapes and background kinds to draw from (non-empty subsets of
        :data:`~probing.shapes.SHAPES` and :data:`~probing.shapes.BACKGROUNDS`).
    rotation : bool
        Rotate shapes uniformly at random.

    Raises
    ------
    DataError
        An option outside its range, naming the option and a valid value.
    """

    RULES = {
        "n": (_COUNT, 512),
        "seed": (SEED, 0),
        "size": (Interval(int, 8, 4096), 32),
        "shapes": (Items(Options(*SHAPES), min_len=1), list(SHAPES)),
        "backgrounds": (Items(Options(*BACKGROUNDS), min_len=1), ["plain"]),
        "rotation": (Is(bool), False),
    }

    name = "shapes"

    def __init__(self, n: int = 512, seed: int = 0, size: int = 32,
                 shapes: Sequence[str] = SHAPES, backgrounds: Sequence[str] = ("plain",),
                 rotation: bool = False) -> None:
        super().__init__()
        _check_options("shapes", self.RULES, n=n, seed=seed, size=size, shapes=shapes,
                       backgrounds=backgrounds, rotation=rotation)
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.shapes, self.backgrounds, self.rotation = tuple(shapes), tuple(backgrounds), rotation
        self._factors = [shape_factors(i, self.seed, self.size, self.shapes, self.backgrounds,
                                       self.rotation) for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def labels(self) -> pd.DataFrame:
        return factors_frame(self._factors)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(render_shape(self._factors[i], self.size))

    def describe(self) -> dict:
        return {"kind": "shapes", "n": self.n, "seed": self.seed, "size": self.size,
                "shapes": list(self.shapes), "backgrounds": list(self.backgrounds),
                "rotation": self.rotation}


class DigitsSource(ImageSource):
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grayscale images.

    Columns: ``label`` (0-9) and ``split`` (``test`` for every fifth image, else ``train``).
    Pixel values 0..16 are scaled to 0..255.

    Parameters
    ----------
    n : int, optional
        Use the first ``n`` images (1 to 1,797; all when None).

    Raises
    ------
    DataError
        When ``n`` is out of range.
    """

    name = "digits"
    RULES = {"n": ((Interval(int, 1, N_DIGITS), None), N_DIGITS)}

    def __init__(self, n: int | None = None) -> None:
        super().__init__()
        _check_options("digits", self.RULES, n=n)
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        self._images = images if n is None else images[: int(n)]
        self._labels = digits.target[: len(self._images)]

    def __len__(self) -> int:
        return len(self._images)

    def labels(self) -> pd.DataFrame:
        ids = np.arange(len(self))
        return pd.DataFrame({"image_id": ids, "label": self._labels.astype(np.int64),
                             "split": np.where(ids % 5 == 0, "test", "train")})

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self._images[i], mode="L")

    def describe(self) -> dict:
        return {"kind": "digits", "n": len(self)}


class ArraySource(ImageSource):
    """Images held in memory.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, H, W)`` or ``(n, H, W, C)`` uint8 (C = 1, 3 or 4).
    labels : pandas.DataFrame, optional
        ``n`` rows of label columns (an ``image_id`` column is used when present, else 0..n-1).
    name : str
        Name shown in reports.
    """

    def __init__(self, images: np.ndarray, labels: pd.DataFrame | None = None,
                 name: str = "arrays") -> None:
        super().__init__()
        images = np.asarray(images)
        if images.ndim not in (3, 4) or images.dtype != np.uint8 or len(images) == 0:
            raise DataError(
                f"images of shape {images.shape} and dtype {images.dtype} are not a non-empty "
                "(n, H, W[, C]) uint8 array; convert them first."
            )
        self._images, self.name = images, name
        frame = pd.DataFrame(index=range(len(images))) if labels is None else labels.copy()
        if len(frame) != len(images):
            raise DataError(f"labels has {len(frame)} rows for {len(images)} images; match them.")
        check_label_columns(frame.columns, "labels", allowed=("image_id",))
        if "image_id" not in frame.columns:
            frame.insert(0, "image_id", np.arange(len(images)))
        _check_unique_ids(frame["image_id"], "labels")
        self._labels = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self._images)

    def labels(self) -> pd.DataFrame:
        return self._labels

    def image(self, i: int) -> Image.Image:
        arr = self._images[i]
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        return Image.fromarray(arr)

    def describe(self) -> dict:
        digest = hashlib.sha256(self._images.tobytes()).hexdigest()[:16]
        return {"kind": "arrays", "name": self.name, "shape": list(self._images.shape),
                "sha": digest}


class IdxSource(ArraySource):
    """An IDX images file (MNIST's format, :mod:`probing.idx`) and its labels file.

    Parameters
    ----------
    path : str or path
        The images file, ``(n, H, W)`` uint8 (``t10k-images-idx3-ubyte.gz``).
    labels : str, path or False, optional
        The labels file, ``(n,)`` uint8, read into the ``label`` column; by default the sibling
        named with ``idx1``/``labels`` for ``idx3``/``images``; ``False`` for no labels.
    """

    def __init__(self, path: str | os.PathLike, labels: str | os.PathLike | bool | None = None
                 ) -> None:
        self.path = Path(path).expanduser()
        self.labels_path = None if labels is False else \
            idx_labels_path(self.path) if labels in (None, True) else Path(labels).expanduser()
        frame = None if self.labels_path is None else \
            pd.DataFrame({"label": read_idx(self.labels_path).reshape(-1).astype("int64")})
        super().__init__(read_idx(self.path), frame, name=self.path.name.split("-idx")[0])

    def describe(self) -> dict:
        return {**super().describe(), "kind": "idx", "path": str(self.path),
                "labels": None if self.labels_path is None else str(self.labels_path)}


class _FileSource(ImageSource):
    """A source whose images are files listed in a frame with a ``_path`` column."""

    def __init__(self, frame: pd.DataFrame, on_error: OnError) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise DataError(f"on_error={on_error!r} is unknown; use 'raise' or 'skip'.")
        self.on_error = on_error
        self._frame = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self._frame)

    def labels(self) -> pd.DataFrame:
        return self._frame.drop(columns=["_path"])

    def path(self, i: int) -> Path:
        """File of the ``i``-th image."""
        return Path(self._frame["_path"].iloc[i])

    def image(self, i: int) -> Image.Image:
        path = self.path(i)
        try:
            with Image.open(path) as img:
                img.load()
                return img
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                Image.DecompressionBombError) as exc:
            raise suggesting(DataError(
                f"image {path} cannot be read ({exc.__class__.__name__}: {exc}); replace or "
                "remove it, or skip unreadable images with on_error='skip'."
            ), on_error="skip") from exc

    def _file_summary(self) -> list:
        out = []
        for p in self._frame["_path"]:
            try:
                st = os.stat(p)
                out.append([str(p), st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([str(p), None, None])
        return out


class ImageFolderSource(_FileSource):
    """An image folder with one subfolder per class.

    ``label`` is the subfolder name; ``path`` the file path relative to the root; ``image_id``
    the position in the sorted (class, file name) order, so ids are stable while the folder is
    unchanged.
    """

    def __init__(self, root: str | os.PathLike, on_error: OnError = "raise") -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist or is not a folder.")
        rows = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(sub.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append({"_path": str(f), "label": sub.name,
                                 "path": str(f.relative_to(root))})
        if not rows:
            raise DataError(
                f"image folder {root} holds no images in class subfolders; put images in "
                f"root/CLASS/*.png (suffixes {', '.join(IMAGE_SUFFIXES)})."
            )
        frame = pd.DataFrame(rows)
        frame.insert(0, "image_id", np.arange(len(frame), dtype=np.int64))
        super().__init__(frame, on_error)
        self.root, self.name = root, root.name

    def describe(self) -> dict:
        return {"kind": "folder", "root": str(self.root), "files": self._file_summary()}


class ManifestSource(_FileSource):
    """Images listed in a CSV or parquet manifest.

    Parameters
    ----------
    path : str or path
        The manifest. Relative image paths are read relative to the manifest's folder; paths
        are only ever read, never written.
    path_column : str
        Column with image paths.
    id_column : str, optional
        Column with unique image ids; the row number when omitted.
    on_error : {"raise", "skip"}
        What to do with missing or unreadable images.
    """

    RULES = {"path_column": (Is(str), "path"), "id_column": ((Is(str), None), "id"),
             "on_error": (Options("raise", "skip"), "skip")}

    def __init__(self, path: str | os.PathLike, path_column: str = "path",
                 id_column: str | None = None, on_error: OnError = "raise") -> None:
        path = Path(path)
        _check_options("manifest", self.RULES, path_column=path_column, id_column=id_column,
                       on_error=on_error)
        if not path.is_file():
            raise DataError(f"manifest {path} does not exist; check the path.")
        try:
            frame = (pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq")
                     else pd.read_csv(path))
        except Exception as exc:  # noqa: BLE001 - pandas raises many types
            raise DataError(f"manifest {path} cannot be read as CSV or parquet: {exc}.") from exc
        if path_column not in frame.columns:
            raise DataError(
                f"manifest {path} has no {path_column!r} column (columns: "
                f"{', '.join(map(str, frame.columns))}); pass path_column= or add one."
            )
        if len(frame) == 0:
            raise DataError(f"manifest {path} lists no images; add rows.")
        blank = frame[path_column].isna()
        if blank.any():
            raise DataError(
                f"manifest {path} has {int(blank.sum())} row(s) without a {path_column!r} "
                f"(first: row {int(blank.to_numpy().argmax())}); fill or drop them."
            )
        not_text = [i for i, p in enumerate(frame[path_column]) if not isinstance(p, str)]
        if not_text:
            i = not_text[0]
            raise DataError(
                f"manifest {path} column {path_column!r} holds {frame[path_column].iloc[i]!r} "
                f"(row {i}), not an image file path; point path_column= at the column of "
                "image paths."
            )
        base = path.parent
        full = [str(p if Path(p).is_absolute() else base / p) for p in frame[path_column]]
        if id_column is None and "image_id" in frame.columns:
            id_column = "image_id"  # a manifest's own image_id column is its id column
        check_label_columns(frame.drop(columns=[path_column]).columns, f"manifest {path}",
                            allowed=(id_column,))
        if id_column is not None:
            if id_column not in frame.columns:
                raise DataError(f"manifest {path} has no id column {id_column!r}; fix id_column.")
            ids = frame[id_column]
            _check_unique_ids(ids, f"manifest {path} column {id_column!r}")
            frame = frame.drop(columns=[id_column])
        else:
            ids = np.arange(len(frame), dtype=np.int64)
        frame = frame.copy()
        frame.insert(0, "image_id", ids)
        frame["_path"] = full
        missing = [p for p in full if not Path(p).is_file()]
        if missing and on_error != "skip":
            raise suggesting(DataError(
                f"manifest {path} lists {len(missing)} missing file(s), e.g. {missing[0]}; fix "
                "the paths or skip them with on_error='skip'."
            ), on_error="skip")
        super().__init__(frame, on_error)
        self.manifest, self.name = path, path.stem

    def describe(self) -> dict:
        digest = hashlib.sha256(self.manifest.read_bytes()).hexdigest()[:16]
        return {"kind": "manifest", "path": str(self.manifest), "sha": digest,
                "files": self._file_summary()}


def _check_options(source: str, rules: dict, **values: Any) -> None:
    """Check a source's options against its ``RULES`` (``{option: (rule, example)}``)."""
    for key, value in values.items():
        rule, example = rules[key]
        check(Name.arg(key, owner=f"{source} option"), value, rule, example, DataError)


def check_label_columns(columns: Iterable[object], where: str,
                        allowed: Iterable[object] = ()) -> None:
    """Raise DataError when a label column takes a name the token frame uses itself
    (``image_id``, ``layer``, ``kind``, ``token``, ``row``, ``col``, ``emb``): joined onto token
    rows it would silently replace them. ``allowed`` names are the source's own id column."""
    clash = [c for c in columns if c in FRAME_COLUMNS and c not in set(allowed)]
    if clash:
        raise DataError(
            f"{where} has a label column named {clash[0]!r}, a name the token frame uses for "
            f"its own column; rename that column (reserved: {', '.join(FRAME_COLUMNS)})."
        )


def _check_unique_ids(ids: pd.Series, where: str) -> None:
    dup = pd.Series(ids)[pd.Series(ids).duplicated()]
    if len(dup):
        raise DataError(
            f"{where} has duplicate image ids (e.g. {dup.iloc[0]!r}); make the ids unique."
        )


# ------------------------------------------------------------------------ opening specs
def open_source(spec: str | os.PathLike | ImageSource, **options: Any) -> ImageSource:
    """Open an image source from a spec.

    Parameters
    ----------
    spec : str, path or ImageSource
        ``"shapes"`` / ``"shapes:n=2000,seed=1,backgrounds=plain+noise,rotation=true"``,
        ``"digits"``, an image folder path, a ``.csv`` / ``.parquet`` manifest path, or an IDX
        images file (``...-idx3-ubyte[.gz]``, :class:`IdxSource`; option ``labels``).
    **options
        Keyword options of the source class (override those in the spec string).
    """
    if isinstance(spec, ImageSource):
        return spec
    text = os.fspath(spec)
    name, _, rest = text.partition(":")
    if name in ("shapes", "digits") and not Path(text).exists():
        opts = {**_parse_options(rest), **options}
        kind = ShapesSource if name == "shapes" else DigitsSource
        _known_options(kind, text, (), opts)
        return kind(**opts)
    path = Path(text).expanduser()
    if is_idx_path(path):
        _known_options(IdxSource, text, (path,), options)
        return IdxSource(path, **options)
    kind = ImageFolderSource if path.is_dir() else ManifestSource \
        if path.suffix.lower() in (".csv", ".parquet", ".pq") else None
    if kind is not None:
        _known_options(kind, text, (path,), options)
        return kind(path, **options)
    raise DataError(
        f"data source {text!r} is not 'shapes', 'digits', an image folder, a CSV/parquet "
        "manifest or an IDX file (-idx3-ubyte); check the path or name."
    )


def _known_options(kind: type, text: str, args: tuple, options: dict) -> None:
    """DataError when ``options`` are not keyword options of ``kind``'s constructor."""
    import inspect

    params = inspect.signature(kind).parameters
    try:
        inspect.signature(kind).bind(*args, **options)
    except TypeError as exc:
        known = [p for p in params if p not in ("path", "root")]
        raise DataError(
            f"data source {text!r} has an unknown option ({exc}); the options of "
            f"{kind.__name__} are {', '.join(known) or 'none'}."
        ) from exc


def _parse_options(text: str) -> dict:
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"data option {item!r} is not key=value; write e.g. 'shapes:n=256'.")
        key = key.strip()
        value = value.strip()
        if "+" in value:
            out[key] = tuple(value.split("+"))
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = (value,) if key in ("shapes", "backgrounds") else value
    return out


# ------------------------------------------------------------------------ preprocessing
def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert ``img`` to 1 (``L``) or 3 (``RGB``) channels.

    16-bit and 32-bit integer images are scaled to 8 bits by their type's range; float images are
    clipped to [0, 1] then scaled; RGBA / LA / palette-with-alpha are composited on black.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.round(np.clip(arr / top, 0, 1) * 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
        img = Image.fromarray(np.round(arr * 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    if channels not in (1, 3):
        raise DataError(f"models with {channels} input channels are not supported; use 1 or 3.")
    return img if img.mode == target else img.convert(target)


def make_transform(data_config: dict) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval transform for ``data_config``, preceded by :func:`convert_mode`.

    Returns
    -------
    callable
        PIL image -> ``(C, H, W)`` float32 tensor.
    """
    from timm.data import create_transform

    cfg = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct",
                                       "crop_mode") if k in data_config}
    tf = create_transform(**cfg, is_training=False)
    channels = int(data_config["input_size"][0])

    def apply(img: Image.Image) -> torch.Tensor:
        return tf(convert_mode(img, channels))

    return apply


@dataclass
class Batch:
    """A preprocessed batch: ``images`` ``(B, C, H, W)`` and their positions and ids."""

    images: torch.Tensor
    positions: np.ndarray
    image_ids: np.ndarray
    skipped: list[dict] = field(default_factory=list)


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, source: ImageSource, transform, positions: np.ndarray) -> None:
        self.source, self.transform, self.positions = source, transform, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        i = int(self.positions[k])
        try:
            return i, self.transform(self.source.image(i)), None
        except DataError as exc:  # raised again in the main process (see iter_batches)
            return i, None, str(exc)


def _collate(items):
    """Stack the readable images of a batch (in the loader worker, so pinning sees one tensor)."""
    ok = [t for _, t, _ in items if t is not None]
    return ([(i, err) for i, _, err in items], torch.stack(ok) if ok else torch.empty(0))


def iter_batches(
    source: ImageSource,
    data_config: dict,
    batch_size: int = 64,
    positions: Sequence[int] | np.ndarray | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Preprocessed batches of ``source`` in order.

    Parameters
    ----------
    positions : sequence of int, optional
        Which images (0-based positions) to load; all by default.
    num_workers : int
        DataLoader worker processes for decoding (and stacking) images.
    pin_memory : bool
        Return batches in page-locked host memory (done by the DataLoader's pinning thread;
        only when CUDA is available) so copies to the GPU can be asynchronous.

    Yields
    ------
    Batch
        Unreadable images are skipped (and listed in ``Batch.skipped``) when the source's
        ``on_error`` is ``"skip"``; otherwise they raise :class:`DataError`.
    """
    check(Name.arg("batch_size"), batch_size, _COUNT, 64)
    check(Name.arg("num_workers"), num_workers, Interval(int, 0, MAX_COUNT), 0)
    pos = np.arange(len(source)) if positions is None else np.asarray(positions, dtype=np.int64)
    ids = source.labels()["image_id"].to_numpy()
    cache = source.image_cache()
    key = ImageCache.key(data_config) if cache is not None and cache.enabled(data_config) \
        else None
    cached = None if key is None else cache.get(key, pos)
    if cached is not None:  # every image read before: no decoding, no loader
        for start in range(0, len(pos), batch_size):
            p = pos[start:start + batch_size]
            images = torch.stack(cached[start:start + batch_size])
            yield Batch(images.pin_memory() if pin_memory and torch.cuda.is_available()
                        else images, p, ids[p], [])
        return
    loader = torch.utils.data.DataLoader(
        _Dataset(source, make_transform(data_config), pos), batch_size=batch_size,
        num_workers=num_workers, collate_fn=_collate,
        pin_memory=bool(pin_memory) and torch.cuda.is_available(),
    )
    for items, images in loader:
        skipped = [{"position": i, "image_id": _py(ids[i]), "error": err}
                   for i, err in items if err is not None]
        if skipped and source.on_error != "skip":
            # raised here, not in a loader worker, so the message stays one sentence
            raise suggesting(DataError(skipped[0]["error"]), on_error="skip")
        p = np.array([i for i, err in items if err is None], dtype=np.int64)
        if key is not None:
            cache.put(key, p, images)
        yield Batch(images, p, ids[p], skipped)


def _py(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x
