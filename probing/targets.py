"""Which class of the model's head a label or an explanation means.

- :func:`resolve_targets`: the target class per image of gradient rollout and attribution
  (shared by :mod:`probing.attention` and :mod:`probing.attribution`, a floor above).
- :func:`label_map`: the one rule of how a label column maps onto the head's ``C`` classes,
  used by the model card, the figures' predicted-class names
  (:meth:`probing.run.RunContext.shown_labels`) and the analyses that score the head against a
  label column (:func:`label_classes`: logit lens, head ablation). The rules, in this order:

  1. ``"integer class index"``: every non-missing value is an integer in ``0..C-1`` (also
     digit strings and integral floats; booleans are not);
  2. ``"class names"``: every value is one of the model's class names (a candidate list in
     class order, :func:`model_class_names`: the demo model's shapes, a timm model's
     ``pretrained_cfg["label_names"]``, or timm's ImageNet synsets / descriptions);
  3. ``"code column"``: another column of the same label frame holds integers in ``0..C-1``
     in one-to-one correspondence with the labels (``shape_id`` beside ``label``).

  The :class:`LabelMap` says which rule applied, or why none did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import ConfigError

if TYPE_CHECKING:
    from .models import LoadedModel

__all__ = ["LabelMap", "given_targets", "label_classes", "label_map", "model_class_names",
           "resolve_targets"]


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




@dataclass(frozen=True)
class LabelMap:
    """How a label column maps onto the head's classes (:func:`label_map`).

    Attributes
    ----------
    column : str or None
        The label column.
    target : numpy.ndarray or None
        ``(n,)`` int64 class index per row of the label frame, -1 where the label is missing;
        None when no rule applies.
    rule : str
        The rule that applied (``"integer class index"``, ``"class names"``, ``"the class
        index of column 'shape_id'"``), or the sentence saying why none did.
    names : dict
        ``{class index: label value}`` of the classes the mapping names (every class under
        rules 1 and 2, the observed codes under rule 3); empty when no rule applies.
    """

    column: str | None
    target: np.ndarray | None
    rule: str
    names: dict = field(default_factory=dict)

    @property
    def maps(self) -> bool:
        """Whether the column maps onto the head's classes."""
        return self.target is not None


def _integers(values: pd.Series) -> np.ndarray | None:
    """``values`` as int64 when every one is an integer (digit strings and integral floats
    too, booleans not), else None."""
    if pd.api.types.is_bool_dtype(values.dtype) or any(
            isinstance(v, (bool, np.bool_)) for v in values.tolist()):
        return None
    num = pd.to_numeric(pd.Series(values.to_numpy(dtype=object)), errors="coerce")
    num = num.astype("float64").to_numpy()
    if np.isnan(num).any() or np.any(num != np.round(num)):
        return None
    return num.astype(np.int64)


def _with_missing(missing: np.ndarray, codes: np.ndarray) -> np.ndarray:
    target = np.full(len(missing), -1, dtype=np.int64)
    target[~missing] = codes
    return target


def label_map(labels: pd.DataFrame, column: str, n_classes: int,
              names: Sequence[Sequence[str]] = ()) -> LabelMap:
    """Map a label column onto class indices ``0..n_classes-1`` (rules in the module doc).

    Parameters
    ----------
    labels : pandas.DataFrame
        ``(n, columns)`` label frame (``image_id`` and label columns, e.g. the store's).
    column : str
        The label column (missing values map to -1).
    n_classes : int
        Classes of the model's head (0: no head).
    names : sequence of name lists
        Candidate lists of the model's class names, each in class order
        (:func:`model_class_names`); lists of another length than ``n_classes`` are ignored.

    Returns
    -------
    LabelMap
        The mapping, or (``target`` None) the reason why the column does not map.
    """
    def no(reason: str) -> LabelMap:
        return LabelMap(column, None, reason)

    if n_classes <= 0:
        return no("the model has no classification head")
    if column not in labels.columns:
        return no(f"the data has no column {column!r}")
    values = labels[column]
    missing = values.isna().to_numpy(dtype=bool)
    present = values[~missing]
    if len(present) == 0:
        return no(f"column {column!r} holds no labels")
    top = n_classes - 1
    codes = _integers(present)  # rule 1
    if codes is not None and codes.min() >= 0 and codes.max() <= top:
        return LabelMap(column, _with_missing(missing, codes), "integer class index",
                        {k: str(k) for k in range(n_classes)})
    text = present.astype(str)
    lists = [list(map(str, c)) for c in names if len(c) == n_classes]
    for candidate in lists:  # rule 2
        lookup = {name: i for i, name in enumerate(candidate)}
        if text.isin(list(lookup)).all():
            return LabelMap(column, _with_missing(missing, text.map(lookup).to_numpy(np.int64)),
                            "class names", dict(enumerate(candidate)))
    for other in labels.columns.drop([column, "image_id"], errors="ignore"):  # rule 3
        other_codes = _integers(labels[other][~missing])
        if other_codes is None or other_codes.min() < 0 or other_codes.max() > top:
            continue
        pairs = pd.DataFrame({"label": present.to_numpy(dtype=object),
                              "code": other_codes}).drop_duplicates()
        if pairs["label"].is_unique and pairs["code"].is_unique:
            return LabelMap(column, _with_missing(missing, other_codes),
                            f"the class index of column {other!r}",
                            dict(zip(pairs["code"].tolist(), pairs["label"].tolist())))
    example = text.iloc[0]
    if codes is not None:
        bad = codes[(codes < 0) | (codes > top)][0]
        what = f"integers outside 0..{top} (e.g. {bad}), so not the head's class index"
    else:
        what = f"labels such as {example!r} that are not class indices 0..{top}"
    known = ("the model's class names are unknown" if not lists else
             f"{example!r} is not one of the model's {n_classes} class names")
    return no(f"column {column!r} holds {what}, {known}, and no integer column in 0..{top} "
              "corresponds one to one with it")


def label_classes(labels: pd.DataFrame, column: str, n_classes: int, option: str,
                  names: Sequence[Sequence[str]] = (), image_ids=None) -> np.ndarray:
    """A label column read as class indices of the model's head (:func:`label_map`).

    Parameters
    ----------
    labels : pandas.DataFrame
        ``(n, columns)`` label frame with ``image_id``.
    column : str
        The label column.
    n_classes : int
        Number of the head's classes.
    option : str
        The option that named the column, for the message (``"logit_lens.target"``).
    names : sequence of name lists
        Candidate lists of the model's class names (:func:`model_class_names`).
    image_ids : array-like, optional
        ``(m,)`` ids whose classes are wanted, in that order (default: every row).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` int64 class indices.

    Raises
    ------
    ConfigError
        When the column does not map (with :func:`label_map`'s reason), or a wanted image has
        no label.
    """
    mapping = label_map(labels, column, n_classes, names)
    if not mapping.maps:
        raise ConfigError(f"{option}={column!r} does not map onto the model's {n_classes} "
                          f"classes: {mapping.rule}; name a label column that does, or "
                          "'prediction' for the model's own top-1.")
    y = mapping.target
    if image_ids is not None:
        y = pd.Series(y, index=labels["image_id"].to_numpy()).reindex(
            np.asarray(image_ids)).fillna(-1).to_numpy(dtype=np.int64)
    if (y < 0).any():
        raise ConfigError(f"{option}={column!r} has no label for {int((y < 0).sum())} of the "
                          "images; fill the labels, or use 'prediction'.")
    return y


def model_class_names(loaded: LoadedModel) -> list[list[str]]:
    """Candidate lists of the names of the head's classes, each in class order.

    The model's own names when known (the demo model's shapes in ``shape_id`` order, a timm
    model's ``pretrained_cfg["label_names"]``), else timm's ImageNet synsets and descriptions
    when timm can tell the subset of a head of that many classes; empty when unknown.
    """
    n = int(getattr(loaded.model, "num_classes", 0) or 0)
    if n == 0:
        return []
    if loaded.name == "demo":
        from .shapes import SHAPES  # the demo model's classes, in shape_id order

        return [list(SHAPES)] if len(SHAPES) == n else []
    cfg = getattr(loaded.model, "pretrained_cfg", None) or {}
    own = cfg.get("label_names")
    if own is not None and len(own) == n:
        return [[str(x) for x in own]]
    if loaded.arch.get("kind") != "timm":
        return []
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(loaded.model)
        if not subset:
            return []
        info = ImageNetInfo(subset)
        if info.num_classes() != n:
            return []
        return [list(info.label_names()), [info.index_to_description(i) for i in range(n)]]
    except Exception:  # noqa: BLE001 - optional metadata: no names is a fine answer
        return []
