"""Attention capture on every timm ViT family (issue 13): what each block really applies.

Each family is a tiny random model (pretrained=False). For every captured layer the weights
equal an independent recomputation from the module's own q/k (+ its bias), the row sums are
the documented ones, the logits are those of the unfused forward, and rollout, mean attention
distance, gradient rollout and integrated gradients run on the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F

from probing.attention import (
    gradient_rollout,
    mean_attention_distance,
    rollout,
    rollout_map,
)
from probing.attention_hooks import attention_sites, capture_attention
from probing.attribution import attribution_maps
from probing.errors import ModelError
from probing.layout import TokenLayout

SMALL = dict(embed_dim=32, num_heads=2, depth=2, num_classes=5)
FAMILIES = {
    "vit_small_patch16_18x2_224": dict(img_size=32),
    "vit_pwee_patch16_reg1_gap_256": dict(img_size=32),
    "vit_dwee_patch16_reg1_gap_256": dict(img_size=32),
    "samvit_base_patch16": dict(img_size=64, window_size=3, global_attn_indexes=(1,),
                                neck_chans=16),
    "cait_xxs24_224": dict(img_size=32),
    "convit_tiny": dict(img_size=32, depth=3, num_heads=4, local_up_to_layer=2),
    "beit_base_patch16_224": dict(img_size=32),
}


def _model(name: str) -> torch.nn.Module:
    kw = {**SMALL, **FAMILIES[name]}
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw).eval()
    with torch.no_grad():  # biases that are zero at init would hide a missing bias
        for pname, p in model.named_parameters():
            if any(s in pname for s in ("rel_pos", "relative_position", "lambda_")):
                p.normal_(0.0, 0.5)
    return model


def _images(name: str) -> torch.Tensor:
    s = FAMILIES[name]["img_size"]
    return torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))


def _softmax_qk(q, k, scale, bias=None):
    a = (q * scale) @ k.transpose(-2, -1)
    return (a if bias is None else a + bias).softmax(-1)


def _qkv(mod, x):
    b, n, _ = x.shape
    qkv = mod.qkv(x).reshape(b, n, 3, mod.num_heads, -1).permute(2, 0, 3, 1, 4)
    return mod.q_norm(qkv[0]) if hasattr(mod, "q_norm") else qkv[0], \
        mod.k_norm(qkv[1]) if hasattr(mod, "k_norm") else qkv[1]


def _reference(site, x):
    """The attention of ``site`` recomputed from its module's input ``x`` (our own code)."""
    mod, block = site.modules[0], site.block
    if site.kind == "parallel":
        return torch.cat([_softmax_qk(*_qkv(m, xi), m.scale) for m, xi in zip(site.modules, x)],
                         dim=1)
    x = x[0]
    if site.kind == "fused":
        b, n, c = x.shape
        _, q, k, _ = torch.split(block.in_proj(block.in_norm(x)), block.in_split, dim=-1)
        q = block.q_norm(q.view(b, n, block.num_heads, -1)).transpose(1, 2)
        k = block.k_norm(k.view(b, n, block.num_heads, -1)).transpose(1, 2)
        return _softmax_qk(q, k, block.scale)
    if site.kind == "differential":
        b, n, _ = x.shape
        q, k, _ = mod.qkv(x).chunk(3, dim=2)
        q = mod.q_norm(q.reshape(b, n, 2 * mod.num_heads, -1).transpose(1, 2))
        k = mod.k_norm(k.reshape(b, n, 2 * mod.num_heads, -1).transpose(1, 2))
        s = _softmax_qk(q, k, mod.scale)
        lam = (torch.exp((mod.lambda_q1 * mod.lambda_k1).sum()) -
               torch.exp((mod.lambda_q2 * mod.lambda_k2).sum()) + mod.lambda_init)
        return s[:, 0::2] - lam * s[:, 1::2]
    if site.kind in ("windowed", "global"):
        from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias

        return _sam_reference(mod, block, block.norm1(x), get_decomposed_rel_pos_bias)
    if site.kind == "class":
        b, n, c = x.shape
        h = mod.num_heads
        q = mod.q(x[:, :1]).reshape(b, 1, h, -1).transpose(1, 2)
        k = mod.k(x).reshape(b, n, h, -1).transpose(1, 2)
        return _softmax_qk(q, k, mod.scale)
    if site.kind == "talking":
        q, k = _qkv(mod, x)
        a = (q * mod.scale) @ k.transpose(-2, -1)
        a = mod.proj_l(a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).softmax(-1)
        return mod.proj_w(a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    if site.kind == "gpsa":
        b, n, c = x.shape
        qk = mod.qk(x).reshape(b, n, 2, mod.num_heads, -1).permute(2, 0, 3, 1, 4)
        g = torch.sigmoid(mod.gating_param).view(1, -1, 1, 1)
        pos = mod.pos_proj(mod.get_rel_indices(n)).permute(0, 3, 1, 2).softmax(-1)
        a = (1 - g) * _softmax_qk(qk[0], qk[1], mod.scale) + g * pos
        return a / a.sum(-1, keepdim=True)
    q, k = _qkv(mod, x)  # plain / BEiT with its relative position bias
    if getattr(mod, "q_bias", None) is not None:
        b, n, _ = x.shape
        qkv = F.linear(x, mod.qkv.weight, torch.cat((mod.q_bias, mod.k_bias, mod.v_bias)))
        qkv = qkv.reshape(b, n, 3, mod.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
    bias = None
    if getattr(mod, "relative_position_bias_table", None) is not None:
        n = q.shape[2]
        bias = mod.relative_position_bias_table[mod.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)[None]
    return _softmax_qk(q, k, mod.scale, bias)


def _sam_reference(mod, block, x, rel_bias):
    """SAM: softmax over each query's window (padding keys included), placed at patch keys."""
    b, gh, gw, c = x.shape
    w = block.window_size if block.window_size > 0 else max(gh, gw)
    hp, wp = -(-gh // w) * w, -(-gw // w) * w
    xp = F.pad(x, (0, 0, 0, wp - gw, 0, hp - gh))
    heads = mod.num_heads
    out = torch.zeros(b, heads, gh * gw, gh * gw)
    for wy in range(hp // w):
        for wx in range(wp // w):
            win = xp[:, wy * w:(wy + 1) * w, wx * w:(wx + 1) * w].reshape(b, w * w, c)
            qkv = mod.qkv(win).reshape(b, w * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
            q, k = qkv[0].reshape(b * heads, w * w, -1), qkv[1].reshape(b * heads, w * w, -1)
            bias = rel_bias(q, mod.rel_pos_h, mod.rel_pos_w, (w, w), (w, w))
            a = _softmax_qk(q, k, mod.scale, bias).reshape(b, heads, w * w, w * w)
            for i in range(w * w):
                yi, xi = wy * w + i // w, wx * w + i % w
                if yi >= gh or xi >= gw:
                    continue
                for j in range(w * w):
                    yj, xj = wy * w + j // w, wx * w + j % w
                    if yj < gh and xj < gw:
                        out[:, :, yi * gw + xi, yj * gw + xj] = a[:, :, i, j]
    return out


def _capture_with_inputs(model, x, keep_grad=False):
    """Logits, the store, and each site's module inputs (one per branch)."""
    inputs: dict[int, list] = {}
    handles = []
    for site in attention_sites(model):
        whole = site.kind in ("fused", "windowed", "global")  # the block's input
        where = (site.block,) if whole else site.modules
        for m in where:
            handles.append(m.register_forward_pre_hook(
                lambda _m, args, _l=site.layer: inputs.setdefault(_l, []).append(args[0])))
    try:
        with capture_attention(model, keep_grad=keep_grad) as store:
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, store, inputs


def _row_sums(site, store, layer):
    """The documented row sums of each kind."""
    a = store[layer]
    if site.kind == "differential":
        return torch.full(a.shape[:-1], 1.0 - store.lambdas[layer])
    if site.kind == "talking":
        pw = site.modules[0].proj_w
        return (pw.weight.sum(1) + a.shape[-1] * pw.bias).view(1, -1, 1).expand(a.shape[:-1])
    return torch.ones(a.shape[:-1])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_captured_attention_is_what_each_family_applies(name):
    model, x = _model(name), _images(name)
    with torch.no_grad():
        plain = model(x)
        logits, store, inputs = _capture_with_inputs(model, x)
        for site in attention_sites(model):
            a, ref = store[site.layer], _reference(site, inputs[site.layer])
            assert a.shape == ref.shape, (site.kind, a.shape, ref.shape)
            torch.testing.assert_close(a, ref, atol=2e-6, rtol=1e-5)
            if site.kind == "windowed":  # padding keys drop mass: rows sum to <= 1
                assert (a.sum(-1) <= 1 + 1e-6).all() and (a.sum(-1) < 1 - 1e-3).any()
                assert (a == 0).float().mean() > 0.5  # zero outside the window
            else:
                torch.testing.assert_close(a.sum(-1), _row_sums(site, store, site.layer),
                                           atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    # the values the modules use are untouched also when gradients are kept
    with torch.enable_grad():
        grad_logits, _, _ = _capture_with_inputs(model, x, keep_grad=True)
    assert torch.equal(grad_logits.detach(), logits)


def test_differential_attention_keeps_the_module_heads_and_lambda():
    model = _model("vit_dwee_patch16_reg1_gap_256")
    with torch.no_grad(), capture_attention(model) as store:
        model(_images("vit_dwee_patch16_reg1_gap_256"))
    assert store[1].shape[1] == model.blocks[0].attn.num_heads == 2  # not 2 * heads
    assert 0 < store.lambdas[1] != store.lambdas[2]


def test_parallel_branches_are_numbered_across_heads():
    model = _model("vit_small_patch16_18x2_224")
    site = attention_sites(model)[0]
    assert (site.branches, site.num_heads) == (2, 2)
    assert [site.branch_of(h) for h in range(4)] == [0, 0, 1, 1]


def test_late_tokens_and_class_attention_embed_into_the_full_token_set():
    model = _model("cait_xxs24_224")
    with torch.no_grad(), capture_attention(model) as store:
        model(_images("cait_xxs24_224"))
    assert [tuple(store[k].shape[-2:]) for k in sorted(store)] == [(4, 4), (4, 4), (1, 5), (1, 5)]
    joint = rollout(store)
    # by hand: a self block moves patches only (CLS row = identity), a class block the CLS only
    r = np.eye(5)
    for k in sorted(store):
        a = store[k].double().numpy().mean(1)  # (B, q, k) head mean
        step = np.broadcast_to(np.eye(5), (2, 5, 5)).copy()
        if a.shape[-2] == 1:
            step[:, 0] = (a[:, 0] + np.eye(5)[0]) / 2
        else:
            step[:, 1:, 1:] = (a + np.eye(4)) / 2
        r = (step / step.sum(-1, keepdims=True)) @ r  # rollout renormalises rows
    np.testing.assert_allclose(joint, r, atol=1e-6)
    assert np.allclose(joint[:, 1:, 0], 0.0) and (joint[:, 0, 1:] > 0).all()


def test_xcit_attention_is_a_model_error_naming_the_family():
    model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, img_size=32, depth=2,
                              num_classes=5).eval()
    with pytest.raises(ModelError, match="XCiT.*cross-covariance"):
        with capture_attention(model):
            pass


@pytest.mark.parametrize("name", list(FAMILIES))
def test_attention_analyses_run_on_every_family(name):
    model, x = _model(name), _images(name)
    layout = TokenLayout.from_model(model, img_size=tuple(x.shape[-2:]))
    with torch.no_grad(), capture_attention(model) as store:
        model(x)
    n = max(a.shape[-1] for a in store.values())
    if n != layout.n_tokens:  # the layout of this family is another part of issue 13
        pytest.skip(f"layout has {layout.n_tokens} tokens, the model's blocks {n}")
    joint = rollout(store, layout)
    assert joint.shape == (2, n, n) and np.isfinite(joint).all()
    assert np.isfinite(rollout_map(store, layout)).all()
    mad = mean_attention_distance(store, layout)
    assert len(mad) == sum(a.shape[1] for a in store.values())
    cls_only = [k for k, a in store.items() if a.shape[-2] == 1]
    assert mad[~mad["layer"].isin(cls_only)]["distance_px"].notna().all()
    assert np.isfinite(gradient_rollout(model, x, layout)).all()
    ig = attribution_maps(model, x, layout, "integrated_gradients", n_steps=2)
    assert ig.maps.shape == (2, *layout.grid)


def test_class_attention_round_trips_through_a_frame():
    from probing.attention import parse_attention
    from probing.attention_frames import attention_frame

    model = _model("cait_xxs24_224")
    with torch.no_grad(), capture_attention(model, [3]) as store:
        model(_images("cait_xxs24_224"))
    frame = attention_frame({3: store[3].numpy()}, np.array([7, 8]))
    assert len(frame) == 2 * 2 and (frame["query"] == 0).all()  # one CLS row per head
    parsed = parse_attention(frame)
    np.testing.assert_allclose(parsed.layers[0][:, :, 0], store[3][:, :, 0].numpy())
    assert parsed.present.tolist() == [[True, False, False, False, False]]


def _nudged_logit(model, x, mod, index, eps):
    """``logits[:, 0].sum()`` with ``eps`` added to one entry of ``mod``'s softmax output."""
    def nudge(_m, _inp, out):
        out = out.clone()
        out[index] += eps
        return out

    h = mod.attn_drop.register_forward_hook(nudge)
    try:
        with torch.no_grad(), capture_attention(model):  # the same unfused path
            return float(model(x)[:, 0].sum())
    finally:
        h.remove()


@pytest.mark.parametrize("name, layer, raw_index, stored_index, factor", [
    # differential: the first softmax of head 1 enters the effective weights as is, the second
    # one times -λ (raw heads are (h, softmax) pairs: raw head 2 * h + s)
    ("vit_dwee_patch16_reg1_gap_256", 1, (0, 2, 1, 3), (0, 1, 1, 3), 1.0),
    ("vit_dwee_patch16_reg1_gap_256", 1, (0, 3, 1, 3), (0, 1, 1, 3), "-lambda"),
    # parallel: head 0 of branch 1 is stored head num_heads + 0 (CLS query: the last block's
    # patch rows do not reach the CLS-pooled logits)
    ("vit_small_patch16_18x2_224", 2, (1, 0, 0, 4), (1, 2, 0, 4), 1.0),
    # SAM window 1 of image 0 (windows 3 x 3 patches over a 4 x 4 grid padded to 6 x 6):
    # raw row = (image * 4 + window) * heads + head; window 1 starts at patch (0, 3)
    ("samvit_base_patch16", 1, (1 * 2 + 1, 0, 3), (0, 1, 3, 7), 1.0),
])
def test_stored_attention_gradient_is_the_gradient_of_what_the_module_applies(
        name, layer, raw_index, stored_index, factor):
    model, x = _model(name).double(), _images(name).double()
    site = attention_sites(model)[layer - 1]
    mod = site.modules[1 if site.kind == "parallel" else 0]
    with torch.enable_grad(), capture_attention(model, keep_grad=True) as store:
        model(x)[:, 0].sum().backward()
    grad = float(store[layer].grad[stored_index])
    if factor == "-lambda":
        factor = -store.lambdas[layer]
    eps = 1e-4
    fd = (_nudged_logit(model, x, mod, raw_index, eps)
          - _nudged_logit(model, x, mod, raw_index, -eps)) / (2 * eps)
    assert abs(grad) > 1e-8  # random init: small, but far from float64 noise
    assert factor * grad == pytest.approx(fd, rel=1e-4, abs=1e-12)


# ---------------------------------------------------------------- frames and stores (issue 13)
ROUND_TRIP = ["cait_xxs24_224", "convit_tiny", "samvit_base_patch16",
              "vit_small_patch16_18x2_224", "vit_dwee_patch16_reg1_gap_256"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_attention_frame_has_one_width_and_the_store_reads_it_back_exactly(name, tmp_path):
    from probing import ArraySource, extract
    from probing.attention import parse_attention
    from probing.attention.inputs import embed_layers
    from probing.attention_frames import dense_attention

    model, x = _model(name), _images(name)
    layout = TokenLayout.from_model(model, img_size=tuple(x.shape[-2:]))
    # in memory: one frame of the full width, each layer placed as embed_layers places it
    _, frame = extract(model, x, layers=[1], kinds=["patch"], attention=True)
    assert frame["weights"].dtype.pyarrow_dtype.list_size == layout.n_tokens
    with torch.no_grad(), capture_attention(model) as store:
        model(x)
    full, present = embed_layers([store[k].numpy() for k in sorted(store)])
    dense = dense_attention(frame)
    assert dense.layers == sorted(store)
    np.testing.assert_array_equal(dense.weights, np.stack(full, axis=1))
    assert (dense.present is None) == (present is None)
    if present is not None:
        np.testing.assert_array_equal(dense.present, present)
        np.testing.assert_array_equal(parse_attention(frame).present, present)
    # frame -> store -> frame: exactly what memory returns (two shards of different sizes;
    # one image per forward pass in both, so that the float sums are the same)
    images = np.random.default_rng(0).integers(0, 256, (3, *x.shape[-2:], 3), dtype=np.uint8)
    source = ArraySource(images)
    _, memory = extract(model, source, layers=[1], kinds=["patch"], attention=True,
                        batch_size=1)
    st = extract(model, source, layers=[1], kinds=["patch"], attention=True,
                 store=tmp_path / "s", shard_size=2, batch_size=1)
    pd.testing.assert_frame_equal(st.read_attention(), memory, check_exact=True)
    arr, ids, layers = st.attention()
    np.testing.assert_array_equal(arr, dense_attention(memory).weights)


def test_class_attention_blocks_are_selected_by_their_layout_numbers():
    from probing import LayoutError, capture

    model = _model("cait_xxs24_224")  # 2 self-attention blocks, 2 class-attention blocks
    layout = TokenLayout.from_model(model)
    assert layout.block_layout(3) is layout and layout.block_layout(2).prefix == ()
    with torch.no_grad(), capture(model, layout, layers=[1], kinds=["patch"],
                                  attention=[1, 3, -1]) as cap:
        model(_images("cait_xxs24_224"))
    assert sorted(cap.attention) == [1, 3, 4]
    assert tuple(cap.attention[3].shape[-2:]) == (1, 1 + layout.num_patches)
    assert cap.attention.sites[4].kind == "class"
    with pytest.raises(LayoutError, match=r"class-attention blocks 3\.\.4"):
        with capture(model, layout, layers=[1], kinds=["patch"], attention=[5]):
            pass


def _xcit():
    return timm.create_model("xcit_nano_12_p16_224", pretrained=False, img_size=32, depth=2,
                             num_classes=5).eval()


XCIT_ERROR = "XCiT's cross-covariance attention has no token-to-token weights.*without attention"


def test_xcit_attention_is_refused_by_extract_before_any_work(tmp_path, monkeypatch):
    import importlib

    from probing import ArraySource, extract

    extract_module = importlib.import_module("probing.extract")

    def no_forward(*_a, **_k):
        raise AssertionError("the forward pass ran")

    monkeypatch.setattr(extract_module, "_run", no_forward)
    model = _xcit()
    source = ArraySource(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ModelError, match=XCIT_ERROR):
        extract(model, source, attention=True)
    with pytest.raises(ModelError, match=XCIT_ERROR):
        extract(model, source, attention=True, store=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_xcit_attention_in_a_spec_run_is_a_model_error(tmp_path):
    from probing.run.runner import load_spec, run_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(
        'seed = 0\n'
        f'output = "{(tmp_path / "report").as_posix()}"\n'
        f'store = "{(tmp_path / "stores").as_posix()}"\n'
        '[model]\nspec = "xcit_nano_12_p16_224"\npretrained = false\n'
        '[model.options]\nimg_size = 32\ndepth = 2\nnum_classes = 4\n'
        '[data]\nsource = "shapes"\nn = 4\n'
        '[capture]\nkinds = ["cls", "patch"]\nattention = true\n'
        '[analyses.attention_distance]\nmax_images = 2\n'
    )
    with pytest.raises(ModelError, match=XCIT_ERROR):
        run_spec(load_spec(spec), quiet=True)
    assert not list((tmp_path / "stores").glob("*/manifest.json"))
