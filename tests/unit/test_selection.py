"""The one layer resolver: selections -> labels once, labels never resolved again, and
selection -> labels -> selection is the identity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probing import LayoutError
from probing.errors import ConfigError
from probing.selection import (
    LAYER_EMBED,
    LAYER_NORM,
    LayerLabels,
    resolve_blocks,
    resolve_layers,
    resolve_view_kind,
    select_layers,
    to_selection,
)


def test_resolve_layers_forms():
    assert resolve_layers("all", 4) == (0, 1, 2, 3, 4)
    assert resolve_layers([-1, 0], 4) == (0, 4)
    assert resolve_layers(-5, 4) == (0,)
    assert resolve_layers(np.int64(-1), 4) == (4,)
    # forward-pass order: embed, blocks, norm
    assert resolve_layers(["norm", "embed", "last"], 4) == (LAYER_EMBED, 4, LAYER_NORM)
    with pytest.raises(LayoutError, match="out of range"):
        resolve_layers(5, 4)
    with pytest.raises(LayoutError, match="out of range"):
        resolve_layers(-6, 4)
    with pytest.raises(LayoutError):
        resolve_layers("middle", 4)
    with pytest.raises(LayoutError):
        resolve_layers(True, 4)
    with pytest.raises(LayoutError, match="selects nothing"):
        resolve_layers([], 4)


def test_labels_are_never_resolved_again():
    """Regression (issue 11, defect 1): ``["embed", 1]`` resolved to ``[-1, 1]`` and resolved
    again as a selection became blocks ``[1, depth]``: the embed site was lost."""
    labels = resolve_layers(["embed", 1], 4)
    assert labels == (LAYER_EMBED, 1)
    assert resolve_layers(labels, 4) is labels
    assert resolve_layers(labels, 12) == (LAYER_EMBED, 1)
    assert select_layers(labels, [LAYER_EMBED, 0, 1, 2, 3, 4]) == (LAYER_EMBED, 1)
    # a slice of labels is labels; .blocks keeps the attention blocks
    assert isinstance(labels[:1], LayerLabels) and resolve_layers(labels[:1], 4) == (-1,)
    assert resolve_layers(["embed", 0, -1], 4).blocks == (4,)
    # in a selection, -1 is always the last block, never the embed site
    assert resolve_layers(-1, 4) == (4,)


def test_layer_labels_refuse_non_labels():
    with pytest.raises(LayoutError, match="not a stored label"):
        LayerLabels([-3])
    with pytest.raises(LayoutError, match="not an int"):
        LayerLabels(["embed"])


def test_select_layers_against_stored_labels():
    present = [LAYER_NORM, LAYER_EMBED, 0, 1, 2]
    assert select_layers(None, present) == (LAYER_EMBED, 0, 1, 2, LAYER_NORM)
    assert select_layers("all", present) == (0, 1, 2)
    assert select_layers(-1, present, depth=2) == (2,)  # the model's last block
    assert select_layers(["embed", "norm"], present) == (LAYER_EMBED, LAYER_NORM)
    with pytest.raises(LayoutError, match=r"\[3\] are not in the frame"):
        select_layers([1, 3], present)
    with pytest.raises(ConfigError, match="'norm'"):
        select_layers("norm", [0, 1], error=ConfigError)


def test_negative_ints_count_from_the_models_last_block_never_the_datas():
    """Regression (issue 11 review, 1): ``select_layers(-1, [0, 3])`` gave block 3 and ``-2``
    gave 2: for data holding blocks 0 and 3 of a 12-block model, -1 silently meant block 3."""
    with pytest.raises(LayoutError, match=r"layers \[12\] are not in the frame.*block 12"):
        select_layers(-1, [0, 3], depth=12)
    with pytest.raises(LayoutError, match=r"layers \[11\] are not"):
        select_layers(-2, [0, 3], depth=12)
    assert select_layers([-1, 0], [0, 3, 12], depth=12) == (0, 12)
    assert select_layers("last", [LAYER_EMBED, 12], depth=12) == (12,)
    # no depth (a bare frame): counting from the end is refused, block numbers are fine
    for sel in (-1, [0, -2], "last", ["all", -1]):
        with pytest.raises(ConfigError, match=r"does not record the model's depth.*"
                                              r"resolve_layers\(layers, model.depth\)"):
            select_layers(sel, [0, 3])
    assert select_layers([0, 3], [0, 3]) == (0, 3)
    # resolved against the model first, the labels pass through
    assert select_layers(resolve_layers(-1, 3), [0, 3]) == (3,)


def test_all_means_every_stored_block_also_inside_a_list():
    """Regression (issue 11 review, 2): ``["all", "embed"]`` on stored [embed, 0, 4, 8, 12]
    raised "layers [1, 2, 3, 5, ...] are not in the frame" while ``"all"`` alone worked."""
    stored = [LAYER_EMBED, 0, 4, 8, 12]
    for depth in (None, 12):
        assert select_layers(["all", "embed"], stored, depth=depth) == (LAYER_EMBED, 0, 4, 8, 12)
        assert select_layers(["all"], stored, depth=depth) == (0, 4, 8, 12)
        assert select_layers(["all", 4], stored, depth=depth) == (0, 4, 8, 12)
        with pytest.raises(LayoutError, match=r"\['norm'\] are not in the frame"):
            select_layers(["all", "norm"], stored, depth=depth)
    with pytest.raises(LayoutError, match="holds no block layers"):
        select_layers(["all", "embed"], [LAYER_EMBED])


def test_resolve_blocks_takes_every_form_and_refuses_sites_without_attention():
    assert resolve_blocks(None, 4) == (1, 2, 3, 4)
    assert resolve_blocks("all", 4) == (1, 2, 3, 4)
    assert resolve_blocks([-1, 1], 4) == (1, 4)
    assert resolve_blocks(["all", -1], 4) == (1, 2, 3, 4)
    for bad in ("embed", "norm", 0, ["all", "embed"], -5):
        with pytest.raises(LayoutError, match=r"have no attention: only block outputs 1\.\.4"):
            resolve_blocks(bad, 4)


@st.composite
def stored_and_selection(draw):
    depth = draw(DEPTH)
    stored = draw(st.sets(st.sampled_from([LAYER_EMBED, LAYER_NORM, *range(depth + 1)]),
                          min_size=1))
    item = st.one_of(st.integers(-(depth + 1), depth),
                     st.sampled_from(["embed", "norm", "all", "last"]))
    sel = draw(st.one_of(item, st.lists(item, min_size=1, max_size=6)))
    return depth, stored, sel


@given(stored_and_selection())
def test_select_layers_is_the_models_labels_within_what_is_stored(case):
    """For data holding any subset of labels, a selection gives exactly
    ``resolve_layers(sel, depth) & stored``, or an error when a label it names (not through
    "all") is not stored, or "all" finds no stored block."""
    depth, stored, sel = case
    items = sel if isinstance(sel, list) else [sel]
    named = [x for x in items if x != "all"]
    named_labels = set(resolve_layers(named, depth)) if named else set()
    has_all = len(named) < len(items)
    if not named_labels <= stored or (has_all and not any(v >= 0 for v in stored)):
        with pytest.raises(LayoutError, match="are not in|holds no block"):
            select_layers(sel, stored, depth=depth)
        return
    got = select_layers(sel, stored, depth=depth)
    assert got == LayerLabels(set(resolve_layers(sel, depth)) & stored)


def test_view_kind_vocabulary_is_pooled():
    assert resolve_view_kind("pooled") == "pooled"
    with pytest.raises(ConfigError, match="called 'pooled'"):
        resolve_view_kind("mean")


DEPTH = st.integers(min_value=1, max_value=24)


@st.composite
def selections(draw):
    depth = draw(DEPTH)
    item = st.one_of(st.integers(-(depth + 1), depth),
                     st.sampled_from(["embed", "norm", "all", "last"]))
    sel = draw(st.one_of(item, st.lists(item, min_size=1, max_size=6)))
    return sel, depth


@given(selections())
def test_selection_labels_selection_is_identity(case):
    sel, depth = case
    labels = resolve_layers(sel, depth)
    canonical = to_selection(labels)
    # a canonical selection (site names and block numbers) survives the round trip as it is
    assert to_selection(resolve_layers(canonical, depth)) == canonical
    assert resolve_layers(canonical, depth) == labels
    assert all(isinstance(x, str) or 0 <= x <= depth for x in canonical)


@given(DEPTH.flatmap(lambda d: st.tuples(
    st.just(d), st.sets(st.sampled_from([LAYER_EMBED, LAYER_NORM, *range(d + 1)]), min_size=1))))
def test_labels_selection_labels_is_identity(case):
    depth, raw = case
    labels = LayerLabels(raw)
    assert resolve_layers(to_selection(labels), depth) == labels
    assert resolve_layers(list(to_selection(labels)), depth + 3) == labels
