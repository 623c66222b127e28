"""Linear CKA across models: how each layer of one model relates to every layer of another.

Method (Kornblith et al. 2019): the same images pass through every model of the spec (the
``[[model]]`` entries, the first one primary; with one model, the model and its random-
initialised copy). For each pair of models A and B, each image is represented at every layer
of A and every layer of B by its CLS vector or the mean of its patch vectors, the images are
matched by image id, and linear CKA (debiased with the unbiased HSIC estimator of Song et al.
2012 when asked) is computed for every (layer of A, layer of B): a heatmap per model pair, rows
= layers of A, columns = layers of B. A model compared with itself gives 1 on the diagonal; a
bright diagonal between two models means their layers correspond one to one, a bright band
off it that one model computes the same thing at another depth. Intervals (biased CKA) are
percentile-bootstrap intervals over images (Efron & Tibshirani 1993): the matched images are
resampled with replacement and every layer pair's CKA recomputed, the same resamples for
every pair.
"""

from __future__ import annotations

import logging
from itertools import combinations
from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, Layers, Options
from probing.errors import ConfigError
from probing.plots.similarity import plot_cka_heatmap
from probing.run.compare import common_image_ids, compared_models, model_keys
from probing.sections import Figure, Section, Table
from probing.similarity import layer_similarity
from probing.stats import bootstrap_cka
from probing.views import FrameViews, align_rows

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "CKA across models"
DESCRIPTION = "linear CKA between every layer of one model and every layer of another"
NEEDS = {"kinds": ["cls"], "pooled": "mean"}
REFERENCES = [
    "Kornblith et al. (2019), Similarity of Neural Network Representations Revisited",
    "Song et al. (2012), Feature Selection via Dependence Maximization (unbiased HSIC)",
]
_KIND_NAMES = {"cls": "CLS", "pooled": "mean patch"}


def _intervals(fa: pd.DataFrame, fb: pd.DataFrame, kind: str, la, lb, n_boot: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap ``(low, high)``, shape ``(len(la), len(lb))``, of the biased CKA of every
    layer pair, over the images both frames hold (NaN when the Gram matrices are too big)."""
    views_a, views_b = FrameViews(fa), FrameViews(fb)  # each frame's columns read once
    got_a = [views_a.get(layer, kind) for layer in la]
    got_b = [views_b.get(layer, kind) for layer in lb]
    here, there = align_rows(got_a[0][1], got_b[0][1])
    try:
        return bootstrap_cka([m[here] for m, _ in got_a], [m[there] for m, _ in got_b],
                             n_boot=n_boot, seed=seed)
    except ConfigError as exc:  # too many images for the Gram form: no intervals, said why
        logging.getLogger("probing").warning("compare_cka: no bootstrap intervals: %s", exc)
        nan = np.full((len(la), len(lb)), np.nan)
        return nan, nan


def cross_model_cka(models: dict[str, RunContext], kinds: list[str], layers, ids: np.ndarray,
                    debiased: bool = False, n_boot: int = 0, seed: int = 0) -> pd.DataFrame:
    """CKA of every layer pair of every model pair (in spec order), over the images ``ids``,
    with ``n_boot`` bootstrap resamples for the intervals (biased CKA only; 0 = none).

    Returns
    -------
    pandas.DataFrame
        ``model_a, model_b, kind, layer_a, layer_b, metric, value, ci_low, ci_high, n,
        debiased``.
    """
    frames = {}
    for name, m in models.items():
        frame = m.tokens(kinds, m.layers(layers))
        frames[name] = (frame[frame["image_id"].isin(ids)].reset_index(drop=True),
                        m.layers(layers))
    out = []
    for a, b in combinations(models, 2):
        (fa, la), (fb, lb) = frames[a], frames[b]
        for kind in kinds:
            cka = layer_similarity(fa, fb, kind=kind, layers=la, layers_b=lb, debiased=debiased)
            low = high = np.full(len(cka), np.nan)
            if n_boot and not debiased:
                low, high = (x.ravel() for x in _intervals(fa, fb, kind, la, lb, n_boot, seed))
            out.append(cka.assign(model_a=a, model_b=b, kind=kind, ci_low=low, ci_high=high))
    result = pd.concat(out, ignore_index=True)
    first = ["model_a", "model_b", "kind", "layer_a", "layer_b", "metric", "value", "ci_low",
             "ci_high"]
    return result[first + [c for c in result.columns if c not in first]]


def run(ctx: RunContext,
        kinds: Annotated[list, Items(Options("cls", "pooled"), min_len=1)] = ("cls", "pooled"),
        layers: Annotated[str | int | list, Layers()] = "all",
        debiased: bool = False,
        random_init: bool = True,
        max_images: Annotated[int, Interval(int, 0, None)] = 0,
        n_boot: Annotated[int, Interval(int, 0, None)] = 200) -> Section:
    """Linear CKA between the layers of every pair of models.

    Parameters
    ----------
    ctx : RunContext
        The run's (primary) model, store and seed; ``ctx.models`` holds every model.
    kinds : list of "cls", "pooled"
        Image representations: the CLS vector (models without one use "pooled"), the mean of
        the patch vectors.
    layers : "all", int or list
        Layers of each model (negative numbers count from each model's last block).
    debiased : bool
        Debiased CKA (unbiased HSIC) instead of the biased estimator.
    random_init : bool
        With one model, compare it with its random-initialised copy (else a ConfigError).
    max_images : int
        Use N of the images every model holds (0 = all), chosen as every "n
        images" parameter is (the spec's [data] selection, stratified by default).
    n_boot : int
        Bootstrap resamples of the images for the CKA intervals (0 = none; biased CKA only).
    """
    models = compared_models(ctx, random_init, "compare_cka")
    kinds = list(dict.fromkeys(kinds))
    notes = []
    if not all(m.layout.has_cls for m in models.values()) and "cls" in kinds:
        kinds = [k for k in kinds if k != "cls"] or ["pooled"]
        notes.append("A model has no CLS token: only mean-patch vectors are compared.")
    ids = common_image_ids(models, max_images)
    result = cross_model_cka(models, kinds, layers, ids, debiased, n_boot, ctx.seed)
    names = list(models)
    keys = model_keys(names)
    estimator = "debiased" if debiased else "biased"
    figures, numbers = [], {}
    for (a, b, kind), part in result.groupby(["model_a", "model_b", "kind"], sort=False):
        key = f"{keys[a]}_vs_{keys[b]}_{kind}"
        figures.append(Figure(
            f"compare_cka_{key}",
            plot_cka_heatmap(part, label_a=f"layer of {a}", label_b=f"layer of {b}",
                             title=f"{a} vs {b}, {_KIND_NAMES[kind]} vectors"),
            f"Linear CKA ({estimator}) between the {_KIND_NAMES[kind]} representations of "
            f"{len(ids)} images (matched by image id) at every layer of {a} (rows) and every "
            f"layer of {b} (columns); 1 = identical up to rotation and scale; intervals in "
            "the table.", part))
        grid = part.set_index(["layer_a", "layer_b"])["value"]
        numbers[f"{key}_last_last"] = grid.get((part["layer_a"].max(), part["layer_b"].max()),
                                               np.nan)
        same = part[part["layer_a"] == part["layer_b"]]["value"]
        numbers[f"{key}_same_layer_mean"] = same.mean() if len(same) else np.nan
    if not np.isfinite(result["value"]).all():
        notes.append("Blank cells: a representation that is the same for every image (e.g. the "
                     "CLS token before the first block), where CKA is undefined.")
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: models {', '.join(names)} (primary {names[0]}); {len(ids)} images; "
             f"{estimator} CKA; " + (f"95% bootstrap intervals, {n_boot} resamples of the "
                                     f"images (seed {ctx.seed})." if result["ci_low"].notna().any()
                                     else "no intervals.") + " " + " ".join(notes))
    return Section(
        title=TITLE, text=text.strip(), figures=figures,
        tables=[Table("compare_cka", result,
                      "Linear CKA per model pair, kind and layer pair (layer_a of model_a, "
                      "layer_b of model_b).")],
        numbers={k: float(v) for k, v in numbers.items() if np.isfinite(float(v))},
        references=REFERENCES,
    )
