"""Which images an analysis looks at: one home for every "n images" parameter.

A class-sorted folder's first ``n`` images are all one class, so the default is a seeded
*stratified* selection: the images of each class (of a label column) are shuffled by the seed,
then taken round-robin over the classes (sorted), so ``n`` images cover ``min(n, classes)``
classes and class counts differ by at most one while every class has images left. Without a
label column the stratified selection is a seeded shuffle. ``"first"`` keeps the old source
order; ``"shuffled"`` ignores labels. :func:`pick_images` takes an explicit id list in its
order (the ``images = [...]`` parameter of the figure analyses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .constraints import Interval, Is, Items, Name, Options, check
from .errors import ConfigError

__all__ = ["HOW", "IMAGE_IDS", "describe_images", "label_column", "pick_images", "select_images"]

How = Literal["stratified", "first", "shuffled"]
HOW: tuple[str, ...] = ("stratified", "first", "shuffled")

#: label columns tried, in order, when none is named
DEFAULT_COLUMNS: tuple[str, ...] = ("label", "target", "class")


def label_column(columns: Sequence[object], prefer: str | None = None) -> str | None:
    """The label column of a label frame: ``prefer`` when given, else the first of
    :data:`DEFAULT_COLUMNS` present, else None.

    Raises
    ------
    ConfigError
        When ``prefer`` is not among ``columns``.
    """
    names = [str(c) for c in columns]
    if prefer is not None:
        if prefer not in names:
            raise ConfigError(
                f"label column {prefer!r} is not a column of the data (columns: "
                f"{', '.join(n for n in names if n != 'image_id')}); name one of those."
            )
        return prefer
    return next((c for c in DEFAULT_COLUMNS if c in names), None)


def select_images(ids: Sequence[Any] | np.ndarray, labels: Sequence[Any] | np.ndarray | None,
                  n: int | None, seed: int = 0, how: How = "stratified") -> np.ndarray:
    """Choose ``n`` of ``ids``.

    Parameters
    ----------
    ids : sequence
        ``(n_images,)`` image ids in source order.
    labels : sequence, optional
        ``(n_images,)`` class of each image (missing values form a class of their own); None:
        no labels (``"stratified"`` is then a seeded shuffle).
    n : int, optional
        How many (all when None or at least ``len(ids)``; the order still follows ``how``).
    seed : int
        Seed of the shuffles (same seed, same selection).
    how : {"stratified", "first", "shuffled"}
        Round-robin over classes shuffled within class; the first ``n``; a seeded shuffle.

    Returns
    -------
    numpy.ndarray
        ``(min(n, n_images),)`` chosen ids, in the order analyses show them (round-robin
        order for ``"stratified"``: the first ``k`` cover ``min(k, classes)`` classes).

    Raises
    ------
    ConfigError
        ``n`` below 1, an unknown ``how``, or ``labels`` of another length than ``ids``.
    """
    check(Name.arg("n"), n, (Interval(int, 1, None), None), 4, ConfigError)
    check(Name.arg("how"), how, Options(*HOW), "stratified", ConfigError)
    ids = np.asarray(ids)
    k = len(ids) if n is None else min(int(n), len(ids))
    if how == "first":
        return ids[:k]
    rng = np.random.default_rng(seed)
    if how == "shuffled" or labels is None:
        return ids[rng.permutation(len(ids))[:k]]
    codes, _ = pd.factorize(pd.Series(list(labels) if not isinstance(labels, pd.Series)
                                      else labels.to_numpy()), sort=True,
                            use_na_sentinel=False)
    if len(codes) != len(ids):
        raise ConfigError(f"labels has {len(codes)} entries for {len(ids)} images; match them.")
    order = rng.permutation(len(ids))  # one shuffle; within a class it is a shuffle too
    by_class = [order[codes[order] == c] for c in range(int(codes.max()) + 1 if len(ids) else 0)]
    rank = np.empty(len(ids), dtype=np.int64)  # each image's place within its class
    for members in by_class:
        rank[members] = np.arange(len(members))
    # round-robin: round r takes the r-th image of every class, classes in sorted order
    chosen = np.lexsort((codes, rank))[:k]
    return ids[chosen]


def pick_images(ids: Sequence[Any] | np.ndarray, wanted: Sequence[Any]) -> np.ndarray:
    """The ids of ``wanted`` as stored (in ``wanted``'s order), matched by value or text.

    Raises
    ------
    ConfigError
        When ``wanted`` is empty, repeats an id or names one that is not among ``ids``.
    """
    ids = np.asarray(ids)
    if len(wanted) == 0:
        raise ConfigError("images = [] lists no image; list image ids or leave it out.")
    text = pd.Index([str(i) for i in ids])
    pos = text.get_indexer([str(w) for w in wanted])
    missing = [w for w, p in zip(wanted, pos) if p < 0]
    if missing:
        raise ConfigError(
            f"images {missing[:5]!r} are not among the {len(ids)} stored images (ids such as "
            f"{', '.join(map(str, ids[:3]))}); list stored ids or change [data] where / n."
        )
    if len(set(pos.tolist())) != len(pos):
        raise ConfigError(f"images {list(wanted)!r} repeats an id; list each image once.")
    return ids[pos]


def describe_images(ids: Sequence[Any] | np.ndarray, labels: pd.DataFrame,
                    column: str | None) -> str:
    """``"3 (circle), 7 (square)"``: image ids with their label (just ids without a column).

    ``labels`` holds ``image_id`` and ``column``.
    """
    ids = list(np.asarray(ids).tolist())
    if column is None or column not in labels.columns:
        return ", ".join(map(str, ids))
    by_id = dict(zip(labels["image_id"].tolist(), labels[column].tolist()))
    return ", ".join(f"{i} ({by_id.get(i, '?')})" for i in ids)


#: the rule of the figure analyses' ``images`` parameter: absent, or a non-empty id list
IMAGE_IDS: Any = (None, Items((Interval(int), Is(str)), min_len=1))
