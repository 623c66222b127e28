"""Capture correctness: block outputs equal timm's forward_intermediates; logits unchanged;
attention rows sum to 1 and equal attention recomputed from q and k; hooks always removed."""

from __future__ import annotations

import pytest
import timm
import torch

from probing import LayoutError, TokenLayout, capture
from probing.selection import LAYER_EMBED, LAYER_NORM

MODELS = [
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 3}),
    ("deit_tiny_distilled_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 3}),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 28, "depth": 3}),
    ("vit_medium_patch16_gap_256", {"img_size": 32, "depth": 3}),
    ("eva02_tiny_patch14_224", {"img_size": 28, "depth": 3}),
    ("vit_relpos_small_patch16_224", {"img_size": 32, "depth": 3}),
]


def _model(name, kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.mark.parametrize("name,kwargs", MODELS, ids=[m[0] for m in MODELS])
def test_block_outputs_equal_forward_intermediates(name, kwargs):
    model = _model(name, kwargs)
    layout = TokenLayout.from_model(model)
    x = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"])
    with torch.inference_mode():
        plain = model(x)
        with capture(model, layout, layers="all", kinds=layout.kinds) as cap:
            out = model(x)
        prefix = layout.num_prefix_tokens > 0
        res = model.forward_intermediates(x, return_prefix_tokens=prefix, output_fmt="NLC",
                                          intermediates_only=True)
    assert torch.equal(plain, out), "capturing changed the logits"
    for k in range(1, len(model.blocks) + 1):
        ref = torch.cat([res[k - 1][1], res[k - 1][0]], 1) if prefix else res[k - 1]
        torch.testing.assert_close(cap.tokens[k], ref, atol=1e-5, rtol=0)
    assert cap.tokens[0].shape[1] == layout.n_tokens


def test_dynamic_img_size_non_square():
    model = _model("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2,
                                            "dynamic_img_size": True})
    x = torch.randn(2, 3, 24, 40)
    layout = TokenLayout.from_model(model, img_size=x.shape[-2:])
    with torch.inference_mode(), capture(model, layout, layers=["embed", 2],
                                         kinds=("cls", "patch")) as cap:
        model(x)
        res = model.forward_intermediates(x, return_prefix_tokens=True, output_fmt="NLC",
                                          intermediates_only=True)
    assert layout.grid == (3, 5)
    assert cap.tokens[LAYER_EMBED].shape == (2, 15, 192)
    ref = torch.cat([res[1][1], res[1][0]], 1)
    torch.testing.assert_close(cap.tokens[2], ref, atol=1e-5, rtol=0)


def test_selection_costs_only_what_is_asked():
    model = _model(*MODELS[1])
    layout = TokenLayout.from_model(model)
    with torch.inference_mode(), capture(model, layout, layers=[-1], kinds="dist") as cap:
        model(torch.randn(1, 3, 32, 32))
    assert list(cap.tokens) == [3]
    assert cap.tokens[3].shape[1] == 1
    assert cap.token_index[3].tolist() == layout.positions("dist").tolist()


def test_pooled_mean_and_norm_site():
    model = _model(*MODELS[0])
    layout = TokenLayout.from_model(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), capture(model, layout, layers=[1, "norm"], kinds="patch",
                                         pooled="mean") as cap:
        model(x)
        feats = model.forward_features(x)
    torch.testing.assert_close(cap.tokens[1][:, -1], cap.tokens[1][:, :-1].mean(1))
    torch.testing.assert_close(cap.tokens[LAYER_NORM][:, :-1], feats[:, layout.patch_slice])


def test_attention_rows_sum_to_one_and_match_qk():
    model = _model(*MODELS[0])
    x = torch.randn(2, 3, 32, 32)
    seen = {}

    def grab_qkv(_m, inp, out):
        seen["qkv"] = out

    h = model.blocks[1].attn.qkv.register_forward_hook(grab_qkv)
    try:
        with torch.inference_mode(), capture(model, layers=[2], kinds="cls",
                                             attention=True) as cap:
            model(x)
    finally:
        h.remove()
    att = cap.attention[2]
    assert att.shape == (2, 3, 17, 17)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 3, 17))
    attn = model.blocks[1].attn
    b, n, _ = seen["qkv"].shape
    q, k, _ = seen["qkv"].reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    ref = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(att, ref, atol=1e-6, rtol=1e-5)


def test_capture_attention_takes_every_block_selection_and_refuses_sites():
    """Regression (issue 11 review, 4): capture_attention took 1-based ints only (-1 was "does
    not exist", "all" and names failed); it takes the resolver's forms, blocks only."""
    from probing.attention_hooks import capture_attention

    model = _model(*MODELS[0])  # 3 blocks
    x = torch.randn(1, 3, 32, 32)
    for sel, blocks in ((-1, [3]), ([1, -2], [1, 2]), ("all", [1, 2, 3]), (None, [1, 2, 3]),
                        ("last", [3])):
        with torch.inference_mode(), capture_attention(model, sel) as store:
            model(x)
        assert sorted(store) == blocks, sel
    with torch.inference_mode(), capture_attention(model, [3]) as ref:
        model(x)
    with torch.inference_mode(), capture_attention(model, -1) as last:
        model(x)
    torch.testing.assert_close(last[3], ref[3])
    for bad in ("embed", "norm", 0, ["all", "embed"]):
        with pytest.raises(LayoutError, match="have no attention"):
            with capture_attention(model, bad):
                pass
    with pytest.raises(LayoutError, match="out of range for 3 blocks"):
        with capture_attention(model, 4):
            pass
    with pytest.raises(LayoutError, match="have no attention"):  # capture's attention= too
        with capture(model, layers=[1], attention=["embed", 2]):
            pass
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_attention_capture_restores_fused_flag_and_hooks_on_error():
    model = _model(*MODELS[0])
    fused = [b.attn.fused_attn for b in model.blocks]
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, layers="all", attention=True):
            assert not any(b.attn.fused_attn for b in model.blocks)
            raise RuntimeError("boom")
    assert [b.attn.fused_attn for b in model.blocks] == fused
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_logits_with_attention_equal_unfused_forward():
    model = _model(*MODELS[0])
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        for b in model.blocks:
            b.attn.fused_attn = False
        unfused = model(x)
        for b in model.blocks:
            b.attn.fused_attn = True
        with capture(model, layers="all", attention=True):
            captured = model(x)
    assert torch.equal(unfused, captured)


def test_unknown_kind_is_layout_error():
    model = _model(*MODELS[0])
    with pytest.raises(LayoutError, match="reg"):
        with capture(model, kinds=("cls", "reg")):
            pass


@pytest.mark.parametrize("layers", [[0], [2], ["embed"], [0, 1]])
def test_stop_early_captures_the_same_vectors(layers):
    model = _model(*MODELS[1])
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        with capture(model, layers=layers, kinds=("cls", "dist", "patch")) as full:
            full.forward(model, x)
        with capture(model, layers=layers, kinds=("cls", "dist", "patch"),
                     stop_early=True) as early:
            out = early.forward(model, x)
    assert out is None
    assert full.tokens.keys() == early.tokens.keys()
    for k in full.tokens:
        assert torch.equal(full.tokens[k], early.tokens[k])
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_hooks_are_removed_when_a_later_site_fails():
    import torch.nn as nn

    from probing import ModelError
    from probing.hooks import capture

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=2)
    model.norm = None  # the "norm" site cannot be captured: registering it fails
    hooked = [m for m in model.modules() if isinstance(m, nn.Module)]
    with pytest.raises(ModelError, match="no final norm"):
        with capture(model, layers=[1, 2, "norm"]):
            pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in hooked)
