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
    assert select_layers(-1, present) == (2,)  # from the last block held
    assert select_layers(["embed", "norm"], present) == (LAYER_EMBED, LAYER_NORM)
    with pytest.raises(LayoutError, match=r"\[3\] are not in the frame"):
        select_layers([1, 3], present)
    with pytest.raises(ConfigError, match="'norm'"):
        select_layers("norm", [0, 1], error=ConfigError)


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
