"""TokenLayout derived from real timm architectures (random init) and from first principles."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from hypothesis import given
from hypothesis import strategies as st

from probing import LayoutError, ModelError, TokenLayout

# name, create kwargs, expected prefix, no_embed_class, position schemes
MODELS = [
    ("vit_tiny_patch16_224", {"img_size": 64}, ("cls",), False, ("learned",)),
    ("deit_tiny_distilled_patch16_224", {"img_size": 64}, ("cls", "dist"), False, ("learned",)),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 56}, ("cls", "reg", "reg", "reg", "reg"), True,
     ("learned",)),
    ("vit_medium_patch16_gap_256", {"img_size": 64}, (), False, ("learned",)),
    ("eva02_tiny_patch14_224", {"img_size": 56}, ("cls",), False, ("learned", "rope")),
    ("vit_relpos_small_patch16_224", {"img_size": 64}, (), False, ("relpos",)),
]


@pytest.mark.parametrize("name,kwargs,prefix,no_embed,position", MODELS,
                         ids=[m[0] for m in MODELS])
def test_layout_from_timm(name, kwargs, prefix, no_embed, position):
    model = timm.create_model(name, pretrained=False, **kwargs)
    layout = TokenLayout.from_model(model)
    assert layout.prefix == prefix
    assert layout.num_prefix_tokens == model.num_prefix_tokens
    assert layout.no_embed_class == no_embed
    assert layout.position == position
    side = kwargs["img_size"] // model.patch_embed.patch_size[0]
    assert layout.grid == (side, side)
    assert layout.n_tokens == len(prefix) + side * side
    if "cls" in prefix:
        assert layout.cls_index == prefix.index("cls")
    else:
        assert layout.cls_index is None and not layout.has_cls


def test_non_square_dynamic_img_size():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                              dynamic_img_size=True)
    layout = TokenLayout.from_model(model, img_size=(48, 80))
    assert layout.grid == (3, 5)
    assert layout.row_col(layout.n_tokens - 1) == (2, 4)
    assert layout.token_of(1, 0) == 1 + 5


def test_positions_and_kinds():
    layout = TokenLayout(grid=(2, 3), patch_size=(4, 8), prefix=("dist", "cls", "reg"))
    assert layout.cls_index == 1
    assert layout.positions("patch").tolist() == [3, 4, 5, 6, 7, 8]
    assert layout.kind_of(0) == "dist" and layout.kind_of(-1) == "patch"
    assert layout.row_col(2) is None
    np.testing.assert_allclose(layout.patch_centers_px()[4], [1.5 * 4, 1.5 * 8])
    with pytest.raises(LayoutError, match="does not exist"):
        TokenLayout(grid=(2, 2), patch_size=(1, 1), prefix=()).positions("cls")
    with pytest.raises(LayoutError):
        layout.kind_of(99)


def test_not_a_vit_is_a_model_error():
    model = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(ModelError, match="not a Vision Transformer"):
        TokenLayout.from_model(model)


@given(
    prefix=st.lists(st.sampled_from(["cls", "reg", "dist"]), max_size=6),
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
)
def test_layout_invariants(prefix, rows, cols):
    layout = TokenLayout(grid=(rows, cols), patch_size=(16, 16), prefix=tuple(prefix))
    n = layout.n_tokens
    assert n == len(prefix) + rows * cols
    counts = sum(len(layout.positions(k)) for k in layout.kinds)
    assert counts == n
    patches = layout.positions("patch")
    assert patches[0] == len(prefix) and patches[-1] == n - 1
    for t in patches[:: max(1, len(patches) // 7)]:
        r, c = layout.row_col(int(t))
        assert layout.token_of(r, c) == t
    table = layout.token_table()
    assert np.isnan(table["row"][: len(prefix)]).all()
    assert (table["row"][len(prefix):] < rows).all() and (table["col"][len(prefix):] < cols).all()
