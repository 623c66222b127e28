"""Attribution maps over the patch grid: captum wrappers and the attention methods.

The attribution methods wrap captum (Kokhlikyan et al. 2020); nothing here re-implements them:

- ``"integrated_gradients"`` (Sundararajan et al. 2017), with captum's convergence delta
  ``sum(attributions) - (F(x) - F(x'))`` per image (completeness).
- ``"saliency"`` (Simonyan et al. 2014): absolute input gradient.
- ``"occlusion"`` (Zeiler & Fergus 2014): captum ``Occlusion`` with a window and stride of one
  patch, so each patch is occluded exactly once.
- ``"feature_ablation"``: captum ``FeatureAblation`` with a patch-grid feature mask
  (:func:`probing.patchgrid.patch_feature_mask`).
- ``"layer_integrated_gradients"``: captum ``LayerIntegratedGradients`` on ``model.patch_embed``
  (the patch projection, before positional encoding), with its convergence delta.
- ``"rollout"`` and ``"gradient_rollout"``: :func:`probing.attention.rollout_map` and
  :func:`probing.attention.gradient_rollout`, so every explanation can be checked the same way.

From pixels to patches: gradient methods (integrated gradients, saliency) are **summed** over
the channels and pixels of each patch (so integrated gradients keep completeness);
perturbation methods (occlusion, feature ablation) give every pixel of a patch the same output
change, and the patch value is that change (the mean over the patch). Layer integrated
gradients are summed over the embedding dimension of each patch token.

Baselines (``baseline=``) are :func:`probing.attribution.inputs.make_baseline`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..attention.rollout import gradient_rollout, rollout_map
from ..errors import ConfigError, ModelError
from ..layout import TokenLayout
from ..lazy import import_without
from ..models import eval_mode
from ..patchgrid import (
    image_id_array,
    layer_to_patches,
    patch_feature_mask,
    pixels_to_patches,
    relevance_frame,
)
from ..targets import given_targets, resolve_targets
from .inputs import Baseline, make_baseline, prepare

__all__ = [
    "ATTENTION_METHODS",
    "CAPTUM_METHODS",
    "AttributionMaps",
    "Method",
    "attribute",
    "attribution_maps",
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
CAPTUM_METHODS: tuple[str, ...] = (
    "integrated_gradients",
    "saliency",
    "occlusion",
    "feature_ablation",
    "layer_integrated_gradients",
)
ATTENTION_METHODS: tuple[str, ...] = ("rollout", "gradient_rollout")


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


# --------------------------------------------------------------------- attribution
def _captum_maps(model, x, t, layout, method, base, n_steps, internal_batch_size):
    # IPython is captum's only for notebooks: not imported here (probing.lazy.import_without)
    attr = import_without("captum.attr", "IPython")
    FeatureAblation, IntegratedGradients, LayerIntegratedGradients, Occlusion, Saliency = (
        attr.FeatureAblation, attr.IntegratedGradients, attr.LayerIntegratedGradients,
        attr.Occlusion, attr.Saliency)

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
        return layer_to_patches(attr, layout), delta
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


def _targets(model, x, target):
    """The class per image: a given target is checked against the model's ``num_classes``
    (timm's attribute) without a forward pass; otherwise (no target, or a model without
    ``num_classes``) one no-grad forward gives the prediction or the class count."""
    import torch

    n_classes = getattr(model, "num_classes", None)
    if target is not None and isinstance(n_classes, int) and n_classes > 0:
        return given_targets(target, len(x), n_classes, x.device)
    with torch.no_grad():
        return resolve_targets(model(x), target)


def attribution_maps(
    model,
    images,
    layout: TokenLayout | None = None,
    method: Method = "integrated_gradients",
    target: int | Sequence[int] | None = None,
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
        ``(batch, channels, H, W)`` preprocessed images, ``H, W`` covered by the patch grid;
        moved to the model's device.
    layout : TokenLayout, optional
        Defaults to ``TokenLayout.from_model(model, img_size=(H, W))``.
    method : str
        One of :data:`CAPTUM_METHODS` or :data:`ATTENTION_METHODS` (see the module docstring).
    target : int or sequence of int, optional
        Class per image (or one for all); the model's predicted class by default.
    baseline : {"zero", "mean", "blur"} or torch.Tensor
        Reference input for integrated gradients and the occlusion/ablation fill value.
    n_steps : int
        Integration steps of the integrated-gradients methods.
    internal_batch_size : int, optional
        Inputs per forward pass: captum's ``internal_batch_size`` for integrated gradients (all
        ``batch * n_steps`` at once when None) and, divided by the batch size, the
        ``perturbations_per_eval`` of occlusion and ablation (64 inputs when None).
    device : str, optional
        Where the model must be: checked, never changed (a device other than the model's raises
        :class:`~probing.errors.ConfigError`; move the model yourself with ``model.to(...)``).
        The images always follow the model's device.
    blur_sigma : float, optional
        Sigma in pixels of the ``"blur"`` baseline.

    Returns
    -------
    AttributionMaps
    """
    import torch

    from ..attention_hooks import capture_attention

    if method not in CAPTUM_METHODS + ATTENTION_METHODS:
        raise ConfigError(
            f"method {method!r} is unknown; use one of "
            f"{', '.join(CAPTUM_METHODS + ATTENTION_METHODS)}."
        )
    if int(n_steps) < 1:
        raise ConfigError(f"n_steps {n_steps!r} is below 1; pass e.g. 50.")
    x, layout = prepare(model, images, layout, device)
    with eval_mode(model):  # the caller's training flags come back as they were
        if method == "rollout":
            with torch.no_grad(), capture_attention(model) as store:
                model(x)
            maps = rollout_map(store, layout)
            return AttributionMaps(method, maps, np.full(len(x), -1, dtype=np.int64))
        t = _targets(model, x, target)
        if method == "gradient_rollout":
            maps = gradient_rollout(model, x, layout, t.tolist())
            delta = None
        else:
            base = make_baseline(x, layout, baseline, blur_sigma)
            maps, delta = _captum_maps(
                model, x, t, layout, method, base, int(n_steps), internal_batch_size
            )
    if delta is not None:
        delta = np.asarray(delta.detach().double().cpu(), dtype=np.float64).reshape(-1)
    return AttributionMaps(method, maps, t.cpu().numpy().astype(np.int64), delta)


def attribute(
    model,
    images,
    layout: TokenLayout | None = None,
    method: Method = "integrated_gradients",
    target: int | Sequence[int] | None = None,
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
        model, images, layout, method, target, baseline, n_steps, internal_batch_size, device,
        blur_sigma,
    )
    ids = image_id_array(image_ids, res.maps.shape[0])
    frame = relevance_frame(res.maps, method, ids)
    per_patch = res.maps.shape[1] * res.maps.shape[2]
    frame["target"] = np.repeat(res.target, per_patch)
    delta = res.delta if res.delta is not None else np.full(len(ids), np.nan)
    frame["delta"] = np.repeat(delta, per_patch)
    return frame

