"""Capture of token vectors and attention weights from a timm ViT during forward passes.

Capture sites and their stored layer labels (see :mod:`probing.frames`)
-----------------------------------------------------------------------
- ``"embed"`` (:data:`~probing.selection.LAYER_EMBED`, -1): output of ``patch_embed``, the patch
  projection before the positional encoding (patch tokens only);
- ``0``: the input to the first block (after positional encoding, prefix tokens prepended,
  patch dropout and ``norm_pre``), read by a forward pre-hook on ``blocks[0]``;
- ``k`` (1..depth): the output of block ``k``;
- ``"norm"`` (:data:`~probing.selection.LAYER_NORM`, -2): the output of the final ``norm``. In
  timm models that average-pool (``global_pool="avg"``) ``norm`` is an identity and the
  normalisation (``fc_norm``) comes after pooling, so this site equals the last block's output.

Attention weights are the post-softmax ``(batch, heads, N, N)`` matrices of the chosen blocks,
labelled by block number ``k`` (1-based). Fused attention is switched off only while attention is
captured. Hooks are removed when the context exits, also on exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from .attention_hooks import attention_sites, capture_attention
from .errors import LayoutError, ModelError
from .layout import TokenLayout
from .selection import (
    LAYER_EMBED,
    LAYER_NORM,
    LayerLabels,
    LayerSelection,
    resolve_blocks,
    resolve_kinds,
    resolve_layers,
)

__all__ = ["Capture", "capture"]

LayerSpec = LayerSelection
PooledMode = Literal["mean", "model"]


@dataclass
class Capture:
    """What one forward pass captured (filled inside :func:`capture`).

    Attributes
    ----------
    tokens : dict of int to torch.Tensor
        ``{layer: (batch, n_selected, D)}`` detached tensors of the selected tokens.
    token_index : dict of int to numpy.ndarray
        ``{layer: (n_selected,)}`` sequence positions of the captured tokens (-1 = pooled vector,
        appended last when pooling was asked for).
    attention : dict of int to torch.Tensor
        ``{block: (batch, heads, N, N)}`` post-softmax attention (when asked for).
    sink : callable, optional
        When set, ``sink(layer, tensor)`` receives each layer's ``(batch, n_selected, D)``
        tensor inside the hook, as its block finishes, instead of ``tokens`` keeping it until
        the pass ends (so the block output's memory is free for the next block).
    """

    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    token_index: dict[int, np.ndarray] = field(default_factory=dict)
    attention: dict[int, torch.Tensor] = field(default_factory=dict)
    sink: Callable[[int, torch.Tensor], None] | None = None

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
        """Run ``model(images)``; returns the output, or None when capture stopped it early."""
        try:
            return model(images)
        except _StopForward:
            return None

    def clear(self) -> None:
        """Drop captured tensors (before the next batch)."""
        self.tokens.clear()
        self.attention.clear()


def _site_layout(layout: TokenLayout, layer: int) -> TokenLayout:
    """The tokens the capture site of stored ``layer`` holds (patches only at ``embed`` and in
    blocks before a late-joining CLS, see :meth:`TokenLayout.block_layout`)."""
    if layer == LAYER_EMBED:
        return layout.patch_layout()
    if layer == LAYER_NORM:
        return layout
    return layout.block_layout(layer)


def _positions(layout: TokenLayout, kinds: Sequence[str], layer: int) -> np.ndarray:
    """Full-layout positions of the ``kinds`` tokens that the site of ``layer`` holds."""
    site = _site_layout(layout, layer)
    wanted = [k for k in kinds if k != "pooled" and k in site.kinds]
    offset = layout.num_prefix_tokens - site.num_prefix_tokens
    pos = [site.positions(k) + offset for k in wanted]
    return np.sort(np.concatenate(pos)) if pos else np.empty(0, dtype=np.int64)


@contextmanager
def capture(
    model: nn.Module,
    layout: TokenLayout | None = None,
    layers: LayerSpec = "all",
    kinds: str | Sequence[str] = ("cls", "patch"),
    pooled: PooledMode | None = None,
    attention: bool | LayerSpec = False,
    stop_early: bool = False,
) -> Iterator[Capture]:
    """Record token vectors (and attention) of a timm ViT during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT (or ``LoadedModel.model``).
    layout : TokenLayout, optional
        The model's layout; derived from the model when omitted.
    layers : int, str or sequence
        Layers to capture, a selection or :class:`~probing.selection.LayerLabels` (see
        :func:`probing.selection.resolve_layers`).
    kinds : str or sequence of str
        Token kinds to capture: ``cls``, ``reg``, ``dist``, ``patch``. A site captures the
        kinds it holds: ``embed`` and, in models whose CLS joins late (CaiT, XCiT, ConViT:
        :attr:`TokenLayout.prefix_joins`), the blocks before it hold patch tokens only, so
        they have no prefix rows; ``token_index`` keeps the full layout's positions. Kinds that
        no selected site holds are a LayoutError.
    pooled : {"mean", "model"}, optional
        Also capture one pooled vector per image and layer: ``"mean"`` = mean over patch tokens,
        ``"model"`` = the model's own ``pool`` (timm ``global_pool``) applied to that layer's
        tokens. Not available at the ``embed`` site for ``"model"``.
    attention : bool or layer selection
        Capture post-softmax attention of all blocks (True) or the chosen blocks (a layer
        selection, :func:`probing.selection.resolve_blocks`: only block outputs have
        attention; layer 0, ``"embed"`` and ``"norm"`` are refused). Blocks are numbered as
        :func:`~probing.attention_hooks.attention_sites` and
        :meth:`TokenLayout.block_layout` number them: CaiT's class-attention blocks follow
        ``model.blocks`` as ``depth + 1 ...`` and ``-1`` is the last of them.
    stop_early : bool
        Stop the forward pass after the last captured site, so that capturing early layers
        costs only those layers. Run the model with :meth:`Capture.forward` then (a plain
        ``model(x)`` would see the stop as an exception); there are no logits.

    Yields
    ------
    Capture
        Filled by every forward pass (a later pass overwrites an earlier one's entries).
    """
    layout = layout or TokenLayout.from_model(model)
    depth = len(model.blocks)
    labels = resolve_layers(layers, depth)
    att_labels = _attention_blocks(model, attention)
    kinds = resolve_kinds(kinds, layout)
    if pooled is None and "pooled" in kinds:
        pooled = "mean"
    if pooled not in (None, "mean", "model"):
        raise LayoutError(f"pooled={pooled!r} is unknown; use 'mean', 'model' or None.")
    if pooled == "model" and not hasattr(model, "pool"):
        raise ModelError(f"{type(model).__name__} has no pool(); use pooled='mean'.")
    result = Capture()

    def grab(layer: int, x: torch.Tensor | tuple) -> None:
        if isinstance(x, (tuple, list)):  # XCiT's patch_embed returns (tokens, (Hp, Wp))
            x = x[0]
        if x.ndim == 4:  # NHWC patch grid (dynamic image size, SAM)
            x = x.flatten(1, 2)
        idx = result.token_index[layer]
        has_pool = idx.size > 0 and idx[-1] == -1
        n_tok = idx.size - (1 if has_pool else 0)
        sel = idx[:n_tok]
        site = _site_layout(layout, layer)
        offset = layout.num_prefix_tokens - site.num_prefix_tokens
        expected = site.n_tokens
        if x.shape[1] != expected:
            raise LayoutError(
                f"the model produced {x.shape[1]} tokens at layer {layer} but the layout has "
                f"{expected}; for inputs of another size pass TokenLayout.from_model(model, "
                "img_size=(H, W))."
            )
        if n_tok == x.shape[1] and offset == 0:
            parts = [x]
        elif n_tok:
            parts = [x[:, _as_index(sel - offset)]]
        else:
            parts = []
        if has_pool and pooled == "mean":
            patches = x[:, site.patch_slice]
            parts.append(patches.mean(dim=1, keepdim=True))
        elif has_pool:
            parts.append(model.pool(x).unsqueeze(1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if result.sink is not None:
            result.sink(layer, out.detach())
        else:
            result.tokens[layer] = out.detach()

    for layer in labels:
        idx = _positions(layout, kinds, layer)
        if pooled == "model" and layer != LAYER_EMBED and \
                _site_layout(layout, layer).prefix != layout.prefix:
            raise LayoutError(
                f"pooled='model' at layer {layer} would apply the model's head pooling to a "
                f"block that holds no prefix tokens (they join at block {layout.prefix_joins}); "
                "use pooled='mean' or select later layers."
            )
        if pooled and not (pooled == "model" and layer == LAYER_EMBED):
            idx = np.append(idx, -1)
        result.token_index[layer] = idx
    if layout.prefix_joins > 1 and not any(idx.size for idx in result.token_index.values()):
        raise LayoutError(
            f"none of the selected layers {list(labels)} holds tokens of kinds {list(kinds)} "
            f"(the prefix tokens join at block {layout.prefix_joins}, blocks before it hold "
            "patch tokens only); select later layers (or 'norm') or ask for 'patch'."
        )

    with ExitStack() as stack:
        handles: list = []
        # registered before any hook, so every hook goes even when a later site fails
        stack.callback(lambda: [h.remove() for h in handles])
        blocks = model.blocks
        for layer in labels:
            if result.token_index[layer].size == 0:
                continue
            if layer == 0:
                handles.append(blocks[0].register_forward_pre_hook(
                    lambda _m, args, _l=0: grab(_l, args[0])))
            elif layer == LAYER_EMBED:
                handles.append(model.patch_embed.register_forward_hook(
                    lambda _m, _a, out, _l=layer: grab(_l, out)))
            elif layer == LAYER_NORM:
                norm = getattr(model, "norm", None)
                if norm is None:
                    raise ModelError(
                        f"{type(model).__name__} has no final norm to capture; drop 'norm' "
                        "from layers."
                    )
                handles.append(norm.register_forward_hook(
                    lambda _m, _a, out, _l=layer: grab(_l, out)))
            else:
                handles.append(blocks[layer - 1].register_forward_hook(
                    lambda _m, _a, out, _l=layer: grab(_l, out)))
        stop_at = _stop_site(labels, attention, att_labels, depth) if stop_early else None
        if stop_at is not None:
            def stop(*_args: object) -> None:
                raise _StopForward

            if stop_at == 0:  # right after the pre-hook that reads the first block's input
                handles.append(blocks[0].register_forward_pre_hook(stop))
            else:
                site = model.patch_embed if stop_at == LAYER_EMBED else blocks[stop_at - 1]
                handles.append(site.register_forward_hook(stop))
        if attention is not False:
            result.attention = stack.enter_context(capture_attention(model, att_labels))
        yield result


def _attention_blocks(model: nn.Module, attention: bool | LayerSpec) -> LayerLabels | None:
    """The blocks a selection ``attention`` names (None for all or none), numbered like
    :func:`attention_sites`: ``1..depth`` for ``model.blocks``, then CaiT's class-attention
    blocks.

    Raises
    ------
    ModelError
        For a model without token-to-token attention (XCiT), when attention is asked for.
    LayoutError
        For a block number past the last attention block.
    """
    if attention is False:
        return None
    n_att = len(attention_sites(model))  # refuses XCiT before any forward pass
    if attention is True:
        return None
    items = [attention] if isinstance(attention, (int, np.integer, str)) else list(attention)
    bad = [int(k) for k in items if isinstance(k, (int, np.integer)) and not
           -n_att <= int(k) <= n_att]
    if bad:
        depth = len(model.blocks)
        blocks = (f"{depth} self-attention blocks 1..{depth} and class-attention blocks "
                  f"{depth + 1}..{n_att}" if n_att > depth else f"{n_att} attention blocks")
        raise LayoutError(
            f"attention layers {bad} are out of range: {type(model).__name__} has {blocks}; "
            f"pass block numbers 1..{n_att}, negative ints from the end (-1 = block {n_att}) "
            "or 'all'."
        )
    return resolve_blocks(attention, n_att)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once everything asked for is captured."""


def _stop_site(labels: LayerLabels, attention: bool | LayerSpec,
               att_labels: LayerLabels | None, depth: int) -> int | None:
    """Block number (or LAYER_EMBED) after which nothing more is needed, or None."""
    if LAYER_NORM in labels or attention is True:
        return None
    last = max(labels)
    if att_labels is not None:
        last = max([last, *att_labels])
    if last == LAYER_EMBED:
        return LAYER_EMBED
    return last if 0 <= last < depth else None


def _as_index(sel: np.ndarray) -> torch.Tensor | slice:
    if sel.size and np.all(np.diff(sel) == 1):
        return slice(int(sel[0]), int(sel[-1]) + 1)
    return torch.from_numpy(sel)
