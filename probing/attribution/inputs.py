"""What every attribution method, faithfulness curve and sanity check starts from.

The images, checked against the layout and moved to the model's device (:func:`prepare`), and
the reference input (:func:`make_baseline`).

Baselines (``baseline=``), in the model's input space (after preprocessing): ``"zero"`` (all
zeros, i.e. the normalisation mean colour for mean/std-normalised inputs), ``"mean"`` (each
image's per-channel mean), ``"blur"`` (the image under a Gaussian blur, sigma = half the larger
patch side in pixels unless ``blur_sigma`` is given), or a tensor of the images' shape.
"""

from __future__ import annotations

from typing import Literal

from ..attention.inputs import check_layout_arg
from ..errors import ConfigError, LayoutError
from ..layout import TokenLayout
from ..models import check_device, module_device

__all__ = ["Baseline", "make_baseline", "prepare"]

Baseline = Literal["zero", "mean", "blur"]


def prepare(model, images, layout: TokenLayout | None, device):
    """Images as a float tensor on the model's device, and the layout checked against them.

    Parameters
    ----------
    model : torch.nn.Module
        Left where it is: a ``device`` other than the model's own is refused (move the model
        yourself with ``model.to(...)``).
    images : torch.Tensor or numpy.ndarray
        ``(batch, channels, H, W)`` preprocessed images.
    layout : TokenLayout, optional
        Defaults to ``TokenLayout.from_model(model, img_size=(H, W))``.
    device : str, optional
        Where the model must be (checked, never changed).

    Returns
    -------
    (torch.Tensor, TokenLayout)
        The ``(batch, channels, H, W)`` float32 images on the model's device, and the layout.

    Raises
    ------
    ConfigError
        When the images are not 4-D, ``layout`` is not a TokenLayout (an argument in the old
        position) or ``device`` is not the model's.
    LayoutError
        When the layout's grid does not cover ``(H, W)`` pixels.
    """
    import torch

    check_layout_arg(layout, required=False, where="third")
    if device is not None:
        check_device(model, device)  # never moves the caller's model
    x = torch.as_tensor(images, dtype=torch.float32).to(module_device(model, "cpu"))
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
    images, layout: TokenLayout, baseline: Baseline | object, blur_sigma: float | None = None
):
    """The reference input for integrated gradients, ablation and faithfulness curves.

    Parameters
    ----------
    images : torch.Tensor
        ``(batch, channels, H, W)`` preprocessed images.
    layout : TokenLayout
        Gives the patch size for the default blur.
    baseline : {"zero", "mean", "blur"} or torch.Tensor
        See the module docstring; a tensor must have the images' shape.
    blur_sigma : float, optional
        Gaussian sigma in pixels for ``"blur"`` (default: half the larger patch side).

    Returns
    -------
    torch.Tensor
        ``(batch, channels, H, W)``, same dtype and device as ``images``.
    """
    import torch

    check_layout_arg(layout)
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
