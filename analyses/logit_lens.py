"""Logit lens: what the model's own head reads from every layer.

Method (nostalgebraist 2020, "interpreting GPT: the logit lens"; for ViTs as in ViT-Prisma):
the residual stream after each block is passed through the model's final norm and
classification head unchanged (timm's ``forward_head(norm(x))``: the CLS token for CLS-pooled
models, the mean of the patch tokens then ``fc_norm`` for average-pooled ones). At the last
block this is the model's own output. Per layer: the top-1 accuracy of these logits, the mean
rank of the target class (0 = top; the number of classes scored strictly higher), and, beside
them, a linear probe of the same vectors trained on held-out folds: the probe shows what is
linearly decodable, the lens what the head itself already reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, LabelColumn, Layers
from probing.errors import ConfigError
from probing.findings import Finding
from probing.lens import lens_from_frame, lens_from_source, lens_kinds, lens_scores
from probing.plots.lens import plot_logit_lens
from probing.probes import probe_layers
from probing.sections import Figure, Section, Table
from probing.targets import label_classes, model_class_names

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Logit lens"
DESCRIPTION = "the model's final norm and head applied to every layer: accuracy and target rank"
NEEDS = {"kinds": ["cls"], "pooled": "mean"}

REFERENCES = [
    "nostalgebraist (2020), interpreting GPT: the logit lens (LessWrong)",
    "Joseph (2023), ViT-Prisma: a mechanistic interpretability library for vision transformers",
    "Alain & Bengio (2016), Understanding intermediate layers using linear classifier probes",
]


def _stored(ctx, kinds, labels) -> bool:
    """Whether the store holds every lens token kind at every wanted layer."""
    have = ctx.store.kinds()
    return all(k in have and set(labels) <= set(ctx.store.layers(k)) for k in kinds)


def _probe_rows(ctx, kind, labels, ids, target, cv) -> pd.DataFrame:
    frame = ctx.tokens(kind, labels, image_ids=ids)
    out = probe_layers(frame, target, kind, layers=labels, cv=cv, seed=ctx.seed, control=False,
                       solver="auto", progress=False if ctx.quiet else None)
    return out[(out["probe"] == "task") & (out["metric"] == "accuracy")]


def run(ctx: RunContext,
        target: Annotated[str, LabelColumn(also=("prediction",))] = "label",
        layers: Annotated[str | int | list, Layers()] = "all",
        max_images: Annotated[int, Interval(int, 0, None)] = 0,
        probe: bool = True,
        cv: Annotated[int, Interval(int, 2, None)] = 5) -> Section:
    """Logit lens per layer, beside a linear probe of the same vectors.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    target : str
        Label column that maps onto the head's classes (probing.targets.label_map: class
        indices, the model's class names, or a 1:1 integer code column such as shape_id), or
        "prediction" (the
        model's own top-1, so the last layer scores 1 by construction).
    layers : "all", int or list
        Layers read out (0 = block input, k = output of block k).
    max_images : int
        The first N images (0 = all).
    probe : bool
        Also train a linear probe (grouped CV) of the same vectors per layer.
    cv : int
        Folds of the probe.
    """
    labels = ctx.layers(layers)
    m = ctx.model
    kinds = lens_kinds(m)
    table = ctx.labels()
    if target != "prediction" and target not in table.columns:
        raise ConfigError(f"logit_lens.target={target!r} is not a label column (have "
                          f"{[c for c in table.columns if c != 'image_id']}); name one or use "
                          "'prediction'.")
    n = len(table) if max_images == 0 else min(max_images, len(table))
    ids_wanted = table["image_id"].to_numpy()[:n]
    progress = False if ctx.quiet else None
    if _stored(ctx, kinds, labels):
        frame = ctx.tokens(kinds, labels, image_ids=ids_wanted)
        ids, logits = lens_from_frame(m, frame, labels, progress=progress)
        how = f"from the stored {' and '.join(kinds)} tokens (no extra forward pass)"
    else:
        ids, logits = lens_from_source(m, ctx.source, labels, n_images=n,
                                       batch_size=ctx.batch_size, progress=progress)
        how = "by forward passes (the store lacks those tokens)"
    n_classes = next(iter(logits.values())).shape[1]
    if target == "prediction":
        y = logits[max(logits)].argmax(axis=1)
    else:
        y = label_classes(table, target, n_classes, "logit_lens.target",
                          model_class_names(ctx.model), image_ids=ids)
    scores = lens_scores(logits, y)
    probe_rows = None
    view = "cls" if kinds == ["cls"] else "pooled"
    if probe and target != "prediction":
        probe_rows = _probe_rows(ctx, view, labels, ids, target, cv)
    shown = pd.concat([scores.assign(source="lens")] + (
        [] if probe_rows is None else [probe_rows[["layer", "value", "ci_low", "ci_high", "n"]]
                                       .assign(metric="accuracy", source="probe")]),
        ignore_index=True)
    acc = scores[scores["metric"] == "accuracy"].set_index("layer")["value"]
    rank = scores[scores["metric"] == "mean_rank"].set_index("layer")["value"]
    numbers = {f"layer{int(k)}_lens_accuracy": float(v) for k, v in acc.items()}
    numbers |= {f"layer{int(k)}_mean_rank": float(v) for k, v in rank.items()}
    numbers["n_images"] = float(len(ids))
    token = ("the CLS token" if view == "cls" else
             "the mean of the patch tokens (the model's average pooling)")
    beside = "" if probe_rows is None else ", beside a held-out linear probe of the same vectors"
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: {len(ids)} images (the first of the data), {n_classes} classes, read out "
             f"at {token}, {how}; target {target!r}. Intervals are 95% t-intervals over images.")
    if probe_rows is not None:
        text += f" Probe: {cv}-fold grouped CV, {probe_rows['solver'].iloc[0]} solver."
    return Section(
        title=TITLE,
        text=text,
        figures=[Figure(
            "logit_lens",
            plot_logit_lens(scores, probe_rows, chance=1.0 / n_classes),
            f"Left: top-1 accuracy of the model's head applied to {token} of each layer (logit "
            f"lens){beside}; dotted: chance (1/{n_classes}). Right: mean rank of the target "
            f"class (0 = top). {len(ids)} images; bands: 95% t-intervals over images"
            f"{' (probe: over folds)' if probe_rows is not None else ''}.",
            shown)],
        tables=[Table("logit_lens_scores", shown,
                      "Logit lens per layer (source=lens: accuracy, mean_rank, target_logit, "
                      "agreement with the model's top-1) and the linear probe's held-out "
                      "accuracy (source=probe), means with 95% t-intervals.")],
        numbers={k: v for k, v in numbers.items() if np.isfinite(v)},
        references=REFERENCES,
        findings=_findings(numbers),
    )


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """The head's accuracy at the last layer and the first layer that reaches 90% of it."""
    layers = sorted(int(k[5:].split("_")[0]) for k in numbers if k.endswith("_lens_accuracy"))
    if not layers:
        return []
    last = layers[-1]
    final = numbers[f"layer{last}_lens_accuracy"]
    early = next(k for k in layers if numbers[f"layer{k}_lens_accuracy"] >= 0.9 * final)
    tail = "" if early == last else (
        f"; it reaches 90% of that from layer {early} on ({{layer{early}_lens_accuracy:.1%}})")
    return [Finding("When can the model's own head read the answer?",
                    f"The model's head applied to layer {last} gives "
                    f"{{layer{last}_lens_accuracy:.1%}} accuracy{tail}.")]
