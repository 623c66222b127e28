"""Errors raised by probing.

Every error a user can cause is a :class:`ProbingError` subclass whose message is one sentence
naming the bad input and the fix. Third-party errors are caught at the boundary and re-raised as
one of these with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "ConfigError",
    "DataError",
    "LayoutError",
    "ModelError",
    "ProbingError",
    "ReportError",
    "SchemaError",
    "StoreError",
]


class ProbingError(Exception):
    """Base class of every error probing raises on bad input or a failed run."""


class ConfigError(ProbingError, ValueError):
    """A run spec, option or argument has a wrong key, type or value."""


class ModelError(ProbingError):
    """A model cannot be loaded, is not a ViT, or lacks what was asked of it."""


class DataError(ProbingError):
    """An image source, image file, manifest or label column is unusable."""


class LayoutError(ProbingError, ValueError):
    """A token kind, layer or position does not exist in the model's token layout."""


class SchemaError(ProbingError):
    """A frame or stored table does not follow the documented schema."""


class StoreError(ProbingError):
    """An embedding store is locked, belongs to another model, or cannot be written."""


class ReportError(ProbingError):
    """A report cannot be written (output folder not writable, disk full)."""


class AnalysisError(ProbingError):
    """An analysis is unknown or cannot run on the data it was given."""
