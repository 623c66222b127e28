"""Head importance by ablation: what the logits lose when one head (or a layer's attention) is off.

Method: Michel, Levy & Neubig (2019), "Are Sixteen Heads Really Better than One?" (NeurIPS):
a head is masked out and the drop of the model's score is its importance. Both ablation values
of the later literature are offered:

- ``"zero"``: the head's output is replaced by 0 (Michel et al.'s mask ``xi_h = 0``);
- ``"mean"``: the head's output is replaced by its mean over the images given, per token
  position (mean ablation, e.g. Wang et al. 2023), so the ablated model sees a typical, not an
  out-of-distribution, value.

Where: a forward pre-hook on the module that receives the concatenated head outputs
``(B, N, H * head_dim)`` (head ``h`` = channels ``h * head_dim .. (h + 1) * head_dim - 1``):
the attention's ``proj`` in timm's ``Attention`` (or its ``norm`` when timm's ``scale_norm``
puts a norm before ``proj``). Ablating every head of a block removes that block's attention
output (``proj``'s bias stays, as the head count goes to zero in Michel et al.).

Cost: one forward pass per ablation from the ablated block on (the block's intact input is
computed once; a block's ablations are stacked into batches of about ``batch_size`` rows).

Scores, per image and then averaged with a t-interval over images: ``logit_drop`` = target
logit of the intact model - target logit of the ablated model (positive = the head helped);
``accuracy_drop`` = intact top-1 accuracy - ablated accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..models import eval_mode
from ..progress import progress_bar
from ..selection import LayerSelection, resolve_blocks
from ..stats import t_interval
from ..targets import resolve_targets

__all__ = ["ABLATION_COLUMNS", "ALL_HEADS", "AblationMode", "ablate_heads", "head_ablation",
           "head_means", "head_sites"]

AblationMode = Literal["zero", "mean"]
#: The ``head`` value of rows that ablate every head of a block (the whole attention).
ALL_HEADS = -1
#: Columns of the frame :func:`head_ablation` returns.
ABLATION_COLUMNS = ("layer", "head", "mode", "metric", "value", "ci_low", "ci_high", "n")


def head_sites(model: nn.Module) -> dict[int, tuple[nn.Module, int, int]]:
    """Per block (1-based), the module whose input is the concatenated head outputs.

    Returns
    -------
    dict of int to (torch.nn.Module, int, int)
        ``{block: (module, num_heads, head_dim)}``.

    Raises
    ------
    ModelError
        When a block has no timm-style attention (``attn.num_heads`` and a linear
        ``attn.proj`` over ``num_heads * head_dim`` channels).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ModelError(f"{type(model).__name__} has no blocks; head ablation needs a timm ViT.")
    sites = {}
    for i, block in enumerate(blocks, start=1):
        attn = getattr(block, "attn", None)
        heads = getattr(attn, "num_heads", None)
        proj = getattr(attn, "proj", None)
        if not isinstance(heads, int) or not isinstance(proj, nn.Linear) \
                or proj.in_features % heads:
            raise ModelError(
                f"block {i} of {type(model).__name__} has no timm-style attention (attn.num_heads "
                "and a linear attn.proj over the concatenated heads), so its heads cannot be "
                "ablated; use a timm VisionTransformer."
            )
        norm = getattr(attn, "norm", None)
        site = norm if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) else proj
        sites[i] = (site, heads, proj.in_features // heads)
    return sites


@contextmanager
def ablate_heads(model: nn.Module, heads: Mapping[int, Sequence[int]],
                 mode: AblationMode = "zero",
                 means: Mapping[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Ablate heads while inside (hooks removed on exit, also on errors).

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT.
    heads : mapping of int to sequence of int
        ``{block (1-based): [head, ...]}`` heads to ablate.
    mode : {"zero", "mean"}
        The ablation value (module docstring).
    means : mapping of int to torch.Tensor, optional
        ``{block: (N, H * head_dim)}`` means from :func:`head_means`; needed for ``"mean"``.
    """
    if mode not in ("zero", "mean"):
        raise ConfigError(f"ablation mode {mode!r} is unknown; use 'zero' or 'mean'.")
    sites = head_sites(model)
    handles = []
    try:
        for block, chosen in heads.items():
            if block not in sites:
                raise ConfigError(f"block {block} does not exist; pass blocks 1..{len(sites)}.")
            module, n_heads, dim = sites[block]
            bad = [h for h in chosen if not 0 <= h < n_heads]
            if bad:
                raise ConfigError(f"heads {bad} of block {block} do not exist; pass heads "
                                  f"0..{n_heads - 1}.")
            if mode == "mean" and (means is None or block not in means):
                raise ConfigError(f"mean ablation of block {block} needs its head means; pass "
                                  "means=head_means(model, images).")
            channels = _channels(chosen, dim)
            value = means[block] if mode == "mean" else None

            def hook(_m, args, _c=channels, _v=value):
                x = args[0].clone()
                x[..., _c] = 0.0 if _v is None else _v[..., _c].to(x)
                return (x, *args[1:])

            handles.append(module.register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _channels(heads: Sequence[int], dim: int) -> torch.Tensor:
    """Channels of ``heads`` in the concatenated head outputs."""
    return torch.as_tensor(np.concatenate([np.arange(h * dim, (h + 1) * dim) for h in heads]))


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, images.shape[0], batch_size):
        yield images[i:i + batch_size]


def _logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    param = next(model.parameters())
    return torch.cat([model(b.to(device=param.device, dtype=param.dtype)).float().cpu()
                      for b in _batches(images, batch_size)])


def head_means(model: nn.Module, images: torch.Tensor, batch_size: int = 64
               ) -> dict[int, torch.Tensor]:
    """Mean over images of every block's concatenated head outputs, per token position.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT.
    images : torch.Tensor
        ``(B, C, H, W)`` preprocessed images.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    dict of int to torch.Tensor
        ``{block (1-based): (N, H * head_dim)}`` float32.
    """
    sums: dict[int, torch.Tensor] = {}
    handles = []

    def add(block: int, x: torch.Tensor) -> None:
        s = x.detach().float().sum(dim=0).cpu()
        sums[block] = s if block not in sums else sums[block] + s

    try:
        for block, (module, _, _) in head_sites(model).items():
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, _b=block: add(_b, args[0])))
        with torch.no_grad(), eval_mode(model):
            _logits(model, images, batch_size)
    finally:
        for h in handles:
            h.remove()
    return {b: s / images.shape[0] for b, s in sums.items()}


def _rows(block: int, head: int, mode: str, drops: dict[str, np.ndarray]) -> list[dict]:
    out = []
    for metric, values in drops.items():
        mean, low, high = t_interval(values)
        out.append({"layer": block, "head": head, "mode": mode, "metric": metric, "value": mean,
                    "ci_low": low, "ci_high": high, "n": int(values.size)})
    return out


def head_ablation(model: nn.Module, images: torch.Tensor,
                  target: Sequence[int] | np.ndarray | None = None,
                  layers: LayerSelection = "all",
                  modes: Sequence[AblationMode] = ("zero", "mean"),
                  whole_layer: bool = True, batch_size: int = 64,
                  progress: bool | None = None) -> pd.DataFrame:
    """Importance of every head (and every block's attention) by zero and mean ablation.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT (run in eval mode; its flags are restored).
    images : torch.Tensor
        ``(B, C, H, W)`` preprocessed images; mean ablation averages over these.
    target : sequence of int, optional
        ``(B,)`` class of each image (None: the intact model's top-1, so its accuracy is 1).
    layers : layer selection
        Blocks whose heads are ablated (``1..depth``; :func:`probing.selection.resolve_blocks`).
    modes : sequence of {"zero", "mean"}
        Ablation values.
    whole_layer : bool
        Also ablate all heads of each block at once (rows with ``head`` = :data:`ALL_HEADS`).
    batch_size : int
        Images per forward pass.
    progress : bool or None
        Progress bar over ablations (None: only on a terminal).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ABLATION_COLUMNS`: one row per (block, head, mode, metric), ``metric``
        ``logit_drop`` or ``accuracy_drop`` (module docstring), mean over images with its 95%
        t-interval, plus ``layer=0, head=ALL_HEADS, mode="none"`` rows holding the intact
        model's ``target_logit`` and ``accuracy``.
    """
    modes = list(dict.fromkeys(modes))
    for mode in modes:
        if mode not in ("zero", "mean"):
            raise ConfigError(f"ablation mode {mode!r} is unknown; use 'zero' or 'mean'.")
    sites = head_sites(model)
    blocks = resolve_blocks(layers, len(sites))
    with torch.no_grad(), eval_mode(model):
        base = _logits(model, images, batch_size)
        t = resolve_targets(base, None if target is None else list(np.asarray(target)))
        rows = np.arange(base.shape[0])
        base_logit = base[rows, t].numpy().astype(np.float64)
        base_ok = (base.argmax(1) == t).numpy().astype(np.float64)
        records = _rows(0, ALL_HEADS, "none", {"target_logit": base_logit, "accuracy": base_ok})
        means = head_means(model, images, batch_size) if "mean" in modes else None
        tail = _Tail(model, images, base, batch_size)
        jobs = [(b, h, mode) for b in blocks for mode in modes
                for h in [*range(sites[b][1]), *([ALL_HEADS] if whole_layer else [])]]
        done: dict[tuple, torch.Tensor] = {}
        for b, h, mode in progress_bar(jobs, "head ablation", progress=progress, unit="head"):
            if (b, h, mode) not in done:  # every ablation of block b in one batched pass
                mine = [j for j in jobs if j[0] == b]
                variants = [(list(range(sites[b][1])) if jh == ALL_HEADS else [jh], jm)
                            for _, jh, jm in mine]
                done = dict(zip(mine, tail.ablated(b, variants, sites[b], means)))
            z = done[(b, h, mode)]
            ok = (z.argmax(1) == t).numpy().astype(np.float64)
            records += _rows(b, h, mode, {
                "logit_drop": base_logit - z[rows, t].numpy().astype(np.float64),
                "accuracy_drop": base_ok - ok})
    return pd.DataFrame.from_records(records, columns=list(ABLATION_COLUMNS))


class _Tail:
    """Logits of the images from block ``b`` on, reusing the (unablated) input of block ``b``:
    ``forward_head(norm(blocks[b-1:](x_b)))``, with all ablations of block ``b`` stacked into
    the batch (about ``batch_size`` rows per pass). Used only when that recomputes the intact
    model's logits (checked once), else every ablation is a full forward pass."""

    def __init__(self, model: nn.Module, images: torch.Tensor, base: torch.Tensor,
                 batch_size: int) -> None:
        self.model, self.images, self.batch_size = model, images, batch_size
        self.block, self.inputs = 0, None
        try:
            self.exact = torch.allclose(self._run(1, self._inputs(1)), base, rtol=1e-4,
                                        atol=1e-4)
        except (RuntimeError, TypeError, AttributeError, IndexError):
            self.exact = False  # a model whose forward is not blocks -> norm -> forward_head

    def _inputs(self, block: int) -> torch.Tensor:
        """``(B, N, D)`` input of block ``block`` (1-based), cached for the last block asked."""
        if self.block != block:
            got = []

            def keep(_m, args):
                got.append(args[0].detach())
                raise _Stop

            handle = self.model.blocks[block - 1].register_forward_pre_hook(keep)
            param = next(self.model.parameters())
            try:
                for batch in _batches(self.images, self.batch_size):
                    try:
                        self.model(batch.to(device=param.device, dtype=param.dtype))
                    except _Stop:
                        pass
            finally:
                handle.remove()
            self.block, self.inputs = block, torch.cat(got)
        return self.inputs

    def _run(self, block: int, x: torch.Tensor) -> torch.Tensor:
        for blk in self.model.blocks[block - 1:]:
            x = blk(x)
        return self.model.forward_head(self.model.norm(x)).float().cpu()

    def ablated(self, block: int, variants: list[tuple[list[int], str]],
                site: tuple[nn.Module, int, int], means: Mapping[int, torch.Tensor] | None
                ) -> list[torch.Tensor]:
        """``(B, n_classes)`` logits of each ``(heads, mode)`` ablation of block ``block``."""
        if not self.exact:
            out = []
            for chosen, mode in variants:
                with ablate_heads(self.model, {block: chosen}, mode, means):
                    out.append(_logits(self.model, self.images, self.batch_size))
            return out
        module, _, dim = site
        masks = [(_channels(chosen, dim), None if mode == "zero" else means[block])
                 for chosen, mode in variants]
        n_var = len(variants)
        rows = {"n": 0}

        def hook(_m, args):
            x, n = args[0].clone(), rows["n"]
            for v, (channels, value) in enumerate(masks):
                part = x[v * n:(v + 1) * n]  # a view: variant v's copy of the images
                part[..., channels] = 0.0 if value is None else value[..., channels].to(x)
            return (x, *args[1:])

        parts: list[list[torch.Tensor]] = [[] for _ in variants]
        handle = module.register_forward_pre_hook(hook)
        try:
            for chunk in _batches(self._inputs(block), max(1, self.batch_size // n_var)):
                rows["n"] = n = chunk.shape[0]
                z = self._run(block, chunk.repeat(n_var, 1, 1))  # variant-major rows
                for v in range(n_var):
                    parts[v].append(z[v * n:(v + 1) * n])
        finally:
            handle.remove()
        return [torch.cat(p) for p in parts]


class _Stop(Exception):
    """Ends a forward pass once a block's input is read."""
