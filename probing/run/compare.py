"""The models an analysis compares: the spec's ``[[model]]`` entries, or the model and its
random-init copy.

A spec with several ``[[model]]`` entries gives every analysis ``ctx.models`` (name -> the
model's :class:`~probing.run.context.RunContext`, the primary first). The comparison analyses
(``compare_*``) take them through :func:`compared_models`; with one model they compare it with
its random-initialised copy (``random_init = true``, their default: "trained vs random init"),
extracted like the model (same data, same capture) into a store of its own next to the model's.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError, DataError
from ..extract import extract, shard_job, store_manifest
from ..selection import to_selection
from ..store import EmbeddingStore, manifest_key
from .context import RunContext

__all__ = ["RANDOM_INIT_NAME", "common_image_ids", "compared_models", "model_keys",
           "random_init_context"]

#: The name of the random-init copy among the compared models.
RANDOM_INIT_NAME = "random init"


def random_init_context(ctx: RunContext) -> RunContext:
    """The context of ``ctx``'s random-init copy (:meth:`RunContext.random_init_model`): the
    same images and capture settings as ``ctx``'s store (layers, kinds, pooling, attention,
    precision), extracted once into ``<store folder>/<key>`` beside it (reused when complete).
    """
    if "random_init_ctx" in ctx._cache:
        return ctx._cache["random_init_ctx"]
    model = ctx.random_init_model()
    manifest = ctx.store.manifest or {}
    cap = manifest.get("capture") or {}
    pooled = cap.get("pooled")
    settings = {"layers": to_selection(set(cap.get("layers", range(ctx.depth + 1)))),
                "kinds": [*cap.get("kinds", ["cls", "patch"]), *(["pooled"] if pooled else [])],
                "pooled": pooled, "attention": bool(cap.get("attention", False)),
                "dtype": cap.get("dtype", "float32"), "autocast": cap.get("autocast"),
                "batch_size": ctx.batch_size, "shard_size": manifest.get("shard_size", 256)}
    job = shard_job(model, **settings)
    wanted = store_manifest(model, ctx.source, job.capture_config(), job.shard_size)
    store = EmbeddingStore(ctx.store.path.parent / manifest_key(wanted))
    extract(model, ctx.source, store=store, progress=False if ctx.quiet else None, **settings)
    other = RunContext(model=model, source=ctx.source, store=store, seed=ctx.seed,
                       batch_size=ctx.batch_size, quiet=ctx.quiet, selection=ctx.selection,
                       stratify=ctx.stratify, name=RANDOM_INIT_NAME)
    ctx._cache["random_init_ctx"] = other
    return other


def compared_models(ctx: RunContext, random_init: bool, analysis: str) -> dict[str, RunContext]:
    """The models a comparison analysis compares, name -> context, the primary (``ctx``) first.

    Parameters
    ----------
    ctx : RunContext
        The run's (primary) context.
    random_init : bool
        With one model, compare it with its random-init copy (named ``"random init"``).
    analysis : str
        The analysis's name, for the message.

    Raises
    ------
    ConfigError
        One model and ``random_init`` false.
    """
    if len(ctx.models) >= 2:
        return dict(ctx.models)
    if not random_init:
        raise ConfigError(
            f"analysis {analysis!r} compares models but the spec has one; add [[model]] entries "
            f"or set random_init = true in [analyses.{analysis}].")
    other = random_init_context(ctx)
    return {ctx.name or ctx.model.name: ctx, other.name: other}


def common_image_ids(models: dict[str, RunContext], max_images: int = 0) -> np.ndarray:
    """Image ids stored for every model, in the primary's order (0 = all), or ``max_images`` of
    them chosen as every "n images" parameter is (the primary's selection, stratified by
    default): the images a comparison matches across models.

    Raises
    ------
    DataError
        When the models share no image (their stores skipped different images).
    """
    first, *rest = models.values()
    ids = first.labels()["image_id"].to_numpy()
    for other in rest:
        ids = ids[np.isin(ids, other.labels()["image_id"].to_numpy())]
    if ids.size == 0:
        raise DataError("the compared models' stores share no image; extract them on the same "
                        "data.")
    if max_images == 0 or max_images >= ids.size:
        return ids
    return first.select_images(max_images, among=ids)


def model_keys(names: list[str]) -> dict[str, str]:
    """A short file- and key-safe label per model name (lower case, ``_`` for other
    characters; ``m<i>`` for every model when two labels would coincide), for figure names
    and headline numbers."""
    keys = {n: re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_") or f"m{i}"
            for i, n in enumerate(names)}
    if len(set(keys.values())) < len(keys):
        return {n: f"m{i}" for i, n in enumerate(names)}
    return keys
