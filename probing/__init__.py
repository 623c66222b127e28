"""probing: look inside Vision Transformers.

Hooks pull token vectors and attention from any timm ViT into pandas token frames (streamed to a
parquet :class:`EmbeddingStore`); analyses run on the frames; reports are written from the
analyses. See the README for the quick start.

Progress and problems are reported on the ``probing`` logger (INFO for progress, WARNING for
problems), and tqdm bars on long loops. As a library probing is silent until logging is
configured (the logger has a ``NullHandler``); the ``probing`` command shows INFO on stderr.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

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

#: Submodules imported on first access (``probing.probes``, ``probing.attention`` ...), so that
#: ``import probing`` stays light (captum, for one, loads only with ``probing.attribution``).
_LAZY = ("attention", "attribution", "maps", "plots", "posenc", "probes", "report", "run",
         "selection", "similarity", "stats", "style", "views")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'probing' has no attribute {name!r}")


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
