"""Attributions over the patch grid (captum), faithfulness curves and sanity checks.

The attribution methods wrap captum (Kokhlikyan et al. 2020); nothing here re-implements them:

- ``"integrated_gradients"`` (Sundararajan et al. 2017), with captum's convergence delta
  ``sum(attributions) - (F(x) - F(x'))`` per image (completeness).
- ``"saliency"`` (Simonyan et al. 2014): absolute input gradient.
- ``"occlusion"`` (Zeiler & Fergus 2014): captum ``Occlusion`` with a window and stride of one
  patch, so each patch is occluded exactly once.
- ``"feature_ablation"``: captum ``FeatureAblation`` with a patch-grid feature mask
  (:func:`patch_feature_mask`).
- ``"layer_integrated_gradients"``: captum ``LayerIntegratedGradients`` on ``model.patch_embed``
  (the patch projection, before positional encoding), with its convergence delta.
- ``"rollout"`` and ``"gradient_rollout"``: :func:`probing.attention.rollout_map` and
  :func:`probing.attention.gradient_rollout`, so every explanation can be checked the same way.

From pixels to patches: gradient methods (integrated gradients, saliency) are **summed** over
the channels and pixels of each patch (so integrated gradients keep completeness);
perturbation methods (occlusion, feature ablation) give every pixel of a patch the same output
change, and the patch value is that change (the mean over the patch). Layer integrated
gradients are summed over the embedding dimension of each patch token.

Baselines (``baseline=``), in the model's input space (after preprocessing): ``"zero"`` (all
zeros, i.e. the normalisation mean colour for mean/std-normalised inputs), ``"mean"`` (each
image's per-channel mean), ``"blur"`` (the image under a Gaussian blur, sigma = half the larger
patch side in pixels unless ``blur_sigma`` is given), or a tensor of the images' shape.

Faithfulness curves (Petsiuk et al. 2018) are in :func:`faithfulness_curves`; the cascading
randomisation sanity check (Adebayo et al. 2018) in :func:`cascading_randomization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .attention import image_id_array, relevance_frame, resolve_targets
from .errors import ConfigError, LayoutError, ModelError
from .layout import TokenLayout

__all__ = [
    "ATTENTION_METHODS",
    "CAPTUM_METHODS",
    "AttributionMaps",
    "FaithfulnessResult",
    "SanityResult",
    "attribute",
    "attribution_maps",
    "cascading_randomization",
    "deletion_curve",
    "faithfulness_curves",
    "insertion_curve",
    "make_baseline",
    "patch_feature_mask",
    "pixels_to_patches",
]

Method = Literal[
    "integrated_gradients",
    "saliency",
    "occlusion",
    "feature_ablation",
    "layer_integrated_gradients",
    "rollout",
    "gradient_rollout",
]
Baseline = Literal["zero", "mean", "blur"]
CAPTUM_METHODS: tuple[str, ...] = (
    "integrated_gradients",
    "saliency",
    "occlusion",
    "feature_ablation",
    "layer_integrated_gradients",
)
ATTENTION_METHODS: tuple[str, ...] = ("rollout", "gradient_rollout")
_DELTA_METHODS = ("integrated_gradients", "layer_integrated_gradients")


@dataclass(frozen=True)
class AttributionMaps:
    """Patch-grid maps of one method.

    Attributes
    ----------
    method : str
        The method name.
    maps : numpy.ndarray
        ``(batch, rows, cols)`` float64 patch attributions.
    target : numpy.ndarray
        ``(batch,)`` int64 class each map explains (-1 for the target-free ``"rollout"``).
    delta : numpy.ndarray or None
        ``(batch,)`` float64 captum convergence delta for the integrated-gradients methods,
        else None.
    """

    method: str
    maps: np.ndarray
    target: np.ndarray
    delta: np.ndarray | None = None


# ----------------------------------------------------------------------- helpers
def _prepare(model, images, layout: TokenLayout | None, device):
    """Images as a float tensor on the model's device, and the layout checked against them."""
    import torch

    if device is not None:
        model.to(device)
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    x = torch.as_tensor(images, dtype=torch.float32).to(dev)
    if x.ndim != 4:
        raise ConfigError(
            f"images has shape {tuple(x.shape)}; pass (batch, channels, height, width)."
        )
    if layout is None:
        layout = TokenLayout.from_model(model, img_size=tuple(x.shape[-2:]))
    expect = (layout.rows * layout.patch_size[0], layout.cols * layout.patch_size[1])
    if tuple(x.shape[-2:]) != expect:
        raise LayoutError(
            f"images are {tuple(x.shape[-2:])} px but the layout's grid covers {expect} px; "
            "pass the layout for this image size."
        )
    return x, layout


def patch_feature_mask(layout: TokenLayout):
    """Captum feature mask giving each pixel its patch index.

    Returns
    -------
    torch.Tensor
        ``(1, 1, rows * patch_h, cols * patch_w)`` int64; pixel ``(y, x)`` holds
        ``(y // patch_h) * cols + x // patch_w``, the patch's index in sequence order (0-based
        among patches). It broadcasts over batch and channels.
    """
    import torch

    idx = torch.arange(layout.num_patches).reshape(layout.rows, layout.cols)
    ph, pw = layout.patch_size
    return idx.repeat_interleave(ph, 0).repeat_interleave(pw, 1)[None, None]


def pixels_to_patches(
    attr, layout: TokenLayout, reduce: Literal["sum", "mean"] = "sum"
) -> np.ndarray:
    """Reduce pixel attributions ``(batch, channels, H, W)`` to ``(batch, rows, cols)``.

    ``reduce="sum"`` sums over channels and the pixels of each patch; ``"mean"`` averages them.
    """
    a = attr.detach().double().cpu() if hasattr(attr, "detach") else np.asarray(attr)
    a = np.asarray(a, dtype=np.float64)
    b = a.shape[0]
    ph, pw = layout.patch_size
    a = a.sum(1).reshape(b, layout.rows, ph, layout.cols, pw).sum((2, 4))
    if reduce == "mean":
        a = a / (attr.shape[1] * ph * pw)
    return a


def _gaussian_blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(
    images, baseline: Baseline | object, layout: TokenLayout, blur_sigma: float | None = None
):
    """The reference input for integrated gradients, ablation and faithfulness curves.

    Parameters
    ----------
    images : torch.Tensor
        ``(batch, channels, H, W)`` preprocessed images.
    baseline : {"zero", "mean", "blur"} or torch.Tensor
        See the module docstring; a tensor must have the images' shape.
    layout : TokenLayout
        Gives the patch size for the default blur.
    blur_sigma : float, optional
        Gaussian sigma in pixels for ``"blur"`` (default: half the larger patch side).

    Returns
    -------
    torch.Tensor
        ``(batch, channels, H, W)``, same dtype and device as ``images``.
    """
    import torch

    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(images)
        if baseline == "mean":
            return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
        if baseline == "blur":
            sigma = blur_sigma if blur_sigma is not None else max(layout.patch_size) / 2
            if sigma <= 0:
                raise ConfigError(f"blur_sigma {blur_sigma!r} is not positive; pass pixels > 0.")
            return _gaussian_blur(images, float(sigma))
        raise ConfigError(f"baseline {baseline!r} is unknown; use 'zero', 'mean' or 'blur'.")
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    if base.shape != images.shape:
        raise ConfigError(
            f"baseline tensor has shape {tuple(base.shape)}, not the images' "
            f"{tuple(images.shape)}; pass one of the images' shape or 'zero'/'mean'/'blur'."
        )
    return base


def _layer_to_patches(attr, layout: TokenLayout) -> np.ndarray:
    """Patch-embedding attributions ``(B, L, D)`` or ``(B, rows, cols, D)`` to ``(B, rows, cols)``.
    """
    a = np.asarray(attr.detach().double().cpu(), dtype=np.float64)
    if a.ndim == 3 and a.shape[1] == layout.num_patches:
        return a.sum(-1).reshape(-1, layout.rows, layout.cols)
    if a.ndim == 4 and a.shape[1:3] == (layout.rows, layout.cols):
        return a.sum(-1)
    raise ModelError(
        f"model.patch_embed returned shape {a.shape}, not (batch, patches, dim) or "
        "(batch, rows, cols, dim); layer integrated gradients needs a timm patch embedding."
    )


# --------------------------------------------------------------------- attribution
def _captum_maps(model, x, t, layout, method, base, n_steps, internal_batch_size):
    from captum.attr import (
        FeatureAblation,
        IntegratedGradients,
        LayerIntegratedGradients,
        Occlusion,
        Saliency,
    )

    b, c = x.shape[:2]
    ppe = max(1, (internal_batch_size or 64) // b)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=base, target=t, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
        return pixels_to_patches(attr, layout, "sum"), delta
    if method == "layer_integrated_gradients":
        if not hasattr(model, "patch_embed"):
            raise ModelError("the model has no patch_embed; pass a timm ViT for this method.")
        attr, delta = LayerIntegratedGradients(model, model.patch_embed).attribute(
            x, baselines=base, target=t, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
        return _layer_to_patches(attr, layout), delta
    if method == "saliency":
        attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True)
        return pixels_to_patches(attr, layout), None
    if method == "occlusion":
        window = (c, *layout.patch_size)
        attr = Occlusion(model).attribute(
            x, sliding_window_shapes=window, strides=window, baselines=base, target=t,
            perturbations_per_eval=ppe,
        )
        return pixels_to_patches(attr, layout, "mean"), None
    attr = FeatureAblation(model).attribute(
        x, baselines=base, target=t, feature_mask=patch_feature_mask(layout).to(x.device),
        perturbations_per_eval=ppe,
    )
    return pixels_to_patches(attr, layout, "mean"), None


def attribution_maps(
    model,
    images,
    method: Method = "integrated_gradients",
    target: int | Sequence[int] | None = None,
    layout: TokenLayout | None = None,
    baseline: Baseline | object = "zero",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    device: str | None = None,
    blur_sigma: float | None = None,
) -> AttributionMaps:
    """Patch-grid attribution maps of one method, as arrays.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``(batch, classes)``; a timm ViT for the layer and attention
        methods. Evaluated in eval mode (its mode is restored after).
    images : torch.Tensor or numpy.ndarray
        ``(batch, channels, H, W)`` preprocessed images, ``H, W`` covered by the patch grid.
    method : str
        One of :data:`CAPTUM_METHODS` or :data:`ATTENTION_METHODS` (see the module docstring).
    target : int or sequence of int, optional
        Class per image (or one for all); the model's predicted class by default.
    layout : TokenLayout, optional
        Defaults to ``TokenLayout.from_model(model, img_size=(H, W))``.
    baseline : {"zero", "mean", "blur"} or torch.Tensor
        Reference input for integrated gradients and the occlusion/ablation fill value.
    n_steps : int
        Integration steps of the integrated-gradients methods.
    internal_batch_size : int, optional
        Inputs per forward pass: captum's ``internal_batch_size`` for integrated gradients (all
        ``batch * n_steps`` at once when None) and, divided by the batch size, the
        ``perturbations_per_eval`` of occlusion and ablation (64 inputs when None).
    device : str, optional
        Move the model there first (``model.to(device)``, in place); the images follow the
        model's device.
    blur_sigma : float, optional
        Sigma in pixels of the ``"blur"`` baseline.

    Returns
    -------
    AttributionMaps
    """
    import torch

    from ._attn import capture_attention
    from .attention import gradient_rollout, rollout_map

    if method not in CAPTUM_METHODS + ATTENTION_METHODS:
        raise ConfigError(
            f"method {method!r} is unknown; use one of "
            f"{', '.join(CAPTUM_METHODS + ATTENTION_METHODS)}."
        )
    if int(n_steps) < 1:
        raise ConfigError(f"n_steps {n_steps!r} is below 1; pass e.g. 50.")
    x, layout = _prepare(model, images, layout, device)
    was_training = model.training
    model.eval()
    try:
        if method == "rollout":
            with torch.no_grad(), capture_attention(model) as store:
                model(x)
            maps = rollout_map(store, layout)
            return AttributionMaps(method, maps, np.full(len(x), -1, dtype=np.int64))
        with torch.no_grad():
            t = resolve_targets(model(x), target)
        if method == "gradient_rollout":
            maps = gradient_rollout(model, x, t.tolist(), layout)
            delta = None
        else:
            base = make_baseline(x, baseline, layout, blur_sigma)
            maps, delta = _captum_maps(
                model, x, t, layout, method, base, int(n_steps), internal_batch_size
            )
    finally:
        model.train(was_training)
    if delta is not None:
        delta = np.asarray(delta.detach().double().cpu(), dtype=np.float64).reshape(-1)
    return AttributionMaps(method, maps, t.cpu().numpy().astype(np.int64), delta)


def attribute(
    model,
    images,
    method: Method = "integrated_gradients",
    target: int | Sequence[int] | None = None,
    layout: TokenLayout | None = None,
    baseline: Baseline | object = "zero",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    device: str | None = None,
    blur_sigma: float | None = None,
    image_ids: Sequence | None = None,
) -> pd.DataFrame:
    """Patch-grid attribution maps as a tidy frame (captum under the hood).

    Parameters are those of :func:`attribution_maps`, plus ``image_ids`` (``0..batch-1`` by
    default).

    Returns
    -------
    pandas.DataFrame
        One row per (image, patch): ``image_id, method, row, col, value, target, delta``;
        ``delta`` is captum's convergence delta of the image for the integrated-gradients
        methods (repeated on the image's rows) and NaN otherwise; ``target`` the explained class.
    """
    res = attribution_maps(
        model, images, method, target, layout, baseline, n_steps, internal_batch_size, device,
        blur_sigma,
    )
    ids = image_id_array(image_ids, res.maps.shape[0])
    frame = relevance_frame(res.maps, method, ids)
    per_patch = res.maps.shape[1] * res.maps.shape[2]
    frame["target"] = np.repeat(res.target, per_patch)
    delta = res.delta if res.delta is not None else np.full(len(ids), np.nan)
    frame["delta"] = np.repeat(delta, per_patch)
    return frame


from ._faithfulness import (  # noqa: E402  (re-exported; they build on the helpers above)
    FaithfulnessResult,
    deletion_curve,
    faithfulness_curves,
    insertion_curve,
)
from ._sanity import SanityResult, cascading_randomization  # noqa: E402
