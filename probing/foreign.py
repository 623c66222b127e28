"""Key mappings from other codebases' ViT state dicts onto timm's ``VisionTransformer``.

A mapping turns a foreign ``state_dict`` into (a) the keyword arguments of a timm
``VisionTransformer`` with the same computation, (b) a state dict in timm's key names, and
(c) the preprocessing the foreign model expects. A state dict stores no preprocessing, so the
input normalisation it was trained with is a required option (``mean``, ``std``); a wrong guess
would quietly cost accuracy (the MNIST ViT fixture drops from 97.2% to 88.0% with 0.5 / 0.5
instead of its 0.1307 / 0.3081) while probes still look plausible. The mapped model is a stock
timm model, so every hook and analysis works on it unchanged.

Mapping ``"lucidrains"`` (``vit-pytorch``'s ``ViT``)
--------------------------------------------------
=============================================== ==========================================
foreign key                                     timm key
=============================================== ==========================================
``cls_token`` (1, 1, D)                         ``cls_token``
``pos_embedding`` (1, 1 + N, D)                 ``pos_embed`` (covers CLS)
``to_patch_embedding.{i}.weight`` (D, P*P*C)    ``patch_embed.proj.weight`` (D, C, P, P):
                                                input order ``(p1 p2 c)`` -> conv ``[c, p1, p2]``
``to_patch_embedding.{i}.bias``                 ``patch_embed.proj.bias``
``transformer.layers.{l}.0.norm.*``             ``blocks.{l}.norm1.*``
``transformer.layers.{l}.0.fn.to_qkv.weight``   ``blocks.{l}.attn.qkv.weight`` (no bias)
``transformer.layers.{l}.0.fn.to_out.0.*``      ``blocks.{l}.attn.proj.*``
``transformer.layers.{l}.1.norm.*``             ``blocks.{l}.norm2.*``
``transformer.layers.{l}.1.fn.net.0.*``         ``blocks.{l}.mlp.fc1.*``
``transformer.layers.{l}.1.fn.net.3.*``         ``blocks.{l}.mlp.fc2.*``
``mlp_head.0.*`` (LayerNorm)                    ``norm.*``
``mlp_head.1.*`` (Linear)                       ``head.*``
=============================================== ==========================================

The attention head dimension is read from ``to_out`` (inner width / heads), so models whose
inner width differs from the embedding width (e.g. 4 heads of 64 on a width-64 model) map
exactly; the feed-forward activation and LayerNorm eps are not stored in a state dict and
are options (``act="relu"`` or ``"gelu"``, ``eps=1e-5``). The number of heads is an option too
(``heads``), since ``to_qkv`` stores only ``heads * dim_head``. Images are expected scaled to
[0, 1] and then normalised with the required ``mean`` and ``std`` (one value per channel, or one
value for all channels).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from .errors import ConfigError, ModelError
from .preprocessing import per_channel

__all__ = ["FOREIGN_MAPPINGS", "ForeignModel", "map_lucidrains"]


@dataclass
class ForeignModel:
    """A foreign state dict mapped onto timm.

    Attributes
    ----------
    build : callable
        Returns a fresh timm ``VisionTransformer`` (random init) with the mapped architecture.
    state_dict : dict
        Weights in timm's key names.
    data_config : dict
        Preprocessing in timm's data-config keys (may be partial).
    """

    build: Callable[[], nn.Module]
    state_dict: dict[str, torch.Tensor]
    data_config: dict = field(default_factory=dict)


def _require(sd: dict, key: str) -> torch.Tensor:
    if key not in sd:
        raise ModelError(
            f"state dict has no key {key!r}, so it is not a lucidrains ViT; check the file or "
            "pass another mapping."
        )
    return sd[key]


def map_lucidrains(
    state_dict: dict[str, torch.Tensor],
    heads: int | None = None,
    act: str = "relu",
    eps: float = 1e-5,
    in_chans: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
) -> ForeignModel:
    """Map a ``vit-pytorch`` (lucidrains) ``ViT`` state dict onto a timm ``VisionTransformer``.

    Parameters
    ----------
    state_dict : dict
        The foreign weights.
    heads : int, optional
        Number of attention heads; inferred as ``inner_width // 64`` (vit-pytorch's default
        ``dim_head=64``) when omitted.
    act : {"relu", "gelu"}
        Feed-forward activation of the foreign model.
    eps : float
        LayerNorm epsilon of the foreign model (PyTorch's default 1e-5).
    in_chans : int, optional
        Input channels; inferred from the patch projection (one channel when ``P*P*C`` is a
        perfect square ``P*P``).
    img_size : int or (int, int), optional
        Training image size in pixels ``(height, width)``; for a square grid it is inferred
        from the positional table (``sqrt(N) * patch``), otherwise it must be given.
    mean, std : float or tuple of float
        Required: the per-channel input normalisation the foreign model was trained with, on
        images scaled to [0, 1] (one value is used for every channel). None raises ConfigError,
        since a state dict does not record it.

    Returns
    -------
    ForeignModel

    Raises
    ------
    ConfigError
        When ``mean`` or ``std`` is missing or does not fit the number of input channels.
    ModelError
        When the state dict is not a lucidrains ViT or its shapes contradict the options.
    """
    if mean is None or std is None:
        raise ConfigError(
            "a foreign state dict carries no preprocessing, so the mapping needs the input "
            "normalisation the model was trained with: pass mapping_options = {mean, std} "
            "(e.g. mapping_options={'mean': (0.1307,), 'std': (0.3081,)}; CLI: --mapping-option "
            "mean=0.1307 --mapping-option std=0.3081)."
        )
    pos = _require(state_dict, "pos_embedding")
    patch_keys = [k for k in state_dict if re.fullmatch(r"to_patch_embedding\.\d+\.weight", k)]
    if not patch_keys:
        _require(state_dict, "to_patch_embedding.1.weight")
    # the Linear is the last weight of the patch-embedding Sequential (others may be LayerNorms)
    lin_key = max(patch_keys, key=lambda k: (state_dict[k].ndim, int(k.split(".")[1])))
    w_patch = state_dict[lin_key]
    dim, patch_in = w_patch.shape
    layer_ids = [int(m.group(1)) for k in state_dict
                 if (m := re.match(r"transformer\.layers\.(\d+)\.", k))]
    if not layer_ids:
        _require(state_dict, "transformer.layers.0.0.fn.to_qkv.weight")
    n_layers = 1 + max(layer_ids)
    has_cls = "cls_token" in state_dict
    n_patches = pos.shape[1] - (1 if has_cls else 0)
    if in_chans is None:
        in_chans = 1 if math.isqrt(patch_in) ** 2 == patch_in else 3
    patch = math.isqrt(patch_in // in_chans)
    if patch * patch * in_chans != patch_in:
        raise ModelError(
            f"patch projection takes {patch_in} inputs, not P*P*{in_chans}; pass in_chans."
        )
    if img_size is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ModelError(
                f"positional table covers {n_patches} patches, not a square grid; pass "
                "img_size=(height, width) in pixels."
            )
        img_size = (side * patch, side * patch)
    img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if (img_hw[0] // patch) * (img_hw[1] // patch) != n_patches:
        raise ModelError(
            f"img_size {img_hw} gives a grid of {(img_hw[0] // patch) * (img_hw[1] // patch)} "
            f"patches but the positional table has {n_patches}; pass the training image size."
        )
    inner = _require(state_dict, "transformer.layers.0.0.fn.to_out.0.weight").shape[1]
    heads = heads or max(1, inner // 64)
    head_dim = inner // heads
    hidden = _require(state_dict, "transformer.layers.0.1.fn.net.0.weight").shape[0]
    n_classes = _require(state_dict, "mlp_head.1.weight").shape[0]
    act_layer = {"relu": nn.ReLU, "gelu": nn.GELU}.get(act)
    if act_layer is None:
        raise ModelError(f"activation {act!r} is not supported; use 'relu' or 'gelu'.")

    def build() -> nn.Module:
        from timm.layers import Attention
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            img_size=img_hw, patch_size=patch, in_chans=in_chans, num_classes=n_classes,
            embed_dim=dim, depth=n_layers, num_heads=heads, mlp_ratio=hidden / dim,
            qkv_bias=False, class_token=has_cls, global_pool="token" if has_cls else "avg",
            norm_layer=partial(nn.LayerNorm, eps=eps), act_layer=act_layer,
        )
        for block in model.blocks:
            block.attn = Attention(dim, num_heads=heads, attn_head_dim=head_dim, qkv_bias=False)
        return model

    sd = state_dict
    for key in ("mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.bias",
                lin_key.replace("weight", "bias")):
        _require(sd, key)
    out: dict[str, torch.Tensor] = {
        "pos_embed": pos,
        "patch_embed.proj.weight": w_patch.reshape(dim, patch, patch, in_chans)
        .permute(0, 3, 1, 2).contiguous(),
        "patch_embed.proj.bias": sd[lin_key.replace("weight", "bias")],
        "norm.weight": sd["mlp_head.0.weight"],
        "norm.bias": sd["mlp_head.0.bias"],
        "head.weight": sd["mlp_head.1.weight"],
        "head.bias": sd["mlp_head.1.bias"],
    }
    if has_cls:
        out["cls_token"] = sd["cls_token"]
    names = {
        "0.norm": "norm1", "0.fn.to_qkv": "attn.qkv", "0.fn.to_out.0": "attn.proj",
        "1.norm": "norm2", "1.fn.net.0": "mlp.fc1", "1.fn.net.3": "mlp.fc2",
    }
    for layer in range(n_layers):
        for src, dst in names.items():
            for p in ("weight", "bias"):
                key = f"transformer.layers.{layer}.{src}.{p}"
                if key in sd:
                    out[f"blocks.{layer}.{dst}.{p}"] = sd[key]
    config = {
        "input_size": (in_chans, *img_hw),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": per_channel("mapping option", "mean", mean, in_chans),
        "std": per_channel("mapping option", "std", std, in_chans),
    }
    return ForeignModel(build=build, state_dict=out, data_config=config)


#: Known mappings by name, for ``load_model(path, mapping=NAME)``.
FOREIGN_MAPPINGS: dict[str, Callable[..., ForeignModel]] = {"lucidrains": map_lucidrains}
