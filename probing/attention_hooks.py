"""Low-level capture of the attention weights timm attention modules actually apply.

timm's attention modules compute ``attn = softmax(q k^T * scale [+ bias]); attn =
self.attn_drop(attn)`` on their non-fused path. We switch the fused path off on each attention
module for the duration of the capture only, and read the attention from a forward hook on
``attn_drop`` (identity in eval mode), so relative position biases (BEiT, SAM's decomposed
bias, relpos ViTs) and RoPE are already included in what we read. Capture never changes the
logits: hooks only read (with ``keep_grad`` the read tensor is passed on as an exact copy).

What is stored per family (one capture site per block, ``(batch, heads, queries, keys)``):

- plain ``Attention`` / ``EvaAttention`` / BEiT / relpos blocks (``kind="self"``): the
  post-softmax weights, rows sum to 1.
- ``ParallelThingsBlock`` (``kind="parallel"``, e.g. ``vit_small_patch16_18x2_224``): each
  parallel attention is its own site inside the block; they are stored side by side along the
  head axis, **head = branch * num_heads + h** (``AttentionSite.branch_of(head)``). The block
  adds the branches' outputs, so head-mean rollout is the average of the branches and mean
  attention distance is per branch and head.
- ``ParallelScalingBlock`` (``kind="fused"``, e.g. ``vit_pwee_*``): the softmax of the
  block's own normed q/k (its unfused path), rows sum to 1.
- ``DiffAttention`` (``kind="differential"``, e.g. ``vit_dwee_*``): the **effective**
  attention the module applies, ``softmax(q1 k1^T) - λ softmax(q2 k2^T)`` per head (``num_heads``
  heads, not the ``2 * num_heads`` softmaxes), with the module's scalar λ in
  ``store.lambdas[layer]``. Rows sum to ``1 - λ``, and entries may be negative.
- SAM windowed blocks (``kind="windowed"``, ``samvit_*``): the window attention (with its
  decomposed relative position bias) mapped back to patch positions: a full ``N x N`` matrix
  over the ``N`` patches that is zero outside the query's window. When the grid is not a
  multiple of the window, the windows are zero-padded and the weight on padding keys is not
  stored, so those rows sum to less than 1 (``1 -`` mass on padding). SAM's global blocks
  (``kind="global"``) are plain ``N x N``. Memory is ``heads * N^2`` per image and block.
- CaiT: self-attention blocks hold patches only (``N x N``, talking-heads, ``kind="talking"``:
  the weights after ``proj_w``, which mixes heads after the softmax, so rows sum to
  ``sum_h' W[h, h'] + N * b[h]``, not 1); class-attention blocks (``kind="class"``, numbered
  after the self-attention blocks) store the CLS query over CLS + patches, ``1 x (1 + N)`` per
  head, rows sum to 1.
- ConViT GPSA blocks (``kind="gpsa"``): the gated mix ``(1 - σ(g)) softmax(q k^T) + σ(g)
  softmax(pos)``, renormalised, exactly what the module applies; they run before the CLS token
  joins, so they are ``N x N`` over patches (no CLS row); later blocks are ``(1 + N)`` square.
- XCiT: cross-covariance attention mixes channels, not tokens, so there are no token-to-token
  weights: :class:`~probing.errors.ModelError`.

Layers with fewer tokens or fewer queries than the model's last block are embedded into the
full token set by :mod:`probing.attention.inputs` (missing tokens are prefix tokens that join
in front; missing rows are zero) so that rollout and maps are defined on every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ModelError
from .selection import LayerSelection, resolve_blocks

__all__ = ["AttentionSite", "AttentionStore", "attention_modules", "attention_sites",
           "capture_attention"]


@dataclass(frozen=True)
class AttentionSite:
    """Where one block's attention is read.

    Attributes
    ----------
    layer : int
        Block number (1-based; CaiT's class-attention blocks follow its self-attention blocks).
    kind : str
        ``"self"``, ``"parallel"``, ``"fused"``, ``"differential"``, ``"windowed"``,
        ``"global"``, ``"talking"``, ``"class"`` or ``"gpsa"`` (module docstring).
    modules : tuple of torch.nn.Module
        The modules whose ``attn_drop`` is hooked (one per parallel branch).
    block : torch.nn.Module
        The block.
    num_heads : int
        Heads per branch in the stored attention.
    """

    layer: int
    kind: str
    modules: tuple[nn.Module, ...]
    block: nn.Module
    num_heads: int

    @property
    def branches(self) -> int:
        """Number of parallel attentions (1 except for ``ParallelThingsBlock``)."""
        return len(self.modules)

    def branch_of(self, head: int) -> int:
        """The parallel branch of a stored head (``head // num_heads``)."""
        return int(head) // self.num_heads


class AttentionStore(dict):
    """``{layer: attention}`` filled by :func:`capture_attention`, with the sites and λs.

    Attributes
    ----------
    sites : dict of int to AttentionSite
        The capture site of each selected layer.
    lambdas : dict of int to float
        The λ of each differential-attention layer (rows of that layer sum to ``1 - λ``).
    """

    def __init__(self, sites: dict[int, AttentionSite]) -> None:
        super().__init__()
        self.sites = sites
        self.lambdas: dict[int, float] = {}


def _family(model: nn.Module) -> str:
    return type(model).__name__


def _kind(block: nn.Module, attn: nn.Module, class_block: bool) -> str:
    if class_block:
        return "class"
    if hasattr(attn, "lambda_init"):
        return "differential"
    if hasattr(attn, "gating_param"):
        return "gpsa"
    if hasattr(attn, "proj_w"):
        return "talking"
    if isinstance(getattr(block, "window_size", None), int) and hasattr(attn, "use_rel_pos"):
        return "windowed" if block.window_size > 0 else "global"
    return "self"


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """The capture site of each block with token-to-token attention, in depth order.

    Raises
    ------
    ModelError
        For XCiT (cross-covariance attention has no token-to-token weights) and for blocks
        without a timm attention module that has an ``attn_drop`` submodule.
    """
    blocks = list(getattr(model, "blocks", []))
    if blocks and type(getattr(blocks[0], "attn", None)).__name__ == "XCA":
        raise ModelError(
            f"{_family(model)} (XCiT family): XCiT's cross-covariance attention has no "
            "token-to-token weights (it mixes channels), so attention capture, rollout and "
            "attention maps are undefined; extract tokens without attention (attention=False; "
            "captum attributions still work)."
        )
    n_self = len(blocks)
    blocks += list(getattr(model, "blocks_token_only", None) or [])
    sites = []
    for i, block in enumerate(blocks):
        if hasattr(block, "attns"):  # ParallelThingsBlock
            mods = tuple(getattr(b, "attn", None) for b in block.attns)
            kind = "parallel"
        elif hasattr(block, "in_proj") and hasattr(block, "attn_drop"):  # ParallelScalingBlock
            mods, kind = (block,), "fused"
        else:
            attn = getattr(block, "attn", None)
            mods = (attn,)
            kind = "" if attn is None else _kind(block, attn, i >= n_self)
        if any(m is None or not hasattr(m, "attn_drop") for m in mods):
            raise ModelError(
                f"block {i} ({type(block).__name__}) of {_family(model)} has no timm attention "
                "module with 'attn_drop'; attention capture needs a timm ViT."
            )
        heads = int(mods[0].num_heads)
        sites.append(AttentionSite(i + 1, kind, mods, block, heads))
    return sites


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Every hooked attention module, in depth order (parallel branches in branch order)."""
    return [m for s in attention_sites(model) for m in s.modules]


class _Tap(torch.autograd.Function):
    """Identity on the module's own weights ``raw`` whose backward also hands the gradient,
    mapped by ``to_stored``, to the stored (derived) tensor ``stored``: so the stored tensor's
    ``.grad`` is d(output)/d(the attention it holds) while the values the module uses are
    unchanged."""

    @staticmethod
    def forward(ctx, raw, stored, to_stored):  # type: ignore[override]
        ctx.to_stored = to_stored
        return raw.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, ctx.to_stored(grad), None


def _window_map(block: nn.Module, shape: tuple[int, int, int]) -> Callable[[torch.Tensor],
                                                                            torch.Tensor]:
    """Map SAM window attention ``(B * windows * heads, w^2, w^2)`` to ``(B, heads, N, N)``."""
    b, h, w = shape
    ws = int(block.window_size)
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    iy, ix = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    wy, wx = torch.meshgrid(torch.arange(hp // ws), torch.arange(wp // ws), indexing="ij")
    pos = ((wy.reshape(-1, 1) * ws + iy.reshape(1, -1)) * wp
           + wx.reshape(-1, 1) * ws + ix.reshape(1, -1))  # (windows, w^2) padded positions
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    keep = (y * wp + x).reshape(-1)
    rows, cols = pos[:, :, None].expand(-1, -1, ws * ws), pos[:, None, :].expand(-1, ws * ws, -1)

    def to_full(a: torch.Tensor) -> torch.Tensor:
        heads = a.shape[0] // (b * pos.shape[0])
        vals = a.reshape(b, pos.shape[0], heads, ws * ws, ws * ws).transpose(1, 2)
        full = a.new_zeros(b, heads, hp * wp, hp * wp)
        full[:, :, rows.to(a.device), cols.to(a.device)] = vals
        k = keep.to(a.device)
        return full[:, :, k][:, :, :, k]

    return to_full


@contextmanager
def capture_attention(
    model: nn.Module,
    layers: LayerSelection | None = None,
    keep_grad: bool = False,
) -> Iterator[AttentionStore]:
    """Record the attention weights the chosen blocks apply during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT (any family of the module docstring).
    layers : layer selection or LayerLabels, optional
        Blocks to capture, in the forms every ``layers=`` takes
        (:func:`probing.selection.resolve_blocks`): block numbers ``1..depth`` (layer ``k`` is
        the output of block ``k``), negative ints from the end (``-1`` is the last block),
        ``"all"``, or a list of these; all blocks by default. Layer 0, ``"embed"`` and
        ``"norm"`` have no attention: they raise :class:`~probing.errors.LayoutError`.
    keep_grad : bool
        Keep the captured tensors in the autograd graph, so that after ``backward()`` each
        captured tensor's ``.grad`` holds d(output)/d(attention) (also for the derived forms:
        differential, windowed, parallel).

    Yields
    ------
    AttentionStore
        A dict filled on each forward pass: ``{layer: attention}``, each ``(batch, heads,
        queries, keys)``: ``(batch, heads, N, N)`` for self-attention with rows summing to 1,
        the other forms and row sums as in the module docstring. A later forward pass
        overwrites the previous one's entries.

    Raises
    ------
    ModelError
        For models without token-to-token attention (XCiT) or non-timm blocks.

    Notes
    -----
    Fused attention is switched off per module while the context is open and restored after,
    also when the body raises. Hooks are always removed.
    """
    sites = {s.layer: s for s in attention_sites(model)}
    wanted = resolve_blocks(layers, len(sites), what="attention")
    store = AttentionStore({k: sites[k] for k in wanted})
    handles: list = []
    saved: list = []
    grids: dict[int, tuple[int, int, int]] = {}
    pending: dict[int, list] = {}

    def put(layer: int, raw: torch.Tensor, to_stored: Callable, grad_map: Callable,
            slot: slice | None, width: int) -> torch.Tensor | None:
        """Store ``to_stored(raw)`` (into head ``slot`` of a ``width``-head tensor); with
        ``keep_grad`` return the tap through which the stored tensor gets its gradient,
        ``grad_map`` of the gradient of ``raw``."""
        if to_stored is _identity and slot is None and keep_grad and raw.requires_grad:
            raw.retain_grad()  # the module's own tensor: no copy, no tap
            store[layer] = raw
            return None
        part = to_stored(raw.detach())
        if slot is not None:
            if slot.start == 0:
                full = part.new_zeros(part.shape[0], width, *part.shape[2:])
                pending[layer] = [full]
            full = pending[layer][0]
            with torch.no_grad():  # the full tensor may already be a leaf that requires grad
                full[:, slot] = part
            part = full
        grad = keep_grad and raw.requires_grad
        if not grad:
            store[layer] = part
            return None
        if slot is None or slot.start == 0:
            part.requires_grad_(True)
            store[layer] = part
        target = store[layer]

        def place(g: torch.Tensor) -> torch.Tensor:
            if slot is None:
                return grad_map(g)
            out = g.new_zeros(target.shape)
            out[:, slot] = grad_map(g)
            return out

        return _Tap.apply(raw, target, place)

    def make_hook(site: AttentionSite, branch: int) -> Callable:
        mod = site.modules[branch]
        width = site.num_heads * site.branches
        slot = (slice(branch * site.num_heads, (branch + 1) * site.num_heads)
                if site.branches > 1 else None)

        def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor | None:
            to_stored: Callable = _identity
            if site.kind == "windowed":
                to_stored = _window_map(site.block, grids[site.layer])
            elif site.kind == "global":
                b = grids[site.layer][0]
                to_stored = lambda a, b=b: a.reshape(b, -1, *a.shape[-2:])  # noqa: E731
            grad_map = to_stored  # a linear placement: the gradient is placed the same way
            if site.kind == "differential":
                lam = mod._compute_lambda().type_as(out).detach()
                store.lambdas[site.layer] = float(lam)
                to_stored, grad_map = _differential(int(mod.num_heads), lam)
            return put(site.layer, out, to_stored, grad_map, slot, width)

        return hook

    try:
        for layer in wanted:
            site = sites[layer]
            if site.kind in ("windowed", "global"):
                handles.append(site.block.register_forward_pre_hook(
                    lambda _m, args, _l=layer: grids.__setitem__(_l, tuple(args[0].shape[:3]))))
            for branch, mod in enumerate(site.modules):
                saved.append((mod, getattr(mod, "fused_attn", None)))
                if hasattr(mod, "fused_attn"):
                    mod.fused_attn = False
                handles.append(mod.attn_drop.register_forward_hook(make_hook(site, branch)))
        yield store
    finally:
        for h in handles:
            h.remove()
        for mod, fused in saved:
            if fused is not None:
                mod.fused_attn = fused


def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


def _differential(heads: int, lam: torch.Tensor) -> tuple[Callable, Callable]:
    """Maps of DiffAttention's ``(B, 2H, N, N)`` softmaxes to the stored ``(B, H, N, N)``.

    Forward: the effective ``softmax1 - λ softmax2``. Gradient: d(out)/d(effective) is the
    gradient of the first softmax (the effective weights enter the output as the first
    softmax does).
    """
    def pairs(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(a.shape[0], heads, 2, *a.shape[-2:])

    return (lambda a: pairs(a)[:, :, 0] - lam * pairs(a)[:, :, 1]), (lambda g: pairs(g)[:, :, 0])
