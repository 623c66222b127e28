"""Logit lens: the model's own final norm and head applied to every layer's tokens.

Method: nostalgebraist (2020), "interpreting GPT: the logit lens" (LessWrong); for ViTs as in
ViT-Prisma (Joseph 2023). The residual stream after block ``k`` is read out as if it were the
last block's output: ``logits_k = model.forward_head(model.norm(x_k))``, timm's own head path
(``norm`` per token, then ``pool`` (the CLS token for ``global_pool="token"``, the mean of the
patch tokens for ``"avg"``, ...), ``fc_norm``, ``head_drop`` (an identity in eval mode) and
``head``). At the last block this *is* the model's forward pass, so the lens equals the model's
logits (the identity tests check).

Conventions
-----------
- Layers are stored labels (:mod:`probing.selection`): ``0`` = the input to the first block,
  ``k`` = the output of block ``k``; the lens of layer ``depth`` is the model's output.
- Tokens: those the model's pooling reads (:func:`lens_positions`): the CLS token for
  ``global_pool="token"``; the patch tokens (and the prefix tokens when
  ``pool_include_prefix``) for ``"avg"``, ``"max"``, ``"avgmax"`` and attention pooling.
  Positions the pooling does not read are zero-filled; they never reach the logits.
- Rank of the target (:func:`lens_scores`): the number of classes whose logit is strictly
  larger than the target's (0 = top-1; ties count in the target's favour), averaged over images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import ImageSource, iter_batches
from .errors import DataError, ModelError
from .frames import embedding_matrix
from .hooks import capture
from .layout import TokenLayout
from .models import LoadedModel, eval_mode
from .progress import progress_bar
from .selection import LAYER_EMBED, LAYER_NORM, LayerLabels, LayerSelection, resolve_layers
from .stats import t_interval

__all__ = ["LENS_COLUMNS", "lens_from_frame", "lens_from_source", "lens_kinds", "lens_logits",
           "lens_positions", "lens_scores"]

#: Columns of the frame :func:`lens_scores` returns.
LENS_COLUMNS = ("layer", "metric", "value", "ci_low", "ci_high", "n")
_POOLS = ("avg", "max", "avgmax")


def _module(model: nn.Module | LoadedModel) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


def lens_positions(model: nn.Module | LoadedModel) -> np.ndarray:
    """Sequence positions the model's head reads (through its pooling), ``(n,)`` int64.

    Raises
    ------
    ModelError
        When the model has no timm head path (``norm``, ``forward_head``) or no pooling
        (``global_pool=""``: its head gives per-token logits, no image logit to read out).
    """
    m = _module(model)
    if not (hasattr(m, "forward_head") and hasattr(m, "norm") and hasattr(m, "blocks")):
        raise ModelError(f"{type(m).__name__} has no timm head path (norm, forward_head); the "
                         "logit lens needs a timm VisionTransformer.")
    layout = TokenLayout.from_model(m)
    everything = np.arange(layout.n_tokens, dtype=np.int64)
    patches = everything[layout.patch_slice]
    reads_prefix = bool(getattr(m, "pool_include_prefix", False))
    pool = getattr(m, "global_pool", "token")
    if getattr(m, "attn_pool", None) is not None or pool in _POOLS:
        return everything if reads_prefix else patches
    if pool == "token":
        return np.zeros(1, dtype=np.int64)
    raise ModelError(f"{type(m).__name__} has global_pool={pool!r}, so its head gives no image "
                     "logits to read out; build it with global_pool='token' or 'avg'.")


def lens_kinds(model: nn.Module | LoadedModel) -> list[str]:
    """Token kinds the lens reads (those at :func:`lens_positions`), in sequence order."""
    m = _module(model)
    kinds = TokenLayout.from_model(m).token_table()["kind"][lens_positions(m)]
    return list(dict.fromkeys(str(k) for k in kinds))


def lens_logits(model: nn.Module | LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """The head applied to a layer's tokens: ``model.forward_head(model.norm(tokens))``.

    Parameters
    ----------
    model : torch.nn.Module or LoadedModel
        A timm ViT; run in eval mode (its flags are restored).
    tokens : torch.Tensor
        ``(B, n, D)`` a layer's sequence, positions ``0..n-1``; it must cover every position of
        :func:`lens_positions` (those beyond may be missing, others zero).

    Returns
    -------
    torch.Tensor
        ``(B, n_classes)`` logits (float32, no gradient).
    """
    m = _module(model)
    param = next(m.parameters())
    with torch.no_grad(), eval_mode(m):
        x = tokens.to(device=param.device, dtype=param.dtype)
        return m.forward_head(m.norm(x)).float().cpu()


def _sequence(values: torch.Tensor, positions: np.ndarray, need: np.ndarray) -> torch.Tensor:
    """``(B, max(need)+1, D)`` with ``values`` (``(B, len(positions), D)``) at ``positions``."""
    seq = values.new_zeros((values.shape[0], int(need.max()) + 1, values.shape[2]))
    keep = positions <= need.max()
    seq[:, torch.as_tensor(positions[keep])] = values[:, torch.as_tensor(np.flatnonzero(keep))]
    return seq


def _blocks(labels: LayerLabels) -> LayerLabels:
    bad = [v for v in labels if v in (LAYER_EMBED, LAYER_NORM)]
    if bad:
        raise DataError("the logit lens reads block outputs (layers 0..depth), not the 'embed' or "
                        "'norm' sites; drop them from layers.")
    return labels


def lens_from_frame(model: nn.Module | LoadedModel, frame: pd.DataFrame,
                    layers: LayerSelection | None = None, batch_size: int = 512,
                    progress: bool | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Logit lens of stored tokens (no forward pass through the blocks).

    Parameters
    ----------
    model : torch.nn.Module or LoadedModel
        The model the frame was extracted from.
    frame : pandas.DataFrame
        A token frame holding, per image and layer, every token of :func:`lens_positions`
        (e.g. kind ``cls`` for a CLS-pooled model, ``patch`` for an average-pooling one).
    layers : layer selection, optional
        Layers to read out (every layer of the frame when None).
    batch_size : int
        Images per head call.
    progress : bool or None
        Progress bar over layers (None: only on a terminal).

    Returns
    -------
    (numpy.ndarray, dict of int to numpy.ndarray)
        Image ids ``(B,)`` (sorted) and ``{layer: (B, n_classes)}`` float32 logits.

    Raises
    ------
    DataError
        When a needed token is missing for some image and layer.
    """
    m = _module(model)
    need = lens_positions(m)
    depth = len(m.blocks)
    labels = LayerLabels(frame["layer"].unique()) if layers is None else \
        resolve_layers(layers, depth)
    ids = np.sort(frame["image_id"].unique())
    if ids.size == 0:
        raise DataError("the frame holds no image; read the logit lens of a non-empty frame.")
    frame = frame[frame["token"].isin(need) & frame["layer"].isin(list(labels))]
    out: dict[int, np.ndarray] = {}
    for layer in progress_bar(_blocks(labels), "logit lens", progress=progress, unit="layer"):
        part = frame[frame["layer"] == layer].sort_values(["image_id", "token"])
        if len(part) != ids.size * need.size:
            raise DataError(
                f"the frame holds {len(part)} of the {ids.size * need.size} tokens the logit "
                f"lens needs at layer {layer} (positions {need.tolist()[:4]}... of every image); "
                f"capture kinds {lens_kinds(m)} at that layer, or read the lens from images."
            )
        x = torch.from_numpy(np.array(embedding_matrix(part), dtype=np.float32))
        x = x.view(ids.size, need.size, -1)
        chunks = [lens_logits(m, _sequence(x[i:i + batch_size], need, need))
                  for i in range(0, ids.size, batch_size)]
        out[int(layer)] = torch.cat(chunks).numpy()
    return ids, out


def lens_from_source(model: LoadedModel, source: ImageSource,
                     layers: LayerSelection = "all", n_images: int | None = None,
                     positions: Sequence[int] | None = None, batch_size: int = 64,
                     progress: bool | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Logit lens by forward passes over the first ``n_images`` of ``source``.

    Parameters
    ----------
    model : LoadedModel
        The model (its preprocessing reads the source).
    source : ImageSource
        Images.
    layers : layer selection
        Layers to read out (``0..depth``).
    n_images : int, optional
        The first ``n`` images (all when None); ``positions`` picks others.
    positions : sequence of int, optional
        Source positions of the images to use.
    batch_size : int
        Images per forward pass.
    progress : bool or None
        Progress bar over batches (None: only on a terminal).

    Returns
    -------
    (numpy.ndarray, dict of int to numpy.ndarray)
        Image ids ``(B,)`` in source order and ``{layer: (B, n_classes)}`` float32 logits.
    """
    m = model.model
    need = lens_positions(m)
    labels = _blocks(resolve_layers(layers, model.depth))
    if positions is None:
        positions = np.arange(len(source) if n_images is None else min(n_images, len(source)))
    positions = np.asarray(positions, dtype=np.int64)
    ids, chunks = [], {int(v): [] for v in labels}
    batches = iter_batches(source, model.data_config, batch_size, positions)
    n_batches = -(-positions.size // batch_size)
    param = next(m.parameters())
    with torch.no_grad(), eval_mode(m), capture(m, model.layout, labels, lens_kinds(m),
                                                 stop_early=True) as cap:
        for batch in progress_bar(batches, "logit lens", total=n_batches, progress=progress,
                                  unit="batch"):
            if not len(batch.images):
                continue
            cap.forward(m, batch.images.to(device=param.device, dtype=param.dtype))
            for v in labels:
                seq = _sequence(cap.tokens[v], cap.token_index[v], need)
                chunks[int(v)].append(lens_logits(m, seq).numpy())
            ids.append(batch.image_ids)
            cap.clear()
    if not ids:
        raise DataError("the image source gave no image for the logit lens; pass images.")
    return np.concatenate(ids), {v: np.concatenate(c) for v, c in chunks.items()}


def lens_scores(logits: dict[int, np.ndarray], target: np.ndarray,
                level: float = 0.95) -> pd.DataFrame:
    """Accuracy, mean rank of the target and agreement with the last layer, per layer.

    Parameters
    ----------
    logits : dict of int to numpy.ndarray
        ``{layer: (B, n_classes)}`` lens logits (:func:`lens_from_frame`).
    target : numpy.ndarray
        ``(B,)`` int class index of each image in the head's classes.
    level : float
        Level of the t-intervals over images.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LENS_COLUMNS`; ``metric`` is ``accuracy`` (lens top-1 = target),
        ``mean_rank`` (0 = top, module docstring), ``target_logit`` and ``agreement`` (lens
        top-1 = the top-1 of the deepest layer given, the model's prediction when that is the
        last block), each the mean over images with its t-interval.
    """
    target = np.asarray(target)
    if not logits:
        raise DataError("no layer's logits to score; read the lens of at least one layer.")
    n_classes = next(iter(logits.values())).shape[1]
    if target.ndim != 1 or not np.issubdtype(target.dtype, np.integer) or target.size == 0 \
            or target.min() < 0 or target.max() >= n_classes:
        raise DataError(f"the lens target must be class indices 0..{n_classes - 1} of the "
                        "model's head; pass a label column that maps onto its classes.")
    final = logits[max(logits)].argmax(axis=1)
    records = []
    for layer in sorted(logits):
        z = logits[layer]
        if z.shape[0] != target.size:
            raise DataError(f"layer {layer} has {z.shape[0]} images but target has "
                            f"{target.size}; pass one target per image.")
        own = z[np.arange(target.size), target]
        per_image = {
            "accuracy": (z.argmax(axis=1) == target).astype(np.float64),
            "mean_rank": (z > own[:, None]).sum(axis=1).astype(np.float64),
            "target_logit": own.astype(np.float64),
            "agreement": (z.argmax(axis=1) == final).astype(np.float64),
        }
        for metric, values in per_image.items():
            mean, low, high = t_interval(values, level)
            records.append({"layer": int(layer), "metric": metric, "value": mean,
                            "ci_low": low, "ci_high": high, "n": int(values.size)})
    return pd.DataFrame.from_records(records, columns=list(LENS_COLUMNS))
