"""The model and data card: the first section of every report.

It says whether the study is set up right before any analysis is read: the model's own
accuracy on the stored images (top-1, and top-5 when the head has more than 5 classes) when a
label column maps onto the head's classes, the preprocessing actually applied (the model's
data config), the number of images per class, and what was left out (images filtered by
``[data] where`` or ``n``, unreadable images, labels that do not map).

Mapping rule: :func:`probing.targets.label_map` (integer class indices, the model's class
names of :func:`probing.targets.model_class_names`, or a one-to-one integer code column such
as ``shape_id``), the same rule as the figures' predicted-class names and the analyses that
score the head against a label. When no rule applies the card says why and shows no accuracy.
The logits come from one extra forward pass over the stored images (:func:`predict_topk`).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import ImageSource, iter_batches
from .imageselect import label_column
from .models import LoadedModel, eval_mode, module_device
from .sections import Section, Table
from .store import EmbeddingStore
from .targets import LabelMap, label_map, model_class_names

__all__ = ["model_card", "predict_topk"]

log = logging.getLogger("probing")

TITLE = "Model and data"
_PREPROCESSING = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def predict_topk(loaded: LoadedModel, source: ImageSource, positions: np.ndarray,
                 k: int = 5, batch_size: int = 64, progress: bool | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The head's top-``k`` classes of the images at ``positions`` (one forward pass each).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(n_read, min(k, classes))`` class indices, best first, and the ``(n_read,)`` image
        ids read (unreadable images of an ``on_error="skip"`` source are left out).
    """
    model = loaded.model
    dev = module_device(model, "cpu")
    n_classes = int(getattr(model, "num_classes", 0))
    k = min(int(k), n_classes)
    show = sys.stderr.isatty() if progress is None else progress
    tops, ids = [], []
    bar = tqdm(total=len(positions), disable=not show, desc="model card", unit="img")
    with eval_mode(model), torch.inference_mode():
        for batch in iter_batches(source, loaded.data_config, batch_size, positions):
            if len(batch.images):
                logits = model(batch.images.to(dev)).float()
                tops.append(torch.topk(logits, k, dim=1).indices.cpu().numpy())
                ids.append(batch.image_ids)
            bar.update(len(batch.images) + len(batch.skipped))
    bar.close()
    if not tops:
        return np.zeros((0, k), dtype=np.int64), np.zeros(0)
    return np.concatenate(tops), np.concatenate(ids)


def _left_out(source: ImageSource, store: EmbeddingStore, n_stored: int) -> list[str]:
    """Sentences on what the run did not look at."""
    notes = []
    describe = source.describe()
    if "where" in describe:
        notes.append(f"[data] where = {describe['where']!r} kept only matching images")
    if "first_n" in describe:
        notes.append(f"[data] n = {describe['first_n']} kept the first {describe['first_n']} "
                     "images (of the filtered source)")
    skipped = store.skipped()
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) were skipped (table card_skipped)")
    if not notes:
        notes.append(f"nothing: all {n_stored} images of the source were used")
    return notes


def model_card(loaded: LoadedModel, source: ImageSource, store: EmbeddingStore,
               batch_size: int = 64, column: str | None = None,
               progress: bool | None = None) -> Section:
    """The model and data card of a run (see the module doc).

    Parameters
    ----------
    loaded : LoadedModel
        The run's model.
    source : ImageSource
        The run's images (after ``[data] where`` and ``n``).
    store : EmbeddingStore
        The run's complete store: its images (unreadable ones left out) are the card's.
    batch_size : int
        Images per forward pass of the accuracy.
    column : str, optional
        The label column (default: ``label`` when present).
    progress : bool, optional
        Progress bar of the forward pass (default: when stderr is a terminal).

    Returns
    -------
    Section
        Named ``card``; tables ``card_preprocessing``, ``card_classes`` (and
        ``card_skipped``); numbers ``n_images``, ``n_skipped``, ``n_classes_model`` and,
        when the labels map, ``top1`` (and ``top5``) and ``n_scored``.
    """
    stored = store.labels()  # Arrow dtypes; plain object columns group and map alike
    labels = pd.DataFrame({c: stored[c].to_numpy(dtype=object) for c in stored.columns})
    column = label_column(labels.columns, column)
    n_classes = int(getattr(loaded.model, "num_classes", 0) or 0)
    cfg = loaded.data_config
    prep = pd.DataFrame({"setting": [k for k in _PREPROCESSING if k in cfg],
                         "value": [str(list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k])
                                   for k in _PREPROCESSING if k in cfg]})
    skipped = store.skipped()
    numbers: dict[str, float] = {"n_images": float(len(labels)),
                                 "n_skipped": float(len(skipped)),
                                 "n_classes_model": float(n_classes)}
    if column is None:
        mapping = LabelMap(None, None, "the data has no label column (label, target or class)")
        classes = pd.DataFrame({"class": ["(all)"], "n_images": [len(labels)]})
    else:
        mapping = label_map(labels, column, n_classes, model_class_names(loaded))
        classes = (labels.groupby(column, dropna=False, sort=True).size()
                   .rename("n_images").reset_index().rename(columns={column: "class"}))
    text = (f"Model {loaded.name}: {loaded.depth} blocks, width {loaded.embed_dim}, "
            f"{n_classes or 'no'} output classes. Preprocessing applied to every image (the "
            f"model's data config): size {cfg.get('input_size')}, mean {cfg.get('mean')}, std "
            f"{cfg.get('std')}, interpolation {cfg.get('interpolation')}, crop_pct "
            f"{cfg.get('crop_pct')}. Data {source.name}: {len(labels)} images"
            + (f", {len(classes)} classes of column {column!r}." if column else "."))
    if mapping.maps:
        pos = pd.Index(source.labels()["image_id"]).get_indexer(labels["image_id"])
        keep = mapping.target >= 0
        top, ids = predict_topk(loaded, source, pos[keep], 5, batch_size, progress)
        by_id = dict(zip(labels["image_id"].tolist(), mapping.target.tolist()))
        truth = np.array([by_id[i] for i in ids.tolist()], dtype=np.int64)
        hit1 = top[:, 0] == truth
        numbers["n_scored"] = float(len(truth))
        numbers["top1"] = float(hit1.mean()) if len(truth) else 0.0
        scores = f"top-1 accuracy {numbers['top1']:.4f}"
        if n_classes > 5:
            numbers["top5"] = float((top == truth[:, None]).any(axis=1).mean())
            scores += f", top-5 {numbers['top5']:.4f}"
        text += (f" The model's own {scores} on {len(truth)} labelled images (column "
                 f"{column!r} read as {mapping.rule}).")
        label_of = {i: v for i, v in zip(labels["image_id"].tolist(), labels[column].tolist())}
        per = pd.DataFrame({"class": [label_of[i] for i in ids.tolist()], "hit": hit1})
        acc = per.groupby("class", sort=True)["hit"].mean().rename("top1").reset_index()
        classes = classes.merge(acc, on="class", how="left")
    else:
        text += f" No accuracy: {mapping.rule}."
    text += " Left out: " + "; ".join(_left_out(source, store, len(labels))) + "."
    tables = [Table("card_preprocessing", prep, "Preprocessing applied to every image (timm "
                    "data-config keys: input size as channels, height, width in pixels)."),
              Table("card_classes", classes, "Images per class of the stored data"
                    + (" and the model's top-1 accuracy per class." if mapping.maps else "."))]
    if skipped:
        tables.append(Table("card_skipped", pd.DataFrame(skipped),
                            "Images skipped as unreadable, with the reason."))
    labels = {"n_images": "Images stored", "n_skipped": "Images skipped as unreadable",
              "n_classes_model": "Classes of the model's head",
              "n_scored": "Images scored (label maps onto the head)",
              "top1": "Model's own top-1 accuracy", "top5": "Model's own top-5 accuracy"}
    return Section(title=TITLE, text=text, tables=tables, numbers=numbers, name="card",
                   labels={k: v for k, v in labels.items() if k in numbers},
                   lead=True)
