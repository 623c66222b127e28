"""Which class an explanation explains.

Shared by :mod:`probing.attention` (gradient rollout) and :mod:`probing.attribution` (a floor
below both).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

__all__ = ["given_targets", "label_classes", "resolve_targets"]


def resolve_targets(logits, target: int | Sequence[int] | None):
    """Target class per image.

    Parameters
    ----------
    logits : torch.Tensor
        ``(batch, classes)`` model output.
    target : int, sequence of int or None
        One class for all images, one per image, or None for each image's predicted class.

    Returns
    -------
    torch.Tensor
        ``(batch,)`` long tensor on the logits' device.

    Raises
    ------
    ConfigError
        When ``target`` does not give one valid class per image.
    """
    if target is None:
        return logits.argmax(-1)
    return given_targets(target, logits.shape[0], logits.shape[-1], logits.device)


def given_targets(target: int | Sequence[int], batch: int, n_classes: int, device=None):
    """Given target classes checked without logits (no forward pass needed).

    Parameters
    ----------
    target : int or sequence of int
        One class for all images or one per image.
    batch : int
        Number of images.
    n_classes : int
        Number of the model's output classes.
    device : torch.device or str, optional
        Device of the returned tensor (CPU by default).

    Returns
    -------
    torch.Tensor
        ``(batch,)`` long tensor.

    Raises
    ------
    ConfigError
        When ``target`` does not give one valid class per image.
    """
    import torch

    t = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch or int(t.min()) < 0 or int(t.max()) >= n_classes:
        raise ConfigError(
            f"target {target!r} does not give one class in 0..{n_classes - 1} per image "
            f"for {batch} images; pass an int or one int per image."
        )
    return t


def label_classes(values, n_classes: int, option: str):
    """A label column read as class indices of the model's head.

    Parameters
    ----------
    values : array-like
        ``(n,)`` label values (integers ``0..n_classes-1``, possibly stored as floats).
    n_classes : int
        Number of the head's classes.
    option : str
        The option that named the column, for the message (``"logit_lens.target"``).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 class indices.

    Raises
    ------
    ConfigError
        When a value is missing, not an integer, or outside ``0..n_classes-1``.
    """
    import numpy as np
    import pandas as pd

    series = pd.Series(values)
    numeric = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    if series.size == 0 or np.isnan(numeric).any() or np.any(numeric != np.round(numeric)) \
            or numeric.min() < 0 or numeric.max() >= n_classes:
        raise ConfigError(
            f"{option} values are not class indices 0..{n_classes - 1} of the model's head; "
            "name a label column that maps onto the head's classes, or 'prediction' for the "
            "model's own top-1."
        )
    return numeric.astype(np.int64)
