"""Low-level capture of post-softmax attention weights from timm attention modules.

timm's attention modules (``Attention``, ``EvaAttention``, ``RelPosAttention``, ...) compute
``attn = softmax(q k^T * scale [+ bias]); attn = self.attn_drop(attn)`` on their non-fused path.
We switch the fused path off on each attention module for the duration of the capture only, and
read the attention from a forward hook on ``attn_drop`` (identity in eval mode), so relative
position biases and RoPE are already included in what we read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import ModelError
from .selection import LayerSelection, resolve_blocks

__all__ = ["attention_modules", "capture_attention"]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of each block, in depth order.

    Raises
    ------
    ModelError
        When a block has no timm-style attention module with an ``attn_drop`` submodule.
    """
    mods = []
    for i, block in enumerate(getattr(model, "blocks", [])):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "attn_drop"):
            raise ModelError(
                f"block {i} of {type(model).__name__} has no timm attention module with "
                "'attn_drop'; attention capture needs a timm ViT."
            )
        mods.append(attn)
    return mods


@contextmanager
def capture_attention(
    model: nn.Module,
    layers: LayerSelection | None = None,
    keep_grad: bool = False,
) -> Iterator[dict[int, torch.Tensor]]:
    """Record post-softmax attention of the chosen blocks during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT.
    layers : layer selection or LayerLabels, optional
        Blocks to capture, in the forms every ``layers=`` takes
        (:func:`probing.selection.resolve_blocks`): block numbers ``1..depth`` (layer ``k`` is
        the output of block ``k``, 0-based ``model.blocks[k - 1]``), negative ints from the end
        (``-1`` is the last block), ``"all"``, or a list of these; all blocks by default.
        Layer 0, ``"embed"`` and ``"norm"`` have no attention: they raise
        :class:`~probing.errors.LayoutError`.
    keep_grad : bool
        Keep the captured tensors in the autograd graph and retain their gradients, so that after
        ``backward()`` each captured tensor's ``.grad`` holds d(output)/d(attention).

    Yields
    ------
    dict of int to torch.Tensor
        Filled on each forward pass: ``{layer: attention}``, each ``(batch, heads, N, N)`` with rows
        (queries) summing to 1. A later forward pass overwrites the previous one's entries.

    Notes
    -----
    Fused attention is switched off per module while the context is open and restored after,
    also when the body raises. Hooks are always removed.
    """
    mods = attention_modules(model)
    wanted = resolve_blocks(layers, len(mods), what="attention")
    store: dict[int, torch.Tensor] = {}
    handles = []
    saved = []

    def make_hook(layer: int):
        def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            if keep_grad and out.requires_grad:
                out.retain_grad()
                store[layer] = out
            else:
                store[layer] = out.detach()

        return hook

    try:
        for layer in wanted:
            attn = mods[layer - 1]
            saved.append((attn, getattr(attn, "fused_attn", None)))
            if hasattr(attn, "fused_attn"):
                attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(make_hook(layer)))
        yield store
    finally:
        for h in handles:
            h.remove()
        for attn, fused in saved:
            if fused is not None:
                attn.fused_attn = fused
