"""A model's preprocessing, overridden: ``load_model(..., preprocessing={...})``.

timm resolves a model's preprocessing (its data config) from the architecture's pretrained
tag. A checkpoint fine-tuned with another normalisation, or a study that must match another
pipeline, needs its own: ``preprocessing`` replaces these keys of the resolved config
(:data:`PREPROCESSING_KEYS`):

- ``mean``, ``std``: the normalisation, one value per input channel (or one for all), on
  pixels scaled to [0, 1]; ``std`` positive;
- ``interpolation``: the resize filter (:data:`INTERPOLATIONS`);
- ``crop_pct``: the centre crop's share of the resized image, in (0, 1];
- ``crop_mode``: :data:`CROP_MODES`, as timm's eval transform reads it.

The input size stays the model's own (build the model with ``img_size=`` to change it). The
store key holds the whole preprocessing, so a store extracted with other values is another
store, never reused.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["CROP_MODES", "INTERPOLATIONS", "PREPROCESSING_KEYS", "override_preprocessing",
           "per_channel"]

PREPROCESSING_KEYS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")
#: resize filters of timm's eval transform
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")


def per_channel(label: str, name: str, value: Any, chans: int) -> tuple[float, ...]:
    """``value`` as ``chans`` finite floats: one number broadcast, or exactly ``chans``.

    Parameters
    ----------
    label : str
        What the value is called in messages (``"mapping option"``, ``"preprocessing"``).
    name : str
        ``"mean"`` or ``"std"`` (a ``std`` must be positive).
    value : float or sequence of float
        The caller's value.
    chans : int
        Input channels of the model.

    Raises
    ------
    ConfigError
        Not numbers, not finite, the wrong count, or a ``std`` that is not positive.
    """
    values = (value,) if isinstance(value, numbers.Real) else value
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{label} {name}={value!r} is not a number or a list of numbers; pass e.g. "
            f"{name}=0.5 or {name}=(0.5, 0.5, 0.5)."
        ) from exc
    if len(values) == 1:
        values = values * chans
    if len(values) != chans:
        raise ConfigError(
            f"{label} {name}={value!r} has {len(values)} values but the model takes "
            f"{chans} input channel(s); pass one value or {chans}."
        )
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{label} {name}={value!r} is not finite; pass finite numbers.")
    if name == "std" and min(values) <= 0:
        raise ConfigError(f"{label} std={value!r} must be positive; pass e.g. std=0.5.")
    return values


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"preprocessing {name}={value!r} is not one of "
                          f"{', '.join(options)}; pass one of them.")
    return value


def override_preprocessing(config: Mapping[str, Any],
                           preprocessing: Mapping[str, Any] | None) -> dict:
    """``config`` (a model's data config) with the keys of ``preprocessing`` replaced.

    Parameters
    ----------
    config : mapping
        timm data-config keys, ``input_size`` ``(channels, height, width)`` among them.
    preprocessing : mapping, optional
        Some of :data:`PREPROCESSING_KEYS` (see the module docstring); None or empty: no
        change.

    Returns
    -------
    dict
        A new config (``config`` is not changed); ``mean`` and ``std`` as tuples of one float
        per channel.

    Raises
    ------
    ConfigError
        An unknown key (with a suggestion) or a value out of its range.
    """
    out = dict(config)
    if not preprocessing:
        return out
    if not isinstance(preprocessing, Mapping):
        raise ConfigError(f"preprocessing {preprocessing!r} is not a table of keys; pass e.g. "
                          "preprocessing={'mean': [0.5], 'std': [0.5]}.")
    chans = int(out["input_size"][0])
    for key, value in preprocessing.items():
        if key not in PREPROCESSING_KEYS:
            close = difflib.get_close_matches(str(key), PREPROCESSING_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"use {', '.join(PREPROCESSING_KEYS)} (the input size is the model's own)."
            raise ConfigError(f"preprocessing key {key!r} is not one that can be set; {hint}")
        if key in ("mean", "std"):
            out[key] = per_channel("preprocessing", key, value, chans)
        elif key == "crop_pct":
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not 0 < value <= 1:
                raise ConfigError(f"preprocessing crop_pct={value!r} is not in (0, 1]; pass "
                                  "e.g. crop_pct=0.875, or 1.0 for no crop.")
            out[key] = float(value)
        else:
            out[key] = _choice(key, value, INTERPOLATIONS if key == "interpolation"
                               else CROP_MODES)
    return out
