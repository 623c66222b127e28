"""The one resolver: layer and token-kind selections -> stored labels.

A *selection* is what a user writes (``layers=`` of every function, ``[capture] layers`` and an
analysis's ``layers`` in a spec): ``"all"`` (blocks 0..depth), an int (``0`` = input to the first
block, ``k`` = output of block ``k``; a **negative int always counts blocks from the end**, as
timm's ``_take_indices``: ``-1`` is the last block; ``"last"`` is the same), the site names
``"embed"`` (the patch projection before the positional encoding) and ``"norm"`` (the final
norm), or a list of these.

A *label* is what a frame stores in its ``layer`` column (:mod:`probing.frames`): block numbers
``0..depth`` and the special-site labels :data:`LAYER_EMBED` (-1) and
:data:`LAYER_NORM` (-2). Special sites never have a number in a selection: a
site is selected by its name only, so ``-1`` in a selection can only mean the last block.

:func:`resolve_layers` turns a selection into :class:`LayerLabels` once. ``LayerLabels`` is
the resolved type: every function that takes ``layers=`` passes it through unchanged, so labels
are never read as a selection again (a stored ``-1`` stays the ``embed`` site). To hand labels
back to a user (or to a spec), :func:`to_selection` writes them as a selection, and
``resolve_layers(to_selection(labels), depth) == labels``.

Against stored data (a frame, a store: :func:`select_layers`) the forms mean the same:
``"all"``, alone or in a list, is every block the data holds, and ``-1`` is still the model's
last block, never the last block the data happens to hold. A store knows its model's depth
(its manifest records it); a bare frame does not, so a negative int there is refused until it
is resolved against the model (``resolve_layers(sel, model.depth)``). Blocks with attention
are resolved by :func:`resolve_blocks` (``1..depth``; no sites).

Token kinds have one vocabulary everywhere: ``cls``, ``reg``, ``dist``, ``patch``, ``pooled``
(one pooled vector per image; for a view of a frame without pooled rows, the mean of its patch
rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import SupportsIndex

import numpy as np

from .errors import ConfigError, LayoutError
from .layout import PREFIX_KINDS, TokenLayout

__all__ = [
    "LAYER_EMBED",
    "LAYER_NORM",
    "SITE_NAMES",
    "VIEW_KINDS",
    "LayerLabels",
    "LayerSelection",
    "resolve_blocks",
    "resolve_kinds",
    "resolve_layers",
    "resolve_view_kind",
    "select_layers",
    "to_selection",
]

#: Stored label of the ``embed`` site: the patch projection before the positional encoding.
LAYER_EMBED = -1
#: Stored label of the ``norm`` site: the output of the model's final norm.
LAYER_NORM = -2

SITE_NAMES: dict[str, int] = {"embed": LAYER_EMBED, "norm": LAYER_NORM}
_SITE_OF_LABEL = {v: k for k, v in SITE_NAMES.items()}
VIEW_KINDS: tuple[str, ...] = ("cls", "pooled", "patch")


def _order(label: int) -> tuple[int, int]:
    """Forward-pass order: embed, 0, 1, ..., depth, norm."""
    return (label == LAYER_NORM, label)


class LayerLabels(tuple):
    """Stored layer labels, already resolved: unique, in forward-pass order.

    Every ``layers=`` argument passes a ``LayerLabels`` through unchanged (it is never read as
    a selection again). Build one with :func:`resolve_layers` (from a selection) or
    ``LayerLabels(labels)`` (from stored labels, e.g. a frame's ``layer`` column).

    Parameters
    ----------
    labels : iterable of int
        Stored labels: block numbers ``>= 0``, ``LAYER_EMBED`` or ``LAYER_NORM``.
    """

    def __new__(cls, labels: Iterable[SupportsIndex] = ()) -> LayerLabels:
        out = set()
        for value in labels:
            if not _is_int(value):
                raise LayoutError(
                    f"layer label {value!r} is not an int; stored labels are block numbers or "
                    f"{LAYER_EMBED} (embed) / {LAYER_NORM} (norm)."
                )
            v = int(value)
            if v < 0 and v not in _SITE_OF_LABEL:
                raise LayoutError(
                    f"layer label {v} is not a stored label (blocks are >= 0, embed is "
                    f"{LAYER_EMBED}, norm is {LAYER_NORM}); to count blocks from the end, pass "
                    "a selection to resolve_layers."
                )
            out.add(v)
        return super().__new__(cls, sorted(out, key=_order))

    def __getitem__(self, item):  # a slice of labels is still labels
        got = super().__getitem__(item)
        return LayerLabels(got) if isinstance(item, slice) else got

    @property
    def blocks(self) -> LayerLabels:
        """The labels of block outputs ``1..depth`` (the blocks that have attention)."""
        return LayerLabels(v for v in self if v >= 1)

    def __repr__(self) -> str:
        return f"LayerLabels({to_selection(self)!r})"


LayerSelection = int | str | Sequence[int | str] | LayerLabels


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _items(layers: object) -> list:
    if isinstance(layers, (str, int, np.integer)):
        return [layers]
    if isinstance(layers, np.ndarray):
        return layers.ravel().tolist()
    if isinstance(layers, Iterable):
        return list(layers)
    raise LayoutError(
        f"layers={layers!r} is not a layer selection; pass 'all', an int, 'embed', 'norm' or a "
        "list of these."
    )


def resolve_layers(layers: LayerSelection, depth: int) -> LayerLabels:
    """Resolve a layer selection to stored labels (see the module docstring).

    Parameters
    ----------
    layers : int, str, sequence or LayerLabels
        ``"all"`` (0..depth), an int in ``-(depth + 1)..depth`` (negative = blocks from the end:
        ``-1`` is the last block, ``-(depth + 1)`` is layer 0), ``"embed"``, ``"norm"``, or a
        sequence of these. A :class:`LayerLabels` is returned unchanged.
    depth : int
        Number of blocks.

    Returns
    -------
    LayerLabels
        Unique labels in forward-pass order.

    Raises
    ------
    LayoutError
        An unknown name, an int out of range, or an empty selection.
    """
    if isinstance(layers, LayerLabels):
        return layers
    out: set[int] = set()
    for item in _items(layers):
        if isinstance(item, str):
            if item == "all":
                out.update(range(depth + 1))
            elif item == "last":
                out.add(depth)
            elif item in SITE_NAMES:
                out.add(SITE_NAMES[item])
            else:
                raise LayoutError(
                    f"layer {item!r} is not a layer; use an int in -{depth + 1}..{depth}, "
                    "'all', 'last', 'embed' or 'norm'."
                )
            continue
        if not _is_int(item):
            raise LayoutError(
                f"layer {item!r} is not a layer; use an int in -{depth + 1}..{depth}, 'all', "
                "'embed' or 'norm'."
            )
        k = int(item)
        if not -(depth + 1) <= k <= depth:
            raise LayoutError(
                f"layer {k} is out of range for {depth} blocks; use 0..{depth} (0 = input to the "
                f"first block), -1..-{depth + 1} counted from the end, or 'embed'/'norm' for "
                "the special sites."
            )
        out.add(k if k >= 0 else depth + 1 + k)
    if not out:
        raise LayoutError("layers selects nothing; pass 'all' or at least one layer.")
    return LayerLabels(out)


def _is_all(item: object) -> bool:
    return isinstance(item, str) and item == "all"


def _counts_from_end(item: object) -> bool:
    return (_is_int(item) and int(item) < 0) or (isinstance(item, str) and item == "last")


def select_layers(
    layers: LayerSelection | None,
    available: Iterable[int],
    where: str = "the frame",
    error: type[Exception] = LayoutError,
    depth: int | None = None,
) -> LayerLabels:
    """Resolve a selection against the labels some stored data holds (a frame, a store).

    The forms mean what they mean everywhere (:func:`resolve_layers`), against the data:

    - ``"all"``, alone or inside a list, means every block label (``>= 0``) the data holds;
    - block numbers and the names ``"embed"`` / ``"norm"`` are labels as they are;
    - a negative int (and ``"last"``) counts from the **model's** last block, never from the
      last block the data happens to hold: with ``depth`` (a store's manifest records it) it
      is resolved against it, so ``-1`` is block ``depth``; without ``depth`` (a bare frame
      records no model) it is refused with :class:`~probing.errors.ConfigError` (pass a
      block number, or resolve against the model first: ``resolve_layers(sel, model.depth)``;
      the resulting :class:`LayerLabels` pass through);
    - None means every label the data holds (special sites included).

    Any requested label the data does not hold raises ``error`` naming it, so the result is
    ``resolve_layers(layers, depth)`` restricted to what is held, with every explicitly named
    label held.

    Parameters
    ----------
    layers : selection, LayerLabels or None
        As for :func:`resolve_layers`.
    available : iterable of int
        Stored labels present.
    where : str
        What holds them, for the error message.
    error : exception class
        Raised (a :class:`~probing.errors.ProbingError` subclass) naming the missing labels.
    depth : int, optional
        Number of blocks of the model the data came from; negative ints need it.

    Returns
    -------
    LayerLabels

    Raises
    ------
    ConfigError
        A negative int or ``"last"`` without ``depth``.
    LayoutError
        An unknown name, an int out of range for ``depth``, or an empty selection.
    """
    present = LayerLabels(available)
    if layers is None:
        return present
    stored_blocks = LayerLabels(v for v in present if v >= 0)
    if isinstance(layers, LayerLabels):
        labels, want_all = layers, False
    else:
        items = _items(layers)
        want_all = any(_is_all(x) for x in items)
        rest = [x for x in items if not _is_all(x)]
        if depth is None:
            relative = [x for x in rest if _counts_from_end(x)]
            if relative:
                raise ConfigError(
                    f"layers={layers!r} counts blocks from the end ({relative[0]!r}), but "
                    f"{where} does not record the model's depth; pass block numbers, or "
                    "resolve against the model first: resolve_layers(layers, model.depth)."
                )
        # without a depth, no item counts from the end: any depth covering the block
        # numbers asked for and held resolves the rest (names, block numbers) the same way
        known = depth if depth is not None else max(
            [0, *stored_blocks, *(int(x) for x in rest if _is_int(x))])
        labels = resolve_layers(rest, known) if rest or not want_all else LayerLabels()
    missing = [v for v in labels if v not in present]
    if missing:
        counted = ""
        if depth is not None and not isinstance(layers, LayerLabels) and any(
                _counts_from_end(x) for x in _items(layers)):
            counted = f"; negative ints count from block {depth}, the model's last"
        raise error(
            f"layers {to_selection(LayerLabels(missing))} are not in {where} (it holds "
            f"{to_selection(present)}{counted}); ask for those or extract the missing layers."
        )
    if want_all and not stored_blocks:
        raise error(f"{where} holds no block layers (it has {to_selection(present)}).")
    return LayerLabels([*labels, *(stored_blocks if want_all else ())])


def resolve_blocks(layers: LayerSelection | None, depth: int, what: str = "attention"
                   ) -> LayerLabels:
    """Resolve a selection of blocks that have ``what`` (attention): labels ``1..depth``.

    ``"all"`` (alone or in a list) and None mean every block ``1..depth``; ints and negative
    ints are as for :func:`resolve_layers` (``-1`` is block ``depth``). Layer 0 (the input to
    the first block) and the sites ``"embed"`` / ``"norm"`` have no ``what`` and are refused.

    Returns
    -------
    LayerLabels
        Block labels in ``1..depth``.

    Raises
    ------
    LayoutError
        A selected label that is not a block output, or any error of :func:`resolve_layers`.
    """
    if layers is None:
        return LayerLabels(range(1, depth + 1))
    if isinstance(layers, LayerLabels):
        named = layers
    else:
        items = _items(layers)
        rest = [x for x in items if not _is_all(x)]
        named = resolve_layers(rest, depth) if rest or not items else LayerLabels()
        if len(rest) < len(items):
            named = LayerLabels([*named, *range(1, depth + 1)])
    bad = [v for v in named if v < 1]
    if bad:
        raise LayoutError(
            f"layers {to_selection(bad)} have no {what}: only block outputs 1..{depth} do "
            f"(layer 0 is the input to the first block, 'embed' and 'norm' are sites); pass "
            f"blocks 1..{depth}, negative ints or 'all'."
        )
    return named


def to_selection(labels: Iterable[int]) -> list[int | str]:
    """Stored labels written as a selection: site names for special sites, block numbers.

    ``resolve_layers(to_selection(labels), depth) == LayerLabels(labels)``.
    """
    return [_SITE_OF_LABEL.get(v, v) for v in LayerLabels(labels)]


def resolve_kinds(kinds: str | Sequence[str], layout: TokenLayout) -> tuple[str, ...]:
    """Check stored token kinds to capture against the layout (``"pooled"`` passes through).

    Returns
    -------
    tuple of str
        The unique kinds in the given order.
    """
    items = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not items:
        raise LayoutError("kinds selects nothing; pass e.g. ('cls', 'patch').")
    for kind in items:
        if kind == "pooled":
            continue
        if kind not in PREFIX_KINDS + ("patch",):
            raise LayoutError(
                f"token kind {kind!r} is unknown; use cls, reg, dist, patch or pooled."
            )
        if kind not in layout.kinds:
            raise LayoutError(
                f"token kind {kind!r} does not exist in this model (it has "
                f"{', '.join(layout.kinds)}); drop it from kinds."
            )
    return tuple(dict.fromkeys(items))


def resolve_view_kind(kind: str) -> str:
    """Return a view kind (:data:`VIEW_KINDS`) or raise :class:`ConfigError`."""
    if kind not in VIEW_KINDS:
        hint = " (the pooled view is called 'pooled')" if kind == "mean" else ""
        raise ConfigError(
            f"kind {kind!r} is unknown{hint}; use one of {', '.join(VIEW_KINDS)}."
        )
    return kind
