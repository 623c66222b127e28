"""Run a model over images into token frames, in memory or into an :class:`EmbeddingStore`.

Rows of the returned frame are grouped by layer, then kind (cls, reg, dist, patch, pooled);
within a group images come in source order and tokens in sequence order. A store read of the
same selection returns the same rows in the same order.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from .attention_frames import attention_frame, attention_table
from .attention_hooks import attention_sites
from .constraints import MAX_COUNT, Interval, Layers, Name, Options, check
from .data import ImageSource, iter_batches, open_source
from .errors import ConfigError, DataError
from .frames import SCHEMA_VERSION, frame_from_table, join_labels
from .hooks import LayerSpec, capture
from .models import LoadedModel, eval_mode, load_model, module_device
from .selection import LayerLabels, resolve_kinds, resolve_layers
from .store import EmbeddingStore
from .token_buffer import TokenBuffer

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ARGUMENT_RULES", "ExtractOptions", "ShardJob", "check_arguments", "extract",
           "extract_shard", "open_store", "shard_job", "store_manifest"]

log = logging.getLogger("probing")

Autocast = Literal["bf16", "fp16"] | None
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


# the value rules of extraction arguments: {argument: (rule, example)}
ARGUMENT_RULES: dict[str, tuple] = {
    "batch_size": (Interval(int, 1, MAX_COUNT), 64),
    "shard_size": (Interval(int, 1, MAX_COUNT), 256),
    "num_workers": (Interval(int, 0, MAX_COUNT), 0),
    "n_images": ((Interval(int, 1, None), None), 512),
    "dtype": (Options("float32", "float16"), "float32"),
    "autocast": ((Options("bf16", "fp16"), None), "bf16"),
    "pooled": ((Options("mean", "model"), None), "mean"),
    "lock_timeout": (Interval(float, 0, None), 0.0),
    "layers": (Layers(), "all"),
}


def check_arguments(**arguments) -> None:
    """Check extraction arguments (names as :func:`extract`'s) against :data:`ARGUMENT_RULES`.

    Raises
    ------
    ConfigError
        Naming the first argument out of range (``n_images=0``) and a valid value.
    """
    for key, value in arguments.items():
        rule, example = ARGUMENT_RULES[key]
        check(Name.arg(key), value, rule, example)


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
    """The manifest describing a store made from this model, data and capture settings.

    The one builder of a store's identity: the store key is
    :func:`probing.store.manifest_key` of this dict, and whether a store serves a run is
    :func:`probing.store.manifest_mismatch` of its manifest against this one. ``model.depth``
    (the number of blocks) lets a store resolve negative layer numbers against the model
    (:meth:`probing.store.EmbeddingStore.depth`; manifests written before it was recorded
    read as depth unknown).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": loaded.name, "arch": loaded.arch, "fingerprint": loaded.fingerprint,
                  "depth": loaded.depth},
        "preprocessing": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in loaded.data_config.items()},
        "data": None if source is None else {"describe": source.describe(),
                                             "fingerprint": source.fingerprint(),
                                             "n_images": len(source)},
        "capture": capture_cfg,
        "shard_size": shard_size,
        "layout": _layout_record(loaded.layout),
    }


def _layout_record(layout) -> dict:
    """The manifest's ``layout`` entry; ``prefix_joins`` only where the CLS joins late, so the
    keys of stores of every other model stay as they were."""
    record = {"prefix": list(layout.prefix), "grid": list(layout.grid),
              "patch_size": list(layout.patch_size), "no_embed_class": layout.no_embed_class}
    if layout.prefix_joins != 1:
        record["prefix_joins"] = layout.prefix_joins
    return record


class ExtractOptions(TypedDict, total=False):
    """The keyword arguments of :func:`extract` that do not change what it returns (for the
    type checker: each overload of :func:`extract` takes these as ``**options``)."""

    layers: LayerSpec
    kinds: str | Sequence[str]
    pooled: Literal["mean", "model"] | None
    batch_size: int
    dtype: Literal["float32", "float16"]
    device: str | None
    autocast: Autocast
    n_images: int | None
    shard_size: int
    num_workers: int
    progress: bool | None
    lock_timeout: float


StoreTarget = EmbeddingStore | str | os.PathLike


# the return type follows `store` and `attention`: type checkers see each case
@overload
def extract(model: LoadedModel | str | torch.nn.Module, data: ImageSource | str | torch.Tensor,
            *, attention: Literal[False] = False, store: None = None,
            **options: Unpack[ExtractOptions]) -> pd.DataFrame: ...
@overload
def extract(model: LoadedModel | str | torch.nn.Module, data: ImageSource | str | torch.Tensor,
            *, attention: Literal[True], store: None = None,
            **options: Unpack[ExtractOptions]) -> tuple[pd.DataFrame, pd.DataFrame]: ...
@overload
def extract(model: LoadedModel | str | torch.nn.Module, data: ImageSource | str | torch.Tensor,
            *, attention: bool = False, store: StoreTarget,
            **options: Unpack[ExtractOptions]) -> EmbeddingStore: ...
@overload
def extract(model: LoadedModel | str | torch.nn.Module, data: ImageSource | str | torch.Tensor,
            *, attention: bool = False, store: None = None,
            **options: Unpack[ExtractOptions]
            ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]: ...
def extract(
    model: LoadedModel | str | torch.nn.Module,
    data: ImageSource | str | torch.Tensor,
    *,
    layers: LayerSpec = "all",
    kinds: str | Sequence[str] = ("cls", "patch"),
    pooled: Literal["mean", "model"] | None = None,
    attention: bool = False,
    store: StoreTarget | None = None,
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
        Layers to keep (see :func:`probing.selection.resolve_layers`): ``"all"`` = 0..depth.
    kinds : str or sequence of str
        Token kinds to keep: any of ``cls``, ``reg``, ``dist``, ``patch``, ``pooled``.
    pooled : {"mean", "model"}, optional
        Add one ``pooled`` row per image and layer (``"mean"``: mean of patch tokens;
        ``"model"``: the model's own pooling). ``"pooled"`` in ``kinds`` means ``"mean"``.
    attention : bool
        Also capture the attention of every block (what each family stores:
        :mod:`probing.attention_hooks`; layers with fewer tokens are placed in the full token
        set, :mod:`probing.attention_frames`). A model without token-to-token attention (XCiT)
        is a ModelError before any work.
    store : EmbeddingStore or path, optional
        Write into this store (resuming: complete shards are skipped) and return it.
    batch_size : int
        Images per forward pass.
    dtype : {"float32", "float16"}
        Stored vector precision.
    device : str, optional
        Where to run a model given by name or path (the CPU by default). A module or
        LoadedModel passed in runs where it is and is never moved: another ``device`` is a
        ConfigError (move it yourself with ``model.to(...)``). ``"cuda"`` without CUDA is a
        ModelError. A module passed in in training mode runs in eval mode for the call and
        gets its training flags back after.
        On CUDA, batches come from pinned host memory (the DataLoader pins them) and the copy
        of the next batch to the GPU is issued on a side stream while the current batch runs.
    autocast : {"bf16", "fp16"}, optional
        Run the forward pass under ``torch.autocast(device_type, bfloat16 / float16)`` (CPU or
        CUDA); stored vectors are cast back to ``dtype``. Tolerance against float32, as the
        per-vector relative error ``||x_amp - x_fp32|| / ||x_fp32||``: at most 0.05 for bf16
        (8-bit mantissa) and 0.01 for fp16 on the demo model (measured on CPU: 0.028 and 0.005
        after 4 blocks; the error grows with depth, roughly linearly). Tested in
        ``tests/unit/test_gpu_path.py``.
    n_images : int, optional
        Use only the first ``n_images`` images of the source.
    shard_size : int
        Images per store shard (the unit of resumption).
    num_workers : int
        DataLoader worker processes for decoding images (frames are identical for any value).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    lock_timeout : float
        Seconds to wait for another process's store lock.

    Returns
    -------
    pandas.DataFrame
        Without ``store`` and with ``attention=False``: the token frame (schema in
        :mod:`probing.frames`), one row per (image, layer, token).
    (pandas.DataFrame, pandas.DataFrame)
        Without ``store`` and with ``attention=True``: ``(tokens, attention)``, the token frame
        and the attention frame (one row per image, block, head and query, schema in
        :mod:`probing.attention_frames`).
    EmbeddingStore
        With ``store``: that store, holding the tokens (and, with ``attention=True``, the
        attention); read them with :meth:`EmbeddingStore.read` and
        :meth:`EmbeddingStore.read_attention`.

    Each case is an overload of this function (``typing.overload`` on ``store: None`` against
    a store, and on ``attention: Literal[True]`` against ``Literal[False]``), so a type checker
    knows which of the three a call returns.

    Raises
    ------
    ConfigError
        An argument out of range (``batch_size``, ``n_images``, ``shard_size``, ``num_workers``,
        ``lock_timeout``, ``dtype``, ``autocast``, ``pooled``, the form of ``layers``), before
        the model is loaded; layer numbers beyond the model's depth are a LayoutError. A
        ``device`` other than the one a module passed in is on.
    """
    check_arguments(batch_size=batch_size, n_images=n_images, shard_size=shard_size,
                    num_workers=num_workers, dtype=dtype, autocast=autocast, pooled=pooled,
                    lock_timeout=lock_timeout, layers=layers)
    loaded = load_model(model, device=device)  # never moves a model the caller passed in
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
    job = shard_job(loaded, layers=layers, kinds=kinds, pooled=pooled, attention=attention,
                    batch_size=batch_size, dtype=dtype, autocast=autocast,
                    shard_size=shard_size if store is not None else 1, num_workers=num_workers)
    show = sys.stderr.isatty() if progress is None else progress

    st = None if store is None else (store if isinstance(store, EmbeddingStore)
                                     else EmbeddingStore(store))
    if st is not None:
        if source is None:
            raise ConfigError("a store needs a data source, not a tensor; pass an ImageSource.")
        with open_store(st, loaded, source, job, lock_timeout) as todo:
            bar = tqdm(total=sum(len(job.positions(s, n_total)) for s in todo),
                       disable=not show, desc="extract", unit="img")
            skipped = [item for shard in todo
                       for item in extract_shard(loaded, source, st, shard, job, labels_all, bar)]
            bar.close()
        _warn_skipped(skipped, n_total, f"EmbeddingStore({str(st.path)!r}).skipped()")
        return st

    dev = module_device(loaded.model, "cpu")
    tokens, att, skipped = _run(loaded, source, tensor if source is None else None,
                                np.arange(n_total), job, dev,
                                tqdm(total=n_total, disable=not show, desc="extract", unit="img"))
    if tokens is None:
        raise DataError(
            f"all {n_total} images were skipped as unreadable (first image id "
            f"{skipped[0]['image_id'] if skipped else '?'}); fix the files or the data source."
        )
    frame = frame_from_table(tokens[0])
    frame = _attach_labels(frame, labels_all)
    if skipped:
        frame.attrs["skipped"] = skipped
        _warn_skipped(skipped, n_total, 'the frame\'s attrs["skipped"]')
    if attention:
        ids = frame["image_id"].unique()
        att_frame = frame_from_table(pa.concat_tables(list(att.values()))) if att else \
            attention_frame({}, ids, loaded.layout.n_tokens)
        return frame, att_frame
    return frame


@dataclass(frozen=True)
class ShardJob:
    """The resolved settings of one extraction (picklable: what a Dask task receives).

    Attributes
    ----------
    layers : tuple of int
        Stored layer labels (see :mod:`probing.frames`).
    kinds : tuple of str
        Token kinds (``pooled`` included when pooled rows are asked for).
    pooled : {"mean", "model"} or None
        Pooling of the ``pooled`` rows.
    attention : bool
        Capture post-softmax attention.
    batch_size, shard_size, num_workers : int
        Images per forward pass, images per shard, DataLoader workers.
    dtype : {"float32", "float16"}
        Stored vector precision.
    autocast : {"bf16", "fp16"} or None
        Mixed precision of the forward pass.
    """

    layers: tuple
    kinds: tuple
    pooled: str | None
    attention: bool
    batch_size: int
    shard_size: int
    num_workers: int
    dtype: str
    autocast: str | None

    def capture_config(self) -> dict:
        """The ``capture`` entry of the store manifest."""
        return {"layers": sorted(self.layers), "kinds": [k for k in self.kinds if k != "pooled"],
                "pooled": self.pooled, "attention": bool(self.attention), "dtype": self.dtype,
                "autocast": self.autocast}

    def n_shards(self, n_total: int) -> int:
        """Number of shards of ``n_total`` images."""
        return (n_total + self.shard_size - 1) // self.shard_size

    def positions(self, shard: int, n_total: int) -> np.ndarray:
        """Image positions (0-based, source order) of shard ``shard``."""
        return np.arange(shard * self.shard_size, min(n_total, (shard + 1) * self.shard_size))


def shard_job(loaded: LoadedModel, *, layers: LayerSpec = "all",
              kinds: str | Sequence[str] = ("cls", "patch"),
              pooled: Literal["mean", "model"] | None = None, attention: bool = False,
              batch_size: int = 64, dtype: Literal["float32", "float16"] = "float32",
              autocast: Autocast = None, shard_size: int = 256,
              num_workers: int = 0) -> ShardJob:
    """Validate and resolve extraction settings for ``loaded`` (arguments as :func:`extract`).

    Raises
    ------
    ConfigError
        An argument out of range (see :func:`check_arguments`).
    ModelError
        ``attention`` for a model without token-to-token attention (XCiT), before any work.
    """
    check_arguments(batch_size=batch_size, shard_size=shard_size, num_workers=num_workers,
                    dtype=dtype, autocast=autocast, pooled=pooled)
    if attention:
        attention_sites(loaded.model)  # a family without attention weights fails here
    kinds_sel = resolve_kinds(kinds, loaded.layout)
    if pooled is None and "pooled" in kinds_sel:
        pooled = "mean"
    return ShardJob(layers=tuple(resolve_layers(layers, loaded.depth)), kinds=tuple(kinds_sel),
                    pooled=pooled, attention=bool(attention), batch_size=int(batch_size),
                    shard_size=int(shard_size), num_workers=int(num_workers), dtype=dtype,
                    autocast=autocast)


@contextmanager
def open_store(store: EmbeddingStore, loaded: LoadedModel, source: ImageSource, job: ShardJob,
               lock_timeout: float = 0.0) -> Iterator[list[int]]:
    """Lock ``store``, create or check its manifest, and yield the numbers of missing shards.

    The lock is released on exit, and temporaries of writers that died (a killed Dask worker)
    are removed first. The store folder must be new, empty or a store. When an extraction that
    started the store (the folder was absent or empty) fails, or every image was skipped, what
    it wrote is removed again (the folder too when this call created it), so a failed first run
    leaves nothing behind; a store that existed before is never discarded.

    Raises
    ------
    StoreError
        When another live process holds the lock, or the store was made from another model,
        preprocessing, data or capture settings.
    """
    created = not store.path.exists()
    fresh = created or not any(store.path.iterdir())  # this call starts the store
    store.check_claimable(live_writer_ok=True)  # before taking the lock: its holder writes
    store.lock(timeout=lock_timeout)
    try:
        store.check_claimable()
        store.prepare(store_manifest(loaded, source, job.capture_config(), job.shard_size))
        for shard, problem in store.damaged_shards().items():
            log.warning("store %s: re-extracting damaged shard %d (%s)", store.path, shard,
                        problem)
        yield [s for s in range(job.n_shards(len(source))) if not store.shard_done(s)]
        if store.stored_rows() == 0:
            raise DataError(
                f"all {len(source)} images were skipped as unreadable, so store {store.path} "
                "would be empty; fix the files or the data source."
            )
        store.clean_temporaries()
    except BaseException:
        if fresh:
            store.discard_unused(created)
        raise
    finally:
        store.unlock()


def _warn_skipped(skipped: list[dict], n_total: int, where: str) -> None:
    """One warning for the images this extraction skipped as unreadable (none: silent)."""
    if skipped:
        log.warning("%d of %d images were skipped as unreadable (the first: image id %r); %s lists "
                    "them with the reason (position, image_id, error)", len(skipped), n_total,
                    skipped[0]["image_id"], where)


def extract_shard(loaded: LoadedModel, source: ImageSource, store: EmbeddingStore, shard: int,
                  job: ShardJob, labels: pd.DataFrame | None = None, bar=None) -> list[dict]:
    """Extract one shard of ``source`` and write it atomically into ``store``.

    The per-shard work of both the in-process and the Dask runner. The caller holds the store's
    lock (a Dask worker writes shard files and the marker only).

    Parameters
    ----------
    shard : int
        Shard number; its images are ``job.positions(shard, len(source))``.
    labels : pandas.DataFrame, optional
        ``source.labels()`` (passed to avoid recomputing it per shard).
    bar : tqdm, optional
        Progress bar advanced by the number of images.

    Returns
    -------
    list of dict
        Images skipped as unreadable (``position``, ``image_id``, ``error``).
    """
    labels_all = source.labels() if labels is None else labels
    pos = job.positions(shard, len(source))
    dev = module_device(loaded.model, "cpu")
    tokens, att, skipped = _run(loaded, source, None, pos, job, dev, bar)
    # one schema for every shard: a column that is all null in one shard keeps its type
    schema = pa.Schema.from_pandas(labels_all, preserve_index=False)
    lab = pa.Table.from_pandas(labels_all.iloc[pos].reset_index(drop=True), schema=schema,
                               preserve_index=False)
    if skipped:
        keep = ~labels_all.iloc[pos]["image_id"].isin([s["image_id"] for s in skipped]).to_numpy()
        lab = lab.filter(pa.array(keep))
    store.write_shard(shard, {} if tokens is None else tokens[1].group_tables(tokens[0]), lab, att,
                      {"skipped": skipped})
    return skipped


def _attach_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Join per-image label columns onto token rows (Arrow dtypes, as a store read gives)."""
    if not any(c != "image_id" for c in labels.columns):
        return frame
    labels = frame_from_table(pa.Table.from_pandas(labels, preserve_index=False))
    return join_labels(frame, labels)


def _batches(source, tensor, positions, batch_size, loaded, num_workers, pin):
    if tensor is not None:
        for start in range(0, len(positions), batch_size):
            pos = positions[start:start + batch_size]
            run = pos.size and pos[-1] - pos[0] == pos.size - 1 and np.all(np.diff(pos) == 1)
            # consecutive positions (every batch of a whole tensor) are a view, not a gather
            yield (tensor[int(pos[0]):int(pos[-1]) + 1] if run else tensor[pos]), \
                pos.astype(np.int64), []
        return
    for b in iter_batches(source, loaded.data_config, batch_size, positions, num_workers, pin):
        yield b.images, b.image_ids, b.skipped


def _to_device(batches, dev: torch.device):
    """Yield batches with images on ``dev``; on CUDA the next batch is copied ahead.

    On CUDA the host-to-device copy of batch ``k + 1`` is issued on a side stream (from pinned
    memory, ``non_blocking``) before batch ``k`` is handed out, so it overlaps batch ``k``'s
    forward pass; the compute stream waits for the copy before using the images.
    """
    if dev.type != "cuda":
        for images, ids, skip in batches:
            yield (images.to(dev) if len(images) else images), ids, skip
        return
    stream = torch.cuda.Stream(dev)

    def issue(item):
        images, ids, skip = item
        if len(images):
            with torch.cuda.stream(stream):
                images = images.to(dev, non_blocking=True)
        return images, ids, skip

    it = iter(batches)
    pending = next(it, None)
    pending = None if pending is None else issue(pending)
    while pending is not None:
        following = next(it, None)
        ahead = None if following is None else issue(following)
        images, ids, skip = pending
        if len(images):
            torch.cuda.current_stream(dev).wait_stream(stream)
            images.record_stream(torch.cuda.current_stream(dev))
        yield images, ids, skip
        pending = ahead


def _copy_in_hooks(dev: torch.device) -> bool:
    """Whether each layer's tokens are copied into the buffer inside its block's hook.

    On the CPU they are, so the block output's memory is reused by the next block as in a
    plain forward (``python -m benchmarks.peers``, row (1)). On a GPU the copy to the host
    would wait for each block, so it comes after the pass.
    """
    return dev.type == "cpu"


def _run(loaded, source, tensor, positions, job: ShardJob, dev, bar):
    """Forward passes over ``positions``.

    Returns ``(tokens, att, skipped)``: ``tokens`` is the token table of the images that were
    read (rows: layer, kind, image, token) with its :class:`TokenBuffer` (None when every
    image was skipped), ``att`` the ``{block: table}`` attention tables.
    """
    model, layout = loaded.model, loaded.layout
    np_dtype = np.float16 if job.dtype == "float16" else np.float32
    att_parts: dict[int, list[pa.Table]] = {}
    skipped: list[dict] = []
    amp = (torch.autocast(dev.type, dtype=_AUTOCAST[job.autocast]) if job.autocast
           else nullcontext())
    cuda = dev.type == "cuda"
    batches = _batches(source, tensor, positions, job.batch_size, loaded, job.num_workers, cuda)
    with eval_mode(model), capture(model, layout, LayerLabels(job.layers), list(job.kinds),
                                   job.pooled, job.attention, stop_early=True) as cap:
        buffer = TokenBuffer(layout, cap.token_index, len(positions), np_dtype)
        if _copy_in_hooks(dev):
            cap.sink = lambda layer, t: buffer.put(layer, t.float().numpy())
        for images, ids, skip in _to_device(batches, dev):
            skipped.extend(skip)
            if len(images) == 0:
                continue
            with torch.inference_mode(), amp:
                cap.forward(model, images)  # ends after the last captured site
            if cap.sink is None:
                buffer.add({layer: t.float().cpu().numpy() for layer, t in cap.tokens.items()},
                           ids)
            else:
                buffer.commit(ids)
            for layer, a in cap.attention.items():
                att_parts.setdefault(layer, []).append(
                    attention_table(a.float().cpu().numpy(), layer, ids, layout.n_tokens))
            cap.clear()
            if bar is not None:
                bar.update(len(images) + len(skip))
    if skipped and source is not None and source.on_error == "skip":
        source.skipped.extend(skipped)
    tokens = None
    if buffer.n_added:
        table = buffer.table()
        tokens = (table, buffer)
    att = {layer: pa.concat_tables(v) for layer, v in att_parts.items()}
    return tokens, att, skipped
