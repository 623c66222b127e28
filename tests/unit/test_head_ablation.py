"""Head ablation (Michel et al. 2019) against a block recomputed by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from probing import load_model
from probing.attention import ALL_HEADS, ablate_heads, head_ablation, head_means
from probing.errors import ModelError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                      depth=2, num_heads=3, embed_dim=24, num_classes=4).model


@pytest.fixture(scope="module")
def images():
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _by_hand(m, images, block, head, value=None):
    """Logits with head ``head`` of block ``block`` (1-based) replaced by ``value`` (0 if None),
    the block recomputed from its weights."""
    with torch.no_grad():
        x = m.norm_pre(m._pos_embed(m.patch_embed(images)))
        for i, blk in enumerate(m.blocks, start=1):
            if i != block:
                x = blk(x)
                continue
            a = blk.attn
            B, N, C = x.shape
            qkv = a.qkv(blk.norm1(x)).reshape(B, N, 3, a.num_heads, a.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            w = ((q * a.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
            out = w @ v  # (B, H, N, d)
            out[:, head] = 0.0 if value is None else value
            attn_out = a.proj(out.transpose(1, 2).reshape(B, N, C))
            x = x + blk.ls1(attn_out)
            x = x + blk.ls2(blk.mlp(blk.norm2(x)))
        return m.forward_head(m.norm(x))


@pytest.mark.parametrize("block,head", [(1, 0), (2, 2)])
def test_zero_and_mean_ablation_match_the_hand_computation(tiny, images, block, head):
    d = tiny.blocks[0].attn.head_dim
    with ablate_heads(tiny, {block: [head]}, "zero"), torch.no_grad():
        zeroed = tiny(images)
    torch.testing.assert_close(zeroed, _by_hand(tiny, images, block, head), rtol=0, atol=1e-5)
    means = head_means(tiny, images)
    mean = means[block][:, head * d:(head + 1) * d]  # (N, d)
    with ablate_heads(tiny, {block: [head]}, "mean", means), torch.no_grad():
        meaned = tiny(images)
    torch.testing.assert_close(meaned, _by_hand(tiny, images, block, head, mean),
                               rtol=0, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(zeroed, tiny(images))  # hooks gone, model intact


def test_head_ablation_table_matches_direct_ablation(tiny, images):
    target = np.array([0, 1, 2, 3, 0])
    out = head_ablation(tiny, images, target, batch_size=3)  # ablations stacked in batches
    got = out.set_index(["layer", "head", "mode", "metric"])["value"]
    means = head_means(tiny, images)
    rows = np.arange(5)
    with torch.no_grad():
        base = tiny(images)
        for block, heads, head, mode in [(2, [0, 1, 2], ALL_HEADS, "zero"), (1, [1], 1, "mean"),
                                         (2, [0], 0, "zero"), (2, [2], 2, "mean")]:
            with ablate_heads(tiny, {block: heads}, mode, means):
                z = tiny(images)
            want = (base[rows, target] - z[rows, target]).double().mean().item()
            assert got[(block, head, mode, "logit_drop")] == pytest.approx(want, abs=1e-5)
            acc = (base.argmax(1).numpy() == target).mean() - (z.argmax(1).numpy() == target).mean()
            assert got[(block, head, mode, "accuracy_drop")] == pytest.approx(acc)
    assert len(out) == 2 + 2 * (3 + 1) * 2 * 2  # intact + 2 blocks x (3 heads + all) x 2 modes x 2
    acc = (base.argmax(1).numpy() == target).mean()
    assert got[(0, ALL_HEADS, "none", "accuracy")] == pytest.approx(acc)


def test_ablation_refuses_models_without_a_proj():
    class Attn(nn.Module):
        num_heads = 2

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attn()

    model = nn.Module()
    model.blocks = nn.ModuleList([Block()])
    with pytest.raises(ModelError, match="attn.proj"):
        head_ablation(model, torch.zeros(1, 3, 8, 8))
