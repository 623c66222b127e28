"""The timm ViT zoo: one small configuration (random init) of every token / positional family.

For each supported family: the layout read by ``TokenLayout.from_model`` agrees with the model's
own attributes (patch grid, input size, prefix tokens) and names its positional schemes; the
stored block outputs equal timm's ``forward_intermediates`` (patch tokens, and prefix tokens
where the block holds them); the final ``norm`` site equals ``forward_features``; capturing
leaves the logits unchanged. Unsupported families raise a ModelError naming the family.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import timm
import torch

from probing import LayoutError, ModelError, TokenLayout, capture, extract, load_model
from probing.layout import POSITION_SCHEMES
from probing.selection import LAYER_NORM

SMALL = {"embed_dim": 64, "num_heads": 2, "depth": 2}

# name, create kwargs, position schemes, prefix_joins (block where the prefix joins)
ZOO = [
    # the families that passed before (one per token / positional configuration)
    ("vit_tiny_patch16_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_base_patch16_reg4_gap_256", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_medium_patch16_gap_256", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_so150m_patch16_reg4_map_256", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 28, **SMALL}, ("learned",), 1),
    ("vit_base_patch16_radio_v3", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_base_patch16_siglip_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_base_patch16_clip_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("beit3_base_patch16_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("flexivit_small", {"img_size": (32, 48), **SMALL}, ("learned",), 1),
    ("deit3_small_patch16_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("deit_tiny_distilled_patch16_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("eva02_tiny_patch14_224", {"img_size": 28, **SMALL}, ("learned", "rope"), 1),
    ("vit_base_patch16_rope_224", {"img_size": 32, **SMALL}, ("rope",), 1),
    ("vit_base_patch16_rope_mixed_224", {"img_size": 32, **SMALL}, ("rope",), 1),
    ("vit_small_patch16_dinov3", {"img_size": 32, **SMALL}, ("rope",), 1),
    ("vit_pe_core_tiny_patch16_384", {"img_size": 32, **SMALL}, ("learned", "rope"), 1),
    ("vit_relpos_small_patch16_224", {"img_size": 32, **SMALL}, ("relpos",), 1),
    ("vit_relpos_base_patch16_cls_224", {"img_size": 32, **SMALL}, ("relpos",), 1),
    ("vit_srelpos_small_patch16_224", {"img_size": 32, **SMALL}, ("relpos",), 1),
    # the families of issue 13
    ("vit_small_patch16_18x2_224", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_pwee_patch16_reg1_gap_256", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_dwee_patch16_reg1_gap_256", {"img_size": 32, **SMALL}, ("learned",), 1),
    ("vit_tiny_r_s16_p8_224", {"img_size": 64, **SMALL}, ("learned",), 1),
    ("vitamin_small_224", {"img_size": 32, "depth": 2}, ("learned",), 1),
    ("beit_base_patch16_224", {"img_size": 32, **SMALL}, ("relpos-beit",), 1),
    ("samvit_base_patch16", {"img_size": 64, **SMALL, "window_size": 2,
                             "global_attn_indexes": (1,)}, ("learned", "relpos-sam"), 1),
    ("cait_xxs24_224", {"img_size": 32, **SMALL, "depth_token_only": 1}, ("learned",), 3),
    ("convit_tiny", {"img_size": 32, **SMALL, "local_up_to_layer": 1},
     ("learned", "gpsa"), 2),
    ("xcit_nano_12_p16_224", {"img_size": 32, "depth": 2}, ("sincos",), 3),
]

UNSUPPORTED = [
    ("crossvit_tiny_240", {"img_size": 32}, "CrossViT"),
    ("naflexvit_base_patch16_gap", {"img_size": 32, **SMALL}, "NaFlexViT"),
    ("tnt_s_patch16_224", {"img_size": 32, "depth": 2}, "TNT"),
]


def _model(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def _size(kwargs: dict) -> tuple[int, int]:
    s = kwargs["img_size"]
    return (s, s) if isinstance(s, int) else tuple(s)


def _reference(model, x, layout) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``[(patches (B, N, D), prefix (B, P, D) or None)]`` per block from forward_intermediates."""
    params = inspect.signature(model.forward_intermediates).parameters
    kwargs = {"output_fmt": "NCHW", "intermediates_only": True}
    if "return_prefix_tokens" in params and layout.prefix:
        kwargs["return_prefix_tokens"] = True
    out = []
    for item in model.forward_intermediates(x, **kwargs):
        spatial, prefix = item if isinstance(item, tuple) else (item, None)
        out.append((spatial.flatten(2).transpose(1, 2), prefix))
    return out


def _frame_tensor(frame, layer: int, kind: str, n_img: int) -> torch.Tensor:
    rows = frame[(frame["layer"] == layer) & (frame["kind"] == kind)].sort_values(
        ["image_id", "token"])
    emb = np.stack(rows["emb"].to_numpy())
    return torch.from_numpy(emb).reshape(n_img, -1, emb.shape[-1])


@pytest.mark.parametrize("name,kwargs,position,joins", ZOO, ids=[m[0] for m in ZOO])
def test_zoo_family(name, kwargs, position, joins):
    model = _model(name, kwargs)
    layout = TokenLayout.from_model(model)
    pe = model.patch_embed
    h, w = _size(kwargs)
    grid = tuple(pe.grid_size) if getattr(pe, "grid_size", None) is not None else \
        (h // pe.patch_size, w // pe.patch_size)
    # the layout against the model's own attributes
    assert tuple(pe.img_size) == (h, w)
    assert layout.grid == grid
    assert layout.patch_size == (h // grid[0], w // grid[1])  # effective: input px per token
    assert layout.num_prefix_tokens == getattr(model, "num_prefix_tokens", 0)  # SAM: none
    assert layout.has_cls == (getattr(model, "cls_token", None) is not None)
    assert layout.position == position
    assert layout.prefix_joins == joins
    depth = len(model.blocks)
    for k in range(depth + 1):
        held = layout.block_layout(k)
        assert held.prefix == (layout.prefix if max(k, 1) >= joins else ())
        assert held.num_patches == layout.num_patches

    x = torch.randn(2, 3, h, w)
    has_norm = getattr(model, "norm", None) is not None  # SAM ends in a conv neck
    layers = [0, *range(1, depth + 1)] + (["norm"] if has_norm else [])
    with torch.inference_mode():
        plain = model(x)
        with capture(model, layout, layers=layers, kinds=layout.kinds) as cap:
            out = model(x)
        ref = _reference(model, x, layout)
        feats = model.forward_features(x) if has_norm else None
    assert torch.equal(plain, out), "capturing changed the logits"
    for k in range(depth + 1):
        assert cap.tokens[k].shape[1] == layout.block_layout(k).n_tokens

    frame = extract(model, x, layers=layers, kinds=layout.kinds)
    n_pre = layout.num_prefix_tokens
    for k in range(1, depth + 1):
        patches, prefix = ref[k - 1]
        torch.testing.assert_close(_frame_tensor(frame, k, "patch", 2), patches, atol=1e-5,
                                   rtol=1e-5)
        got_kinds = set(frame.loc[frame["layer"] == k, "kind"].astype(str))
        assert got_kinds == set(layout.block_layout(k).kinds)
        if prefix is not None:
            torch.testing.assert_close(cap.tokens[k][:, :n_pre], prefix, atol=1e-5, rtol=1e-5)
    # stored token numbers are the full layout's in every layer
    patch_tokens = frame.loc[(frame["layer"] == 1) & (frame["kind"] == "patch"), "token"]
    assert int(patch_tokens.min()) == n_pre
    if feats is not None and feats.ndim == 3 and feats.shape[1] == layout.n_tokens:
        torch.testing.assert_close(cap.tokens[LAYER_NORM], feats, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs,family", UNSUPPORTED, ids=[m[0] for m in UNSUPPORTED])
def test_unsupported_family_is_a_model_error(name, kwargs, family):
    with pytest.raises(ModelError, match=f"{family} family") as err:
        load_model(name, pretrained=False, **kwargs)
    assert "fix or drop those options" not in str(err.value)
    assert "not supported" in str(err.value)


def test_late_cls_rows_only_where_the_cls_is():
    model = _model("cait_xxs24_224", {"img_size": 32, "depth": 2, "depth_token_only": 1})
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(LayoutError, match="join at block 3"):
        extract(model, x, layers=[1, 2], kinds=["cls"])
    frame = extract(model, x, layers=[2, "norm"], kinds=["cls"])
    assert frame["layer"].unique().tolist() == [LAYER_NORM]
    assert frame["token"].tolist() == [0]


def test_block_layout_of_a_plain_layout_is_itself():
    layout = TokenLayout(grid=(2, 3), patch_size=(8, 8), prefix=("cls", "reg"), prefix_joins=3)
    assert layout.block_layout(3) is layout and layout.block_layout(7) is layout
    early = layout.block_layout(2)
    assert early.prefix == () and early.n_tokens == 6 and early.positions("patch")[0] == 0
    assert layout.block_layout(0) == early
    with pytest.raises(LayoutError):
        layout.block_layout(-1)
    with pytest.raises(LayoutError):
        TokenLayout(grid=(2, 2), patch_size=(1, 1), prefix_joins=0)


def test_late_cls_store_reads_what_memory_returns(tmp_path):
    from probing import ArraySource

    model = _model("convit_tiny", {"img_size": 32, **SMALL, "local_up_to_layer": 1})
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    source = ArraySource(images)
    store = extract(model, source, layers=[1, 2], kinds=["cls", "patch"], store=tmp_path / "s")
    stored = store.read(kind=["cls", "patch"], layers=[1, 2])
    memory = extract(model, source, layers=[1, 2], kinds=["cls", "patch"])
    assert store.manifest["layout"]["prefix_joins"] == 2
    assert (stored["kind"].astype(str) == "cls").sum() == 3  # block 2 only
    np.testing.assert_array_equal(np.stack(stored["emb"].to_numpy()),
                                  np.stack(memory["emb"].to_numpy()))


@pytest.mark.parametrize("scheme", sorted(POSITION_SCHEMES))
def test_positional_messages_name_every_scheme(scheme):
    from types import SimpleNamespace

    from probing.posenc import rope_frequencies

    layout = TokenLayout(grid=(2, 2), patch_size=(8, 8), position=(scheme,))
    loaded = SimpleNamespace(model=torch.nn.Identity(), layout=layout)
    with pytest.raises(ModelError, match="no rotary position embedding") as err:
        rope_frequencies(loaded)
    assert "no positional parameters" not in str(err.value)


def test_xcit_has_no_learned_table_but_a_sinusoidal_encoding():
    from probing.posenc import learned_table

    model = _model("xcit_nano_12_p16_224", {"img_size": 32, "depth": 2})
    with pytest.raises(ModelError, match="sinusoidal") as err:
        learned_table(model)
    assert "no positional parameters" not in str(err.value)
