"""Rollout and gradient rollout against direct, independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from probing.attention import gradient_relevance, gradient_rollout, rollout, rollout_map
from probing.attention_hooks import capture_attention
from probing.layout import TokenLayout


def _attention(seed, b, layers, heads, n):
    a = np.random.default_rng(seed).random((b, layers, heads, n, n)) ** 2
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_equals_direct_product(fusion):
    a = _attention(0, 2, 3, 2, 5)
    joint = rollout(a, head_fusion=fusion)
    reduce = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    for b in range(2):
        r = np.eye(5)
        for layer in range(3):
            m = 0.5 * reduce(a[b, layer], axis=0) + 0.5 * np.eye(5)
            m = m / m.sum(1, keepdims=True)
            r = m @ r  # later layers on the left
        np.testing.assert_allclose(joint[b], r, atol=1e-14)


def test_mean_fusion_cls_query_is_product_of_half_a_plus_i_with_cls_not_first():
    layout = TokenLayout(grid=(2, 2), patch_size=(8, 8), prefix=("reg", "reg", "cls"))
    a = _attention(1, 1, 4, 3, layout.n_tokens)
    fused = [0.5 * (a[0, k].mean(0) + np.eye(7)) for k in range(4)]
    product = fused[3] @ fused[2] @ fused[1] @ fused[0]
    row = product[2, 3:]
    np.testing.assert_allclose(rollout_map(a, layout)[0].ravel(), row / row.max(), atol=1e-14)
    # start_layer skips the first layers
    part = fused[3] @ fused[2]
    np.testing.assert_allclose(np.asarray(rollout(a, start_layer=3))[0], part, atol=1e-14)


def test_no_cls_rollout_map_is_mean_patch_row():
    layout = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=())
    a = _attention(2, 2, 2, 2, 6)
    joint = np.asarray(rollout(a))
    mean_row = joint.mean(1).reshape(2, 2, 3)
    expected = mean_row / mean_row.reshape(2, -1).max(1)[:, None, None]
    np.testing.assert_allclose(rollout_map(a, layout), expected)


# ------------------------------------------------------------------- gradient rollout
def _model(**kw):
    torch.manual_seed(0)
    m = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2,
                          num_classes=4, **kw)
    with torch.no_grad():  # peaked attention that differs by layer, so pairings are distinguishable
        for i, block in enumerate(m.blocks):
            block.attn.qkv.weight.normal_(0.0, 0.3 * (i + 1))
            block.mlp.fc2.weight.normal_(0.0, 0.2)
        m.head.weight.normal_(0.0, 1.0)
    return m.eval()


def _reference_relevance(model, x, target, reverse=False):
    """Chefer et al. 2021 generic rule written out with torch.autograd.grad per layer."""
    with capture_attention(model, keep_grad=True) as store:
        logits = model(x)
        attn = [store[k] for k in sorted(store)]
        grads = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), attn)
    if reverse:
        grads = grads[::-1]
    n = attn[0].shape[-1]
    r = torch.eye(n, dtype=torch.float64).expand(len(x), n, n)
    for a, g in zip(attn, grads):
        cam = (g.double() * a.double()).clamp(min=0).mean(1)
        r = r + cam @ r
    return r.detach().numpy()


NO_CLS = {"class_token": False, "global_pool": "avg"}


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 2}, NO_CLS])
def test_gradient_relevance_pairs_each_layer_with_its_own_gradient(kw):
    model = _model(**kw)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = [1, 3]
    got = gradient_relevance(model, x, target=target)
    ref = _reference_relevance(model, x, torch.tensor(target))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-9)
    rev = _reference_relevance(model, x, torch.tensor(target), reverse=True)
    eye = np.eye(got.shape[-1])
    # the reversed pairing differs by more than 5% of the relevance beyond I: the test can tell
    assert np.abs(got - rev).max() > 0.05 * np.abs(got - eye).max()
    layout = TokenLayout.from_model(model)
    maps = gradient_rollout(model, x, layout, target)
    rel = got - np.eye(got.shape[-1])
    q = layout.cls_index
    row = rel[:, q, layout.patch_slice] if q is not None else rel[:, layout.patch_slice,
                                                                  layout.patch_slice].mean(1)
    row = row / row.max(1, keepdims=True)
    np.testing.assert_allclose(maps.reshape(2, -1), row, rtol=1e-6)


def test_gradient_rollout_default_target_is_prediction_and_model_untouched():
    model = _model()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    pred = model(x).argmax(-1).tolist()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(gradient_rollout(model, x), gradient_rollout(model, x, None, pred))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
