"""Captum wrappers, faithfulness curves and the cascading-randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from probing.attribution import (
    attribute,
    attribution_maps,
    black_baseline,
    cascading_randomization,
    deletion_curve,
    faithfulness_curves,
    insertion_curve,
    patch_feature_mask,
)
from probing.attribution.sanity import cascade_flags
from probing.errors import ConfigError, LayoutError
from probing.layout import TokenLayout
from probing.stats import bootstrap_indices

LAYOUT = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=())  # non-square, 8 x 12 px


class PatchLinear(nn.Module):
    """Logit 0 = sum_p w_p * mean(pixels of patch p); logit 1 = 0. Known patch importance."""

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(weights, dtype=torch.float32))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        means = x.mean(1).reshape(len(x), 2, 4, 3, 4).mean((2, 4)).reshape(len(x), -1)
        z = means @ self.w + self.dummy
        return torch.stack([z, torch.zeros_like(z)], 1)


def _images(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 12, generator=g) + 0.5


WEIGHTS = np.array([3.0, -1.0, 0.5, 2.0, 0.0, 1.0])


def test_perturbation_and_saliency_maps_are_the_known_patch_effects():
    model = PatchLinear(WEIGHTS)
    x = _images()
    means = x.mean(1).reshape(2, 2, 4, 3, 4).mean((2, 4)).numpy()
    w = WEIGHTS.reshape(2, 3)
    for method in ("occlusion", "feature_ablation"):
        maps = attribution_maps(model, x, LAYOUT, method, target=0).maps
        np.testing.assert_allclose(maps, w * means, rtol=1e-5, atol=1e-5)
    sal = attribution_maps(model, x, LAYOUT, "saliency", target=0).maps
    np.testing.assert_allclose(sal, np.broadcast_to(np.abs(w), (2, 2, 3)), rtol=1e-5)


def test_feature_mask_numbers_patches_row_major():
    mask = patch_feature_mask(LAYOUT)[0, 0]
    assert mask.shape == (8, 12)
    assert mask[5, 9].item() == 1 * 3 + 2 and mask[0, 0].item() == 0


def test_integrated_gradients_delta_is_small_and_patches_keep_completeness():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 12, 16), nn.Tanh(), nn.Linear(16, 3))
    x = _images(3, seed=1)
    res = attribution_maps(model, x, LAYOUT, "integrated_gradients", target=2, n_steps=50)
    with torch.no_grad():
        gap = (model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]).double().numpy()
    assert res.delta.shape == (3,)
    assert np.all(np.abs(res.delta) <= 1e-2 * np.abs(gap))
    np.testing.assert_allclose(res.maps.sum((1, 2)), gap + res.delta, rtol=1e-4, atol=1e-6)
    frame = attribute(model, x, LAYOUT, "integrated_gradients", target=2,
                      image_ids=["a", "b", "c"])
    assert list(frame.columns) == ["image_id", "method", "row", "col", "value", "target", "delta"]
    assert len(frame) == 3 * 6 and frame["delta"].notna().all()
    frame = attribute(model, x, LAYOUT, "saliency")
    assert frame["delta"].isna().all()


def test_deletion_of_true_ranking_lies_below_random_and_insertion_above():
    model = PatchLinear(np.array([4.0, 0.2, 0.1, 3.0, 0.0, 2.0]))
    x = _images(2, seed=2)
    truth = np.broadcast_to(np.array([4.0, 0.2, 0.1, 3.0, 0.0, 2.0]).reshape(2, 3), (2, 2, 3))
    res = faithfulness_curves(model, x, LAYOUT, maps={"truth": truth}, baseline="zero",
                              target=0, n_random=8, seed=0)
    c = res.curves
    for mode, better in (("deletion", np.less_equal), ("insertion", np.greater_equal)):
        t = c[(c["mode"] == mode) & (c.method == "truth")]["prob"].to_numpy()
        r = c[(c["mode"] == mode) & (c.method == "random")]["prob"].to_numpy()
        assert np.all(better(t, r + (1e-12 if mode == "deletion" else -1e-12)))
    auc = res.summary.set_index(["method", "mode"])["auc_mean"]
    assert auc["truth", "deletion"] < auc["random", "deletion"]
    assert auc["truth", "insertion"] > auc["random", "insertion"]
    # the single-curve helpers agree with the combined call
    d = deletion_curve(model, x, LAYOUT, maps=truth, baseline="zero", target=0)
    t = c[(c["mode"] == "deletion") & (c.method == "truth")]["prob"].to_numpy().reshape(2, -1)
    np.testing.assert_allclose(d, t)
    ins = insertion_curve(model, x, LAYOUT, maps=truth, baseline="zero", target=0, step=4)
    assert ins.shape == (2, 3)  # 0, 4 and 6 patches inserted


def test_bad_inputs_are_refused():
    model = PatchLinear(WEIGHTS)
    with pytest.raises(ConfigError):
        attribution_maps(model, _images(), LAYOUT, "gradcam")
    with pytest.raises(LayoutError):
        attribution_maps(model, torch.rand(1, 3, 9, 12), LAYOUT, "saliency")
    with pytest.raises(ConfigError):
        attribution_maps(model, _images(), LAYOUT, "integrated_gradients", baseline="noise")


def _vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                             num_classes=4, reg_tokens=1).eval()


def test_vit_methods_give_grid_maps_and_layer_ig_delta():
    model = _vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for method in ("layer_integrated_gradients", "rollout", "gradient_rollout", "occlusion"):
        res = attribution_maps(model, x, method=method, n_steps=32, baseline="blur")
        assert res.maps.shape == (2, 4, 4) and np.isfinite(res.maps).all()
    lig = attribution_maps(model, x, None, "layer_integrated_gradients", n_steps=64)
    with torch.no_grad():
        t = torch.as_tensor(lig.target)[:, None]
        gap = model(x).gather(1, t)[:, 0] - model(torch.zeros_like(x)).gather(1, t)[:, 0]
    assert np.all(np.abs(lig.delta) <= 0.05 * np.abs(gap.numpy()) + 1e-4)


def test_a_given_target_costs_no_extra_forward_and_is_still_checked():
    model = _vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        free = attribution_maps(model, x, None, "integrated_gradients", n_steps=8)
        n_free = len(calls)
        calls.clear()
        given = attribution_maps(model, x, None, "integrated_gradients", n_steps=8,
                                 target=free.target.tolist())
        n_given = len(calls)
        calls.clear()
        with pytest.raises(ConfigError):
            attribution_maps(model, x, None, "integrated_gradients", n_steps=8, target=4)
        assert calls == []  # refused before any forward pass
    finally:
        handle.remove()
    assert n_given == n_free - 1
    np.testing.assert_allclose(given.maps, free.maps, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(given.target, free.target)


def test_cascading_randomization_lowers_gradient_map_correlation_and_spares_the_model():
    model = _vit()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    res = cascading_randomization(model, x, None, ("saliency", "integrated_gradients"),
                                  n_steps=16)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    s = res.summary
    assert list(s[s.method == "saliency"]["randomized"]) == ["none", "head", "block 2", "block 1",
                                                             "embed"]
    for method in ("saliency", "integrated_gradients"):
        g = s[s.method == method].sort_values("step")
        assert g["spearman_mean"].iloc[0] == pytest.approx(1.0)
        assert g["spearman_mean"].iloc[-1] < 0.9
    # the whole cascade decides the flag: any randomised step still >= the threshold (on this
    # untrained toy model saliency's |gradient| keeps the input's structure, Adebayo et al.)
    flags = res.flags.set_index("method")
    for method, g in s[s.step >= 1].groupby("method"):
        assert flags.loc[method, "flagged"] == bool((g["spearman_mean"] >= 0.5).any())
    assert not flags.loc["integrated_gradients", "flagged"]
    # every randomised step is compared with the threshold
    flagged = cascading_randomization(model, x, methods=("saliency",), threshold=-2.0)
    assert flagged.flags["flagged"].all()


def test_black_baseline_is_raw_zero_after_normalisation():
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    black = black_baseline(x, mean, std)
    raw = black * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert black.shape == x.shape
    torch.testing.assert_close(raw, torch.zeros_like(x), atol=1e-6, rtol=0)
    one = black_baseline(torch.rand(1, 1, 2, 2), (0.1307,), (0.3081,))
    assert float(one[0, 0, 0, 0]) == pytest.approx(-0.1307 / 0.3081, rel=1e-6)


def test_start_check_and_auc_intervals_match_hand_computations():
    model = PatchLinear(np.array([4.0, 0.2, 0.1, 3.0, 0.0, 2.0]))
    x = _images(5, seed=3)
    maps = {"truth": np.broadcast_to(np.array([4.0, 0.2, 0.1, 3.0, 0.0, 2.0]).reshape(2, 3),
                                     (5, 2, 3))}
    base = torch.linspace(-0.3, 0.3, 5).view(5, 1, 1, 1).expand_as(x).clone()  # p from low to high
    res = faithfulness_curves(model, x, LAYOUT, maps=maps, target=0, n_random=2, seed=4,
                              baseline={"deletion": "zero", "insertion": base}, n_boot=300)
    with torch.no_grad():
        p = torch.softmax(model(base).double(), -1)[:, 0].numpy()
        top = model(base).argmax(1).numpy() == 0
    start = res.start[res.start["mode"] == "insertion"]
    np.testing.assert_allclose(start["prob"], p)
    np.testing.assert_array_equal(start["is_argmax"], top)
    # the insertion curve starts at the start image's probability
    first = res.curves[(res.curves["mode"] == "insertion") & (res.curves["step"] == 0)]
    np.testing.assert_allclose(first.groupby("image_id")["prob"].first(), p, rtol=1e-5)
    frac = res.start_classified("insertion")
    assert 0 < frac < 1 and frac == pytest.approx(np.mean((p >= 0.5) | top))
    # AUC intervals: a hand bootstrap over the images with the same seed
    auc = res.auc[(res.auc["method"] == "truth") & (res.auc["mode"] == "deletion")]["auc"]
    reps = [auc.to_numpy()[i].mean() for i in bootstrap_indices(5, 300, 4)]
    row = res.summary.set_index(["method", "mode"]).loc[("truth", "deletion")]
    assert row["ci_low"] == pytest.approx(np.percentile(reps, 2.5))
    assert row["ci_high"] == pytest.approx(np.percentile(reps, 97.5))


def _summary(method: str, correlations: list[float]) -> pd.DataFrame:
    labels = ["none", "head", *[f"block {b}" for b in range(6, 0, -1)], "embed"]
    return pd.DataFrame({"method": method, "step": range(len(labels)), "randomized": labels,
                         "spearman_mean": [1.0, *correlations]})


def test_cascade_flag_sees_a_method_insensitive_to_five_of_six_blocks():
    # insensitive to the head and blocks 6..2, sensitive only to block 1 and the embedding:
    # the last step alone (0.1 < 0.5) would pass it
    lazy = _summary("lazy", [1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.1, 0.05])
    good = _summary("good", [0.3, 0.2, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0])
    flags = cascade_flags(pd.concat([lazy, good]), threshold=0.5).set_index("method")
    assert flags.loc["lazy", "flagged"] and not flags.loc["good", "flagged"]
    assert flags.loc["lazy", "final_spearman"] < 0.5
    assert flags.loc["lazy", "n_insensitive"] == 6 and flags.loc["lazy", "n_steps"] == 8
    assert flags.loc["lazy", "insensitive_to"] == "head, block 6, block 5, block 4, block 3, " \
                                                  "block 2"


def test_rollout_of_a_model_whose_upper_blocks_ignore_their_weights_is_flagged():
    """Blocks 2..6 with all-zero weights stay zero under randomisation (a constant tensor is
    redrawn as itself), so rollout changes only once block 1 is randomised."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=6, num_heads=2,
                              num_classes=4).eval()
    with torch.no_grad():
        for block in model.blocks[1:]:
            for name, p in block.named_parameters():
                if "norm" not in name:
                    p.zero_()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    res = cascading_randomization(model, x, None, ("rollout",), seed=0, threshold=0.5,
                                  n_boot=50)
    flags = res.flags.set_index("method").loc["rollout"]
    steps = res.summary.set_index("randomized")["spearman_mean"]
    assert steps[["head", "block 6", "block 2"]].min() > 0.99  # insensitive to 5 of 6 blocks
    assert flags["final_spearman"] < 0.5  # the old last-step rule would pass it
    assert flags["flagged"] and flags["n_insensitive"] == 6
    s = res.summary
    assert np.all(s["ci_low"] <= s["spearman_mean"] + 1e-12)
    assert np.all(s["spearman_mean"] <= s["ci_high"] + 1e-12)


def test_cascade_given_the_intact_maps_equals_the_cascade_that_draws_them():
    model = _vit()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    methods = ("saliency", "rollout")
    intact = {m: attribution_maps(model, x, None, m).maps for m in methods}
    drawn = cascading_randomization(model, x, None, methods, seed=1)
    given = cascading_randomization(model, x, None, methods, seed=1, original=intact)
    pd.testing.assert_frame_equal(given.scores, drawn.scores)
    # the given maps are what every step is compared with: other maps, other correlations
    shuffled = {m: v[:, ::-1, ::-1].copy() for m, v in intact.items()}
    other = cascading_randomization(model, x, None, methods, seed=1, original=shuffled)
    assert not np.allclose(other.scores["spearman"], drawn.scores["spearman"], equal_nan=True)


def test_captum_is_imported_without_loading_ipython_and_leaves_it_importable():
    import subprocess
    import sys

    code = ("import sys\n"
            "from probing.attribution import methods\n"
            "methods.import_without('captum.attr', 'IPython')\n"
            "assert 'captum.attr' in sys.modules and 'IPython' not in sys.modules\n"
            "import importlib.util\n"
            "assert importlib.util.find_spec('IPython') is None or __import__('IPython')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
