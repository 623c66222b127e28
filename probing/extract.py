"""Run a model over images into token frames, in memory or into an :class:`EmbeddingStore`.

Rows of the returned frame are grouped by layer, then kind (cls, reg, dist, patch, pooled);
within a group images come in source order and tokens in sequence order. A store read of the
same selection returns the same rows in the same order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from .attention_frames import attention_frame, attention_table
from .data import ImageSource, iter_batches, open_source
from .errors import ConfigError, DataError
from .frames import (
    LAYER_EMBED,
    LAYER_NORM,
    SCHEMA_VERSION,
    _token_table,
    frame_from_table,
    join_labels,
)
from .hooks import LayerSpec, capture, resolve_kinds, resolve_layers
from .layout import TOKEN_KINDS
from .models import LoadedModel, load_model
from .store import EmbeddingStore

__all__ = ["extract", "store_manifest"]

Autocast = Literal["bf16", "fp16"] | None
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer; use e.g. 64.")
    return int(batch_size)


def _tensor_source(data: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    if data.ndim != 4:
        raise DataError(
            f"image tensor has shape {tuple(data.shape)}; pass a (batch, channels, H, W) tensor."
        )
    want = int(loaded.data_config["input_size"][0])
    if data.shape[1] != want:
        raise DataError(
            f"image tensor has {data.shape[1]} channels but the model takes {want}; convert it."
        )
    return data.float()


def store_manifest(loaded: LoadedModel, source: ImageSource | None, capture_cfg: dict,
                   shard_size: int) -> dict:
    """The manifest describing a store made from this model, data and capture settings."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": loaded.name, "arch": loaded.arch, "fingerprint": loaded.fingerprint},
        "preprocessing": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in loaded.data_config.items()},
        "data": None if source is None else {"describe": source.describe(),
                                             "fingerprint": source.fingerprint(),
                                             "n_images": len(source)},
        "capture": capture_cfg,
        "shard_size": shard_size,
        "layout": {"prefix": list(loaded.layout.prefix), "grid": list(loaded.layout.grid),
                   "patch_size": list(loaded.layout.patch_size),
                   "no_embed_class": loaded.layout.no_embed_class},
    }


def extract(
    model: LoadedModel | str | torch.nn.Module,
    data: ImageSource | str | torch.Tensor,
    *,
    layers: LayerSpec = "all",
    kinds: str | Sequence[str] = ("cls", "patch"),
    pooled: Literal["mean", "model"] | None = None,
    attention: bool = False,
    store: EmbeddingStore | str | os.PathLike | None = None,
    batch_size: int = 64,
    dtype: Literal["float32", "float16"] = "float32",
    device: str | None = None,
    autocast: Autocast = None,
    n_images: int | None = None,
    shard_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
    lock_timeout: float = 0.0,
) -> pd.DataFrame | EmbeddingStore | tuple[pd.DataFrame, pd.DataFrame]:
    """Extract token vectors (and attention) of a ViT over a set of images.

    Parameters
    ----------
    model : LoadedModel, str or torch.nn.Module
        Anything :func:`probing.load_model` accepts.
    data : ImageSource, str or torch.Tensor
        A data source (or spec, see :func:`probing.data.open_source`), or an already-preprocessed
        ``(batch, channels, H, W)`` tensor whose rows get ``image_id`` 0..batch-1.
    layers : int, str or sequence
        Layers to keep (see :func:`probing.hooks.resolve_layers`): ``"all"`` = 0..depth.
    kinds : str or sequence of str
        Token kinds to keep: any of ``cls``, ``reg``, ``dist``, ``patch``, ``pooled``.
    pooled : {"mean", "model"}, optional
        Add one ``pooled`` row per image and layer (``"mean"``: mean of patch tokens;
        ``"model"``: the model's own pooling). ``"pooled"`` in ``kinds`` means ``"mean"``.
    attention : bool
        Also capture post-softmax attention of every block.
    store : EmbeddingStore or path, optional
        Write into this store (resuming: complete shards are skipped) and return it.
    batch_size : int
        Images per forward pass.
    dtype : {"float32", "float16"}
        Stored vector precision.
    device : str, optional
        Where to run (the model's device by default).
    autocast : {"bf16", "fp16"}, optional
        Mixed precision on CUDA (results differ from float32 within the autocast's precision).
    n_images : int, optional
        Use only the first ``n_images`` images of the source.
    shard_size : int
        Images per store shard (the unit of resumption).
    num_workers : int
        DataLoader workers for decoding images.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    lock_timeout : float
        Seconds to wait for another process's store lock.

    Returns
    -------
    pandas.DataFrame, EmbeddingStore, or (pandas.DataFrame, pandas.DataFrame)
        The token frame; the store when ``store`` is given; ``(tokens, attention)`` when
        ``attention=True`` without a store (attention schema in :mod:`probing.attention_frames`).
    """
    loaded = load_model(model)
    batch_size = _check_batch_size(batch_size)
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype={dtype!r} is not supported; use 'float32' or 'float16'.")
    if autocast not in (None, "bf16", "fp16"):
        raise ConfigError(f"autocast={autocast!r} is unknown; use 'bf16', 'fp16' or None.")
    if device is not None:
        from .models import _device

        loaded.model.to(_device(device))
    dev = next(loaded.model.parameters()).device
    labels_all = None
    if isinstance(data, torch.Tensor):
        tensor = _tensor_source(data, loaded)
        source = None
        if n_images is not None:
            tensor = tensor[:n_images]
        ids_all = np.arange(len(tensor), dtype=np.int64)
        labels_all = pd.DataFrame({"image_id": ids_all})
        n_total = len(tensor)
    else:
        source = open_source(data).subset(n_images)
        labels_all = source.labels()
        n_total = len(source)
    depth = loaded.depth
    labels_sel = resolve_layers(layers, depth)
    kinds_sel = resolve_kinds(kinds, loaded.layout)
    if pooled is None and "pooled" in kinds_sel:
        pooled = "mean"
    capture_cfg = {"layers": labels_sel, "kinds": [k for k in kinds_sel if k != "pooled"],
                   "pooled": pooled, "attention": bool(attention), "dtype": dtype,
                   "autocast": autocast}
    show = sys.stderr.isatty() if progress is None else progress

    st = None if store is None else (store if isinstance(store, EmbeddingStore)
                                     else EmbeddingStore(store))
    if st is not None:
        if source is None:
            raise ConfigError("a store needs a data source, not a tensor; pass an ImageSource.")
        shard_size = _check_batch_size(shard_size)
        st.lock(timeout=lock_timeout)
        try:
            st.prepare(store_manifest(loaded, source, capture_cfg, shard_size))
            n_shards = (n_total + shard_size - 1) // shard_size
            todo = [s for s in range(n_shards) if not st.shard_done(s)]
            bar = tqdm(total=sum(min(shard_size, n_total - s * shard_size) for s in todo),
                       disable=not show, desc="extract", unit="img")
            for shard in todo:
                pos = np.arange(shard * shard_size, min(n_total, (shard + 1) * shard_size))
                tokens, att, skipped = _run(loaded, source, None, pos, batch_size, labels_sel,
                                            kinds_sel, pooled, attention, dtype, autocast, dev,
                                            num_workers, bar)
                lab = pa.Table.from_pandas(labels_all.iloc[pos].reset_index(drop=True),
                                           preserve_index=False)
                if skipped:
                    keep = ~labels_all.iloc[pos]["image_id"].isin(
                        [s["image_id"] for s in skipped]).to_numpy()
                    lab = lab.filter(pa.array(keep))
                st.write_shard(shard, tokens, lab, att, {"skipped": skipped})
            bar.close()
        finally:
            st.unlock()
        return st

    tokens, att, skipped = _run(loaded, source, tensor if source is None else None,
                                np.arange(n_total), batch_size, labels_sel, kinds_sel, pooled,
                                attention, dtype, autocast, dev, num_workers,
                                tqdm(total=n_total, disable=not show, desc="extract", unit="img"))
    frame = frame_from_table(pa.concat_tables([tokens[key] for key in sorted(
        tokens, key=lambda kl: (kl[1], TOKEN_KINDS.index(kl[0])))]))
    frame = _attach_labels(frame, labels_all)
    if skipped:
        frame.attrs["skipped"] = skipped
    if attention:
        ids = frame["image_id"].unique()
        att_frame = frame_from_table(pa.concat_tables(list(att.values()))) if att else \
            attention_frame({}, ids)
        return frame, att_frame
    return frame


def _attach_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Join per-image label columns onto token rows (Arrow dtypes, as a store read gives)."""
    labels = frame_from_table(pa.Table.from_pandas(labels, preserve_index=False))
    return join_labels(frame, labels)


def _batches(source, tensor, positions, batch_size, loaded, num_workers, pin):
    if tensor is not None:
        for start in range(0, len(positions), batch_size):
            pos = positions[start:start + batch_size]
            yield tensor[pos], pos, pos.astype(np.int64), []
        return
    for b in iter_batches(source, loaded.data_config, batch_size, positions, num_workers, pin):
        yield b.images, b.positions, b.image_ids, b.skipped


def _run(loaded, source, tensor, positions, batch_size, layers, kinds, pooled, attention, dtype,
         autocast, dev, num_workers, bar):
    """Forward passes over ``positions``; returns per-(kind, layer) tables and attention tables."""
    model, layout = loaded.model, loaded.layout
    np_dtype = np.float16 if dtype == "float16" else np.float32
    parts: dict[tuple[str, int], list[pa.Table]] = {}
    att_parts: dict[int, list[pa.Table]] = {}
    skipped: list[dict] = []
    amp = (torch.autocast(dev.type, dtype=_AUTOCAST[autocast]) if autocast else nullcontext())
    cuda = dev.type == "cuda"
    # stored labels -> a layer spec: capture() reads a bare -1 / -2 as blocks from the end
    named = [{LAYER_EMBED: "embed", LAYER_NORM: "norm"}.get(k, k) for k in layers]
    with capture(model, layout, named, kinds, pooled, attention) as cap:
        for images, _pos, ids, skip in _batches(source, tensor, positions, batch_size, loaded,
                                                num_workers, cuda):
            skipped.extend(skip)
            if len(images) == 0:
                continue
            with torch.inference_mode(), amp:
                model(images.to(dev, non_blocking=cuda))
            for layer, t in cap.tokens.items():
                arr = t.float().cpu().numpy().astype(np_dtype, copy=False)
                idx = cap.token_index[layer]
                for kind in _kinds_in(idx, layout):
                    sel = _kind_columns(idx, layout, kind)
                    table = _token_table(arr[:, sel], layout, layer, ids, idx[sel], None)
                    parts.setdefault((kind, layer), []).append(table)
            for layer, a in cap.attention.items():
                att_parts.setdefault(layer, []).append(
                    attention_table(a.float().cpu().numpy(), layer, ids))
            cap.clear()
            bar.update(len(images) + len(skip))
    if skipped and source is not None and source.on_error == "skip":
        source.skipped.extend(skipped)
    tokens = {key: pa.concat_tables(v) for key, v in parts.items()}
    att = {layer: pa.concat_tables(v) for layer, v in att_parts.items()}
    return tokens, att, skipped


def _kinds_in(idx: np.ndarray, layout) -> list[str]:
    kinds = {("pooled" if i < 0 else layout.kind_of(int(i))) for i in idx}
    return [k for k in TOKEN_KINDS if k in kinds]


def _kind_columns(idx: np.ndarray, layout, kind: str) -> np.ndarray:
    if kind == "pooled":
        return np.flatnonzero(idx < 0)
    return np.flatnonzero([(i >= 0 and layout.kind_of(int(i)) == kind) for i in idx])
