"""RunContext: what an analysis gets (model, data, store, seed), and how it is called."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..attention_frames import DenseAttention, dense_attention
from ..attention_hooks import attention_sites
from ..data import ImageSource, iter_batches
from ..errors import AnalysisError, ProbingError, SchemaError
from ..extract import extract
from ..frames import check_finite
from ..imageselect import describe_images, label_column, pick_images, select_images
from ..models import LoadedModel, eval_mode, random_init_copy
from ..seeding import derive_seed
from ..selection import LayerLabels, resolve_layers
from ..store import EmbeddingStore
from ..style import paper_style, style_overrides
from ..targets import label_map, model_class_names

__all__ = ["CONTROL_LOCK_TIMEOUT", "CONTROL_SHARD_BYTES", "RunContext", "control_batches",
           "run_analysis"]

CONTROL_LOCK_TIMEOUT = 1800.0
"""Seconds :meth:`RunContext.extract_store` waits for another process building the same
control store."""

CONTROL_SHARD_BYTES = 16 * 2**20
"""Most bytes of float32 token vectors one batch, and one shard, of a control store holds
while it is extracted (:func:`control_batches`): an analysis that builds a control store then
holds about the same memory whatever the number of layers, tokens and images it captures."""


def control_batches(model: LoadedModel, n_layers: int, kinds: Sequence[str],
                    batch: int) -> tuple[int, int]:
    """``(batch_size, shard_size)`` of a control store (:meth:`RunContext.extract_store`).

    An image's vectors take ``n_layers * tokens * width * 4`` bytes (``tokens``: every token
    of the image when ``patch`` is asked for, else its prefix tokens, plus the pooled row).
    The batch is the run's ``batch`` or as many images as :data:`CONTROL_SHARD_BYTES` holds,
    whichever is smaller (at least 1); the shard is whole batches within the same bytes (at
    least one batch, at most 256 images). Examples: the demo's CLS controls keep the run's
    batch of 128 in 256-image shards, its patch controls get one batch of 128 a shard; a
    12-block ViT-B/16 at 224 px capturing CLS and patch tokens gets batches (and shards) of
    2 images.

    Parameters
    ----------
    model : LoadedModel
        The model the control store is extracted from (its token layout and width).
    n_layers : int
        Layers captured.
    kinds : sequence of str
        Token kinds captured (``cls``, ``patch``, ``pooled``, ...).
    batch : int
        The run's batch size.

    Returns
    -------
    (int, int)
        Images per batch and per shard; the shard is a multiple of the batch.
    """
    layout = model.layout
    tokens = (layout.n_tokens if "patch" in kinds else layout.num_prefix_tokens) + 1
    per_image = max(1, n_layers * tokens * max(1, model.embed_dim) * 4)
    fit = CONTROL_SHARD_BYTES // per_image
    batch = max(1, min(int(batch), fit))
    return batch, batch * max(1, min(fit, 256) // batch)


@dataclass
class RunContext:
    """What an analysis gets: the model, the data, the store and the seed.

    Attributes
    ----------
    model : LoadedModel
        The model (``.model``, ``.layout``, ``.data_config``).
    source : ImageSource
        The image source (first ``n`` images of the spec).
    store : EmbeddingStore
        The extraction store holding the captured tokens (and attention).
    seed : int
        The spec's seed; analyses derive every random step from it.
    selection : {"stratified", "first", "shuffled"}
        How "n images" are chosen (:meth:`select_images`; the spec's ``[data] selection``).
    stratify : str, optional
        The class column of the stratified selection (default: ``label`` when present).
    name : str
        The model's name in the spec (``[model] name`` or derived from its ``spec``).
    models : dict
        Every model of the spec, name -> its RunContext (same data, seed and capture, each its
        own store), the primary (this context) first; empty for a context built by hand. See
        :func:`probing.run.compare.compared_models`.
    """

    model: LoadedModel
    source: ImageSource
    store: EmbeddingStore
    seed: int = 0
    batch_size: int = 64
    quiet: bool = False
    selection: str = "stratified"
    stratify: str | None = None
    name: str = ""
    models: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def loaded(self) -> LoadedModel:
        """The model (the same as ``model``)."""
        return self.model

    @property
    def layout(self):
        """The model's :class:`~probing.layout.TokenLayout`."""
        return self.model.layout

    @property
    def depth(self) -> int:
        """Number of blocks."""
        return self.model.depth

    @property
    def attention_depth(self) -> int:
        """Number of blocks with attention: :attr:`depth`, and CaiT's class-attention blocks
        after them (numbered ``depth + 1 ..``, as the store numbers their attention)."""
        return len(attention_sites(self.model.model))

    def layers(self, spec: Any = "all") -> LayerLabels:
        """Resolve a layer selection to stored labels, once (see
        :func:`probing.selection.resolve_layers`); the result passes through every other
        ``layers=`` unchanged."""
        return resolve_layers(spec, self.depth)

    def tokens(self, kind: str | Sequence[str] = "cls", layers: Any = "all",
               columns: Sequence[str] | None = None,
               image_ids: Sequence[Any] | np.ndarray | None = None,
               labels: bool = True) -> pd.DataFrame:
        """Token rows of the store (with label columns) for the given kinds and layers.

        ``layers`` is a selection or the :class:`~probing.selection.LayerLabels` of
        :meth:`layers`. ``image_ids``: only these images' rows (in store order; every image
        when None), read from their row groups alone. ``labels=False`` leaves out the label
        columns (no join).

        Raises
        ------
        SchemaError
            When a stored vector holds NaN or inf (a diverged model or a corrupt store).
        """
        filters = None if image_ids is None else [("image_id", "in", _id_list(image_ids))]
        frame = self.store.read(kind=kind, layers=self.layers(layers), columns=columns,
                                filters=filters, labels=labels)
        if "emb" in frame.columns:
            try:
                check_finite(frame)
            except SchemaError as exc:
                raise SchemaError(
                    f"store {self.store.path} holds non-finite vectors for kind={kind!r}: "
                    f"{exc}"
                ) from exc
        return frame

    def iter_layers(self, kind: str | Sequence[str] = "cls", layers: Any = "all",
                    columns: Sequence[str] | None = None,
                    image_ids: Sequence[Any] | np.ndarray | None = None
                    ) -> Iterator[tuple[int, pd.DataFrame]]:
        """``(layer, frame)`` for each layer of the selection, one layer read at a time.

        Each frame is :meth:`tokens` of that one layer (only its partition of the store is
        opened), so a loop over layers holds one layer's rows at a time; memory does not grow
        with the number of layers.

        Yields
        ------
        (int, pandas.DataFrame)
            The stored layer label and its token rows (with label columns), in forward-pass
            order.
        """
        for layer in self.layers(layers):
            yield layer, self.tokens(kind, LayerLabels([layer]), columns=columns,
                                     image_ids=image_ids)

    def labels(self) -> pd.DataFrame:
        """``image_id`` and label columns of the stored images, in source order (read from the
        store once per context and store: analyses run on a complete store; a copy each
        call)."""
        key = ("labels", str(self.store.path))
        if key not in self._cache:
            self._cache[key] = self.store.labels()
        return self._cache[key].copy()

    def label_column(self) -> str | None:
        """The class column of the stored images (``stratify``, else ``label`` when present)."""
        return label_column(self.labels().columns, self.stratify)

    def select_images(self, n: int | None = None, images: Sequence[Any] | None = None,
                      among: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
        """Ids of the images an "n images" parameter means: ``images`` (stored ids, in that
        order) when given, else ``n`` of the stored images chosen by :attr:`selection`
        (:func:`probing.imageselect.select_images`, seeded by the spec's seed, the same for
        every analysis; all stored images in source order when ``n`` is None). ``among``
        restricts the choice to those stored ids (e.g. the images several models share)."""
        labels = self.labels()
        if among is not None:
            labels = labels[labels["image_id"].isin(np.asarray(among))].reset_index(drop=True)
        ids = labels["image_id"].to_numpy()
        if images is not None:
            return pick_images(ids, list(images))
        if n is None:
            return ids
        column = self.label_column()
        return select_images(ids, None if column is None else labels[column], int(n),
                             seed=derive_seed(self.seed, "images"), how=self.selection)

    def describe_images(self, ids: Sequence[Any] | np.ndarray) -> str:
        """``"3 (circle), 7 (square)"``: the ids with their class, for captions."""
        return describe_images(ids, self.labels(), self.label_column())

    def dense_attention(self, layers: Any = "all", max_images: int | None = None,
                        image_ids: Sequence[Any] | np.ndarray | None = None
                        ) -> DenseAttention:
        """Stored attention of ``image_ids`` (in that order) or else of :meth:`select_images`
        ``(max_images)``, as :func:`probing.attention_frames.dense_attention` reads it: weights
        ``(n_images, n_layers, heads, N, N)``, image ids, layer labels (only blocks ``1..``
        :attr:`attention_depth` of the selection, resolved against that, have attention) and
        ``present``, the ``(n_layers, N)``
        query rows each layer really has (None when all are; CaiT's class-attention blocks
        have the CLS row only). Every function of :mod:`probing.attention` takes it as is."""
        want = self.select_images(max_images) if image_ids is None else np.asarray(image_ids)
        blocks = resolve_layers(layers, self.attention_depth).blocks
        frame = self.store.read_attention(blocks, filters=[("image_id", "in", _id_list(want))])
        dense = dense_attention(frame)
        index = pd.Index(dense.image_ids).get_indexer(want)
        if (index < 0).any():
            raise SchemaError(f"store {self.store.path} holds no attention of image "
                              f"{want[index < 0][0]!r}; re-extract with attention.")
        return dense._replace(weights=dense.weights[index], image_ids=dense.image_ids[index])

    def attention(self, layers: Any = "all", max_images: int | None = None,
                  image_ids: Sequence[Any] | np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """:meth:`dense_attention` without ``present``: weights ``(n_images, n_layers, heads,
        N, N)``, image ids, layer labels (rows without a stored query are zero; pass
        :meth:`dense_attention` where an absent query row must not count as a real one)."""
        dense = self.dense_attention(layers, max_images, image_ids)
        return dense.weights, dense.image_ids, dense.layers

    def _positions(self, image_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Source positions of stored image ids."""
        pos = pd.Index(self.source.labels()["image_id"]).get_indexer(np.asarray(image_ids))
        if (pos < 0).any():
            raise SchemaError(f"image {np.asarray(image_ids)[pos < 0][0]!r} is not in the "
                              f"data source {self.source.name!r}; rerun the extraction.")
        return pos

    def images(self, n: int | None = None,
               image_ids: Sequence[Any] | np.ndarray | None = None
               ) -> tuple[torch.Tensor, np.ndarray]:
        """Preprocessed images ``(n, C, H, W)`` and their ids: ``image_ids`` (in that order)
        or else :meth:`select_images` ``(n)``."""
        want = self.select_images(n) if image_ids is None else np.asarray(image_ids)
        pos = self._positions(want)
        batches = list(iter_batches(self.source, self.model.data_config, max(1, len(pos)),
                                    pos))
        imgs = torch.cat([b.images for b in batches if len(b.images)])
        ids = np.concatenate([b.image_ids for b in batches if len(b.images)])
        return imgs, ids

    def display_images(self, n: int | None = None,
                       image_ids: Sequence[Any] | np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs of :meth:`images` de-normalised for display: ``(n, H, W, 3)`` in
        [0, 1]."""
        imgs, ids = self.images(n, image_ids)
        cfg = self.model.data_config
        mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
        x = (imgs * std + mean).clamp(0, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return x.permute(0, 2, 3, 1).numpy(), ids

    def shown_labels(self, ids: np.ndarray, images: torch.Tensor, column: str = "label"
                     ) -> tuple[list, list]:
        """True labels and the model's predictions of images shown in a figure.

        Parameters
        ----------
        ids : array, shape (n,)
            Image ids.
        images : torch.Tensor, shape (n, C, H, W)
            The preprocessed images (``images(...)``); one forward pass, no gradient.
        column : str
            Label column of the source.

        Returns
        -------
        (labels, predictions) : two lists of length n
            The ``column`` value per image (None when the source has no such column) and the
            argmax class, named by the label value of that class when the label column maps
            onto the head's classes (:func:`probing.targets.label_map`: integer labels, the
            model's class names, or a 1:1 integer code column such as ``shape_id``), else
            ``"class k"``.
        """
        frame = self.labels()
        has = column in frame.columns
        by_id = frame.set_index("image_id")[column] if has else None
        labels = [by_id.get(i) if has else None for i in np.asarray(ids).tolist()]
        with torch.no_grad(), eval_mode(self.model.model) as model:
            device = next(model.parameters()).device
            logits = model(images.to(device))
        top = logits.argmax(-1).cpu().numpy().tolist()
        names = label_map(frame, column, int(logits.shape[-1]),
                          model_class_names(self.model)).names if has else {}
        return labels, [names.get(k, f"class {k}") for k in top]

    def random_init_model(self) -> LoadedModel:
        """A random-initialised copy of the model's architecture, seeded from the spec's seed
        through its own derived seed (:func:`probing.seeding.derive_seed`), so that it is never
        the model itself when the model is a random-init timm architecture built from the
        spec's seed (:func:`probing.models.random_init_copy` refuses an identical copy)."""
        if "random_init" not in self._cache:
            self._cache["random_init"] = random_init_copy(
                self.model, seed=derive_seed(self.seed, "random_init"))
        return self._cache["random_init"]

    def _other_source(self, image_ids: Sequence[Any] | np.ndarray | None):
        """The source restricted to ``image_ids`` (in source order), and that part of a key."""
        if image_ids is None:
            return self.source, None
        return (self.source.take(np.sort(self._positions(image_ids))),
                tuple(np.asarray(image_ids).tolist()))

    def extract(self, model: LoadedModel, kinds: Sequence[str] = ("cls",), layers: Any = "all",
                pooled: str | None = None, n_images: int | None = None,
                image_ids: Sequence[Any] | np.ndarray | None = None) -> pd.DataFrame:
        """Extract (in memory, cached per arguments) from another model over the same images:
        the first ``n_images``, or the images ``image_ids`` (in source order).

        ``layers`` is resolved against ``model``'s depth once (labels pass through)."""
        labels = resolve_layers(layers, model.depth)
        source, ids_key = self._other_source(image_ids)
        key = ("extract", model.name, tuple(kinds), tuple(labels), pooled, n_images, ids_key)
        if key not in self._cache:
            self._cache[key] = extract(model, source, layers=labels, kinds=kinds,
                                       pooled=pooled, batch_size=self.batch_size,
                                       n_images=n_images, progress=False)
        return self._cache[key]

    def extract_store(self, model: LoadedModel, kinds: Sequence[str] = ("cls",),
                      layers: Any = "all", pooled: str | None = None,
                      n_images: int | None = None,
                      image_ids: Sequence[Any] | np.ndarray | None = None) -> EmbeddingStore:
        """As :meth:`extract`, into a store of its own (under the run's store, ``controls/``),
        so that an analysis reads it one layer at a time (:meth:`EmbeddingStore.read` with
        ``layers=[k]``) instead of holding every layer.

        The vectors equal those of :meth:`extract` with the same arguments up to the rounding
        of batch-size-dependent kernels (bitwise equal on the CPU here): the batches and
        shards are bounded in bytes (:func:`control_batches`), so that building a control
        store of many layers holds no more memory than one of a few. An existing control
        store of the same model, images and capture is reused; while another process (an
        analysis running in parallel, :mod:`probing.run.parallel`) builds it, this one waits
        for its lock (up to :data:`CONTROL_LOCK_TIMEOUT` seconds) and then finds it complete.
        """
        import hashlib

        labels = resolve_layers(layers, model.depth)
        source, ids_key = self._other_source(image_ids)
        key = ("extract_store", model.name, tuple(kinds), tuple(labels), pooled, n_images,
               ids_key)
        if key not in self._cache:
            batch, shard = control_batches(model, len(labels), kinds, int(self.batch_size))
            # the sharding is part of a control store's identity: one built with other batch
            # bounds (an earlier CONTROL_SHARD_BYTES) is another store, never a mismatch error
            digest = hashlib.sha256(repr((model.fingerprint, *key, batch, shard)).encode()
                                    ).hexdigest()[:16]
            self._cache[key] = extract(
                model, source, layers=labels, kinds=kinds, pooled=pooled,
                batch_size=batch, n_images=n_images, progress=False, shard_size=shard,
                store=self.store.path / "controls" / digest,
                lock_timeout=CONTROL_LOCK_TIMEOUT)  # another analysis process may build it
        return self._cache[key]

    def rng(self, salt: str = "") -> np.random.Generator:
        """A numpy generator derived from the spec's seed and ``salt``."""
        return np.random.default_rng(derive_seed(self.seed, salt))


def run_analysis(run: Callable[..., Any], ctx: RunContext, params: dict,
                 style: dict | None = None, name: str = "") -> Any:
    """Call an analysis's ``run(ctx, **params)`` with the toolkit's figure style applied, so
    every figure element it creates (legends and labels drawn after the axes too) is styled,
    with the spec's ``style`` overrides on top.

    Raises
    ------
    ProbingError
        What the analysis raised, its message prefixed with the analysis's ``name``; any other
        exception becomes an :class:`AnalysisError` naming the analysis (cause chained), so
        that even under ``--quiet`` the user learns which analysis failed.
    """
    try:
        with paper_style(style), style_overrides(style):
            return run(ctx, **params)
    except ProbingError as exc:
        if not name or str(exc).startswith(f"analysis {name!r}"):
            raise
        try:
            named = type(exc)(f"analysis {name!r}: {exc}")
        except TypeError:  # a subclass with another constructor: keep it as it is
            raise exc from exc.__cause__
        raise named from exc
    except Exception as exc:
        raise AnalysisError(
            f"analysis {name or run.__module__!r} failed ({type(exc).__name__}: {exc}); fix "
            "the analysis or its parameters (--debug shows the traceback)."
        ) from exc


def _id_list(ids: Sequence[Any] | np.ndarray) -> list:
    """Image ids as a list of Python values (a parquet ``in`` filter's operand)."""
    return np.asarray(ids).tolist()
