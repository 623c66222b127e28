"""probing: look inside Vision Transformers.

Hooks pull token vectors and attention from any timm ViT into pandas token frames (streamed to a
parquet :class:`EmbeddingStore`); analyses run on the frames; reports are written from the
analyses. See the README for the quick start.

Progress and problems are reported on the ``probing`` logger (INFO for progress, WARNING for
problems), and tqdm bars on long loops. As a library probing is silent until logging is
configured (the logger has a ``NullHandler``); the ``probing`` command shows INFO on stderr.

``import probing`` is light: each public name's module is imported when the name is first used
(:func:`probing.lazy.lazy_face`), so torch, timm and the rest load only when needed.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .lazy import lazy_face

if TYPE_CHECKING:  # the names below are imported on first use (see _HOMES)
    from .data import (
        ArraySource,
        DigitsSource,
        IdxSource,
        ImageFolderSource,
        ImageSource,
        ManifestSource,
        ShapesSource,
        open_source,
    )
    from .errors import (
        AnalysisError,
        ConfigError,
        DataError,
        LayoutError,
        ModelError,
        ProbingError,
        ReportError,
        SchemaError,
        StoreError,
    )
    from .extract import extract
    from .frames import embedding_matrix, to_frame, validate_frame
    from .hooks import capture
    from .layout import TokenLayout
    from .models import LoadedModel, load_model, random_init_copy
    from .selection import LAYER_EMBED, LAYER_NORM
    from .store import EmbeddingStore

#: Home module of each public name: ``import probing`` stays light (no torch, timm, captum,
#: scikit-learn or matplotlib), and ``from probing import X`` imports X's home on first use.
_HOMES = {
    **dict.fromkeys(("ArraySource", "DigitsSource", "IdxSource", "ImageFolderSource",
                     "ImageSource", "ManifestSource", "ShapesSource", "open_source"), ".data"),
    **dict.fromkeys(("AnalysisError", "ConfigError", "DataError", "LayoutError", "ModelError",
                     "ProbingError", "ReportError", "SchemaError", "StoreError"), ".errors"),
    "extract": ".extract",
    **dict.fromkeys(("embedding_matrix", "to_frame", "validate_frame"), ".frames"),
    "capture": ".hooks",
    "TokenLayout": ".layout",
    **dict.fromkeys(("LoadedModel", "load_model", "random_init_copy"), ".models"),
    **dict.fromkeys(("LAYER_EMBED", "LAYER_NORM"), ".selection"),
    "EmbeddingStore": ".store",
}

lazy_face(__name__, _HOMES)

try:
    __version__ = version("probing")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = [
    "LAYER_EMBED",
    "LAYER_NORM",
    "AnalysisError",
    "ArraySource",
    "ConfigError",
    "DataError",
    "DigitsSource",
    "EmbeddingStore",
    "IdxSource",
    "ImageFolderSource",
    "ImageSource",
    "LayoutError",
    "LoadedModel",
    "ManifestSource",
    "ModelError",
    "ProbingError",
    "ReportError",
    "SchemaError",
    "ShapesSource",
    "StoreError",
    "TokenLayout",
    "capture",
    "embedding_matrix",
    "extract",
    "load_model",
    "open_source",
    "random_init_copy",
    "to_frame",
    "validate_frame",
]

logging.getLogger("probing").addHandler(logging.NullHandler())
