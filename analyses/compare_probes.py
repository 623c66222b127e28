"""Linear probes side by side: the same probe, folds and images on every model.

Method (Alain & Bengio 2016): for every model of the spec (the ``[[model]]`` entries, the first
one primary; with one model, the model and its random-initialised copy) and every layer, a
linear probe (multinomial logistic regression on standardised features, or a closed-form
ridge classifier; ridge regression for continuous targets) is trained on the frozen CLS
vector or the mean of the patch vectors to predict a label column, exactly as in the
``layer_probes`` analysis: held-out accuracy (R^2) with grouped k-fold cross-validation over
the images every model holds, with the same folds for every model (they depend only on the
image ids and the seed), and Student-t intervals across folds. One line per model (and
vector kind) in one figure, with the training-fold majority class for reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, LabelColumn, Layers, Options
from probing.frames import require_label_column
from probing.plots.similarity import plot_similarity_vs_layer
from probing.probes import probe_layers
from probing.run.compare import common_image_ids, compared_models, model_keys
from probing.sections import Figure, Section, Table

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Linear probes side by side"
DESCRIPTION = "the same grouped-CV linear probe per layer on every model, one line per model"
NEEDS = {"kinds": ["cls"], "pooled": "mean"}
REFERENCES = [
    "Alain & Bengio (2016), Understanding intermediate layers using linear classifier probes",
]
_KIND_NAMES = {"cls": "CLS", "pooled": "mean patch"}


def side_by_side_probes(models: dict[str, RunContext], target: str, kinds: list[str], layers,
                        ids: np.ndarray, seed: int, **params) -> pd.DataFrame:
    """Task and majority-class probe rows of every model (a ``model`` column added) over the
    images ``ids``, with :func:`probing.probes.probe_layers` and the same folds for all."""
    out = []
    for name, m in models.items():
        frame = m.tokens(kinds, m.layers(layers))
        frame = frame[frame["image_id"].isin(ids)].reset_index(drop=True)
        rows = probe_layers(frame, target, kinds, layers=m.layers(layers), seed=seed,
                            control=False, **params)
        out.append(rows.assign(model=name))
    return pd.concat(out, ignore_index=True)


def run(ctx: RunContext,
        target: Annotated[str, LabelColumn()] = "label",
        kinds: Annotated[list, Items(Options("cls", "pooled"), min_len=1)] = ("cls",),
        layers: Annotated[str | int | list, Layers()] = "all",
        cv: Annotated[int, Interval(int, 2, None)] = 5,
        solver: Annotated[str, Options("logistic", "ridge")] = "logistic",
        alpha: Annotated[float, Interval(float, 0, None)] = 1.0,
        C: Annotated[float, Interval(float, 0, None, closed="neither")] = 1.0,
        random_init: bool = True,
        max_images: Annotated[int, Interval(int, 0, None)] = 0) -> Section:
    """The same linear probe per layer on every model.

    Parameters
    ----------
    ctx : RunContext
        The run's (primary) model, store and seed; ``ctx.models`` holds every model.
    target : str
        Image-level label column probed.
    kinds : list of "cls", "pooled"
        Vectors probed (models without a CLS token use "pooled").
    layers : "all", int or list
        Layers of each model (negative numbers count from each model's last block).
    cv : int
        Cross-validation folds (grouped by image; the same for every model).
    solver : "logistic" or "ridge"
        Classification probe.
    alpha : float
        Ridge penalty.
    C : float
        Inverse logistic penalty.
    random_init : bool
        With one model, compare it with its random-initialised copy (else a ConfigError).
    max_images : int
        Probe N of the images every model holds (0 = all), chosen as every "n
        images" parameter is (the spec's [data] selection, stratified by default).
    """
    require_label_column(ctx.labels().columns, target, "compare_probes.target")
    models = compared_models(ctx, random_init, "compare_probes")
    kinds = list(dict.fromkeys(kinds))
    notes = []
    if "cls" in kinds and not all(m.layout.has_cls for m in models.values()):
        kinds = [k for k in kinds if k != "cls"] or ["pooled"]
        notes.append("A model has no CLS token: only mean-patch vectors are probed.")
    ids = common_image_ids(models, max_images)
    result = side_by_side_probes(models, target, kinds, layers, ids, ctx.seed, cv=cv,
                                 solver=solver, alpha=alpha, C=C)
    metric = "r2" if (result["metric"] == "r2").any() else "accuracy"
    names, keys = list(models), model_keys(list(models))
    several = len(kinds) > 1
    task = result[(result["probe"] == "task") & (result["metric"] == metric)]
    lines = task.assign(measure=[f"{m} ({_KIND_NAMES[k]})" if several else m
                                 for m, k in zip(task["model"], task["kind"])])
    first = result[(result["probe"] == "majority") & (result["model"] == names[0])]
    lines = pd.concat([lines, first.assign(measure="majority class")], ignore_index=True)
    numbers = {}
    for (name, kind), part in task.groupby(["model", "kind"], sort=False):
        best = part.loc[part["value"].idxmax()]
        numbers[f"{keys[name]}_{kind}_last_{metric}"] = part.loc[part["layer"].idxmax(),
                                                                "value"]
        numbers[f"{keys[name]}_{kind}_best_{metric}"] = best["value"]
        numbers[f"{keys[name]}_{kind}_best_layer"] = best["layer"]
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: models {', '.join(names)} (primary {names[0]}); {len(ids)} images, "
             f"{cv} folds, {solver} probe, target {target!r}. " + " ".join(notes))
    ylabel = "held-out R²" if metric == "r2" else "held-out accuracy"
    return Section(
        title=TITLE, text=text.strip(),
        figures=[Figure(
            "compare_probes",
            plot_similarity_vs_layer(lines, group="measure", ylabel=ylabel,
                                     title=f"probing {target!r}"),
            f"Held-out {metric} of a linear probe for {target!r} per layer, one line per model"
            f"{' and vector kind' if several else ''}, the same {cv} grouped folds over "
            f"{len(ids)} images; bands are 95% t-intervals across folds.", lines)],
        tables=[Table("compare_probes_scores", result,
                      "Probe scores per model, layer, kind and probe (task, majority): mean "
                      "over folds and 95% t-interval.")],
        numbers={k: float(v) for k, v in numbers.items() if np.isfinite(float(v))},
        references=REFERENCES,
    )
