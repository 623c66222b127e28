"""Linear probes per layer, with controls: what each layer makes linearly decodable.

Method (Alain & Bengio 2016; Hewitt & Liang 2019; Voita & Titov 2020): for every layer, a linear
probe (multinomial logistic regression on standardised features, or a closed-form ridge
classifier; ridge regression for continuous targets) is trained on the frozen CLS vector, the
mean of the patch vectors and, optionally, each patch vector, to predict a label column.
Accuracy (R^2 for continuous targets) is measured on held-out images with grouped k-fold
cross-validation (all tokens of one image in one fold) and reported with Student-t intervals
across folds. Controls, as rows of the same table: the training-fold majority class (mean for
regression); a control task in which every image gets one fixed random label drawn from the
task's label distribution, so it can be memorised but not generalised, with selectivity = task
accuracy - control accuracy per fold; the same probe on the same images passed through a
randomly initialised copy of the architecture (what the architecture alone makes decodable);
and, optionally, the online-code minimum description length of the labels in bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, LabelColumn, Layers, Options
from probing.errors import ConfigError
from probing.frames import POSITION_COLUMNS, require_label_column
from probing.plots.probes import plot_probe_layers
from probing.probes import probe_layers
from probing.sections import Figure, Section, Table, slug

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Linear probes per layer"
DESCRIPTION = "grouped-CV linear probes of CLS / pooled / patch vectors per layer, with controls"
NEEDS = {"kinds": ["cls"], "pooled": "mean"}

REFERENCES = [
    "Alain & Bengio (2016), Understanding intermediate layers using linear classifier probes",
    "Hewitt & Liang (2019), Designing and Interpreting Probes with Control Tasks",
    "Voita & Titov (2020), Information-Theoretic Probing with Minimum Description Length",
]
_KIND_NAMES = {"cls": "CLS", "pooled": "mean-pooled patches", "patch": "per-patch"}


def _check(ctx, kinds, target, patch_target, max_images) -> tuple[list[str], list[str]]:
    """Validated view kinds (CLS dropped for models without it) and notes for the text."""
    bad = [k for k in kinds if k not in _KIND_NAMES]
    if bad or not kinds:
        raise ConfigError(
            f"layer_probes.kinds={list(kinds)!r} is invalid; pick from 'cls', 'pooled', 'patch'."
        )
    columns = [*ctx.labels().columns, *POSITION_COLUMNS]
    for name, column in (("target", target), ("patch_target", patch_target or target)):
        require_label_column(columns, column, f"layer_probes.{name}", also=POSITION_COLUMNS)
    if max_images < 0:
        raise ConfigError(f"layer_probes.max_images={max_images} is negative; use 0 for all.")
    notes = []
    kinds = list(dict.fromkeys(kinds))
    if "cls" in kinds and not ctx.layout.has_cls:
        kinds.remove("cls")
        notes.append("The model has no CLS token, so no CLS probe was trained.")
    if not kinds:
        raise ConfigError("layer_probes.kinds holds only 'cls' but the model has no CLS token; "
                          "add 'pooled'.")
    return kinds, notes


def _subset(frame: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    return frame[frame["image_id"].isin(ids)].reset_index(drop=True)


def _probe(ctx, frame, random_frame, kind, target, layers, params) -> pd.DataFrame:
    return probe_layers(frame, target, kind, layers=layers, seed=ctx.seed,
                        random_frame=random_frame, **params)


def _numbers(result: pd.DataFrame) -> dict[str, float]:
    """Headline numbers: last-layer scores of every probe, selectivity and the best layer."""
    out: dict[str, float] = {}
    for kind, part in result.groupby("kind", sort=False):
        metric = "r2" if (part["metric"] == "r2").any() else "accuracy"
        last = part[part["layer"] == part["layer"].max()]
        for (probe, m), row in last.set_index(["probe", "metric"])["value"].items():
            if m == "selectivity":
                out[f"{kind}_last_selectivity"] = row
            elif m == metric:
                prefix = "" if probe == "task" else f"{probe}_"
                out[f"{kind}_last_{prefix}{metric}"] = row
        task = part[(part["probe"] == "task") & (part["metric"] == metric)]
        best = task.loc[task["value"].idxmax()]
        out[f"{kind}_best_layer"] = best["layer"]
        out[f"{kind}_best_{metric}"] = best["value"]
    return {k: float(v) for k, v in out.items() if np.isfinite(float(v))}


def run(ctx: RunContext,
        target: Annotated[str, LabelColumn(also=POSITION_COLUMNS)] = "label",
        kinds: Annotated[list, Items(Options("cls", "pooled", "patch"), min_len=1)] = (
            "cls", "pooled"),
        patch_target: Annotated[str, LabelColumn(also=POSITION_COLUMNS, blank=True)] = "",
        layers: Annotated[str | int | list, Layers()] = "all",
        cv: Annotated[int, Interval(int, 2, None)] = 5,
        solver: Annotated[str, Options("logistic", "ridge")] = "logistic",
        alpha: Annotated[float, Interval(float, 0, None)] = 1.0,
        C: Annotated[float, Interval(float, 0, None, closed="neither")] = 1.0,
        control_by: Annotated[str, Options("image", "label")] = "image",
        random_init: bool = True,
        mdl: bool = False,
        max_images: Annotated[int, Interval(int, 0, None)] = 0) -> Section:
    """Linear probes of a label per layer, with control tasks and baselines.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    target : str
        Image-level label column probed from cls and pooled vectors.
    kinds : list of "cls", "pooled", "patch"
        Vectors probed ("patch" probes ``patch_target`` per patch).
    patch_target : str
        Per-patch target column for kind "patch" ("" = the same as ``target``).
    layers : "all", int or list
        Layers probed.
    cv : int
        Cross-validation folds (grouped by image).
    solver : "logistic" or "ridge"
        "ridge" is closed form, much faster on many rows.
    alpha : float
        Ridge penalty.
    C : float
        Inverse logistic penalty.
    control_by : "image" or "label"
        Control task type.
    random_init : bool
        Also probe a randomly initialised copy of the architecture.
    mdl : bool
        Add online-code MDL rows (classification only).
    max_images : int
        Probe the first N images only (0 = all).
    """
    kinds, notes = _check(ctx, kinds, target, patch_target, max_images)
    layers = ctx.layers(layers)
    ids = ctx.labels()["image_id"].to_numpy()
    n_images = len(ids) if max_images == 0 else min(max_images, len(ids))
    ids = ids[:n_images]
    stored = ["cls"] if "cls" in kinds else []
    stored += ["pooled"] if "pooled" in kinds else []
    stored += ["patch"] if "patch" in kinds else []
    frame = _subset(ctx.tokens(stored, layers), ids)
    if "patch" in kinds and not (frame["kind"] == "patch").any():
        raise ConfigError("layer_probes.kinds has 'patch' but the store holds no patch tokens; "
                          "add 'patch' to [capture] kinds.")
    random_frame = None
    if random_init:
        model = ctx.random_init_model()
        extract_kinds = [k for k in ("cls", "patch") if k in stored] or ["pooled"]
        random_frame = ctx.extract(model, kinds=extract_kinds, layers=layers, pooled="mean",
                                   n_images=n_images)
    params = dict(cv=cv, solver=solver, alpha=alpha, C=C, control_by=control_by, mdl=mdl)
    result = pd.concat(
        [_probe(ctx, frame, random_frame, kind,
                (patch_target or target) if kind == "patch" else target, layers, params)
         for kind in kinds], ignore_index=True)

    figures = []
    for name, part in result.groupby("target", sort=False):
        probed = ", ".join(_KIND_NAMES[k] for k in part["kind"].unique())
        figures.append(Figure(
            f"layer_probes_{slug(name)}",
            plot_probe_layers(part, title=f"probing {name!r}"),
            f"Held-out score of linear probes for {name!r} from {probed} vectors vs layer "
            f"(line style = vector kind), {cv}-fold grouped CV on {n_images} images; bands are "
            "95% t-intervals across folds. Colours: task probe, control task (random label per "
            "image), the same probe on a random-initialised model, majority class.",
            part))
    if random_init:
        notes.append(f"Random-init copy: {ctx.random_init_model().name}.")
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: {n_images} images, {cv} folds, {solver} probe, control by {control_by}. "
             + " ".join(notes))
    return Section(
        title=TITLE,
        text=text.strip(),
        figures=figures,
        tables=[Table("layer_probes", result,
                      "Probe scores per layer, kind and probe (task, majority, control with its "
                      "selectivity, random_init, mdl): mean over folds and 95% t-interval.")],
        numbers=_numbers(result),
        references=REFERENCES,
    )
