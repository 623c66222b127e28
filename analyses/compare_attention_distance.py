"""Mean attention distance side by side: how far each model's heads look, layer by layer.

Method (Dosovitskiy et al. 2021): for every model of the spec (the ``[[model]]`` entries, the
first one primary; with one model, the model and its random-initialised copy), on the same
images, the attention-weighted Euclidean distance in pixels between the centres of the query
patch and the key patch, ``mean_i sum_j A_ij d_ij`` over patch queries and keys (prefix tokens
dropped), per layer and head, averaged over images, with a 95% percentile-bootstrap interval
over images (Efron & Tibshirani 1993; the same resamples for every model, layer and head).
One colour per model, one marker per head; the dashed line is uniform attention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.attention import mean_attention_distance_per_image, pairwise_patch_distances
from probing.constraints import Interval, Layers
from probing.plots.attention import plot_attention_distance
from probing.run.compare import common_image_ids, compared_models, model_keys
from probing.sections import Figure, Section, Table
from probing.stats import bootstrap_frame

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Mean attention distance side by side"
DESCRIPTION = "attention-weighted query-key patch distance per layer and head, per model"
NEEDS = {"attention": True}
REFERENCES = ["Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ICLR), Fig. 7"]


def side_by_side_distance(models: dict[str, RunContext], layers, ids: np.ndarray,
                          renormalize: bool = False) -> pd.DataFrame:
    """Per-image mean attention distance of every model (a ``model`` column) on ``ids``:
    :func:`probing.attention.mean_attention_distance_per_image` rows."""
    out = []
    for name, m in models.items():
        attn, got, labels = m.attention(layers, image_ids=ids)  # only these images are read
        by_layer = {int(layer): attn[:, i] for i, layer in enumerate(labels)}
        out.append(mean_attention_distance_per_image(
            by_layer, m.layout, renormalize=renormalize, image_ids=got).assign(model=name))
    return pd.concat(out, ignore_index=True)


def run(ctx: RunContext,
        layers: Annotated[str | int | list, Layers()] = "all",
        max_images: Annotated[int, Interval(int, 1, None)] = 64,
        renormalize: bool = False,
        jitter: Annotated[float, Interval(float, 0, 1)] = 0.3,
        n_boot: Annotated[int, Interval(int, 1, None)] = 200,
        random_init: bool = True) -> Section:
    """Mean attention distance per layer and head of every model.

    Parameters
    ----------
    ctx : RunContext
        The run's (primary) model, store and seed; ``ctx.models`` holds every model.
    layers : "all", int or list
        Blocks (1-based), "all" or a list, of each model.
    max_images : int
        Images averaged over: n of the images every model holds, chosen as every "n images"
        parameter is (the spec's [data] selection, stratified by default).
    renormalize : bool
        False = raw patch-to-patch weights (the ViT notebook's), True = weights renormalised
        over patch keys per query.
    jitter : float
        Horizontal spread of a layer's heads in the figure, in layers.
    n_boot : int
        Bootstrap resamples of the images for the intervals.
    random_init : bool
        With one model, compare it with its random-initialised copy (else a ConfigError).
    """
    models = compared_models(ctx, random_init, "compare_attention_distance")
    ids = common_image_ids(models, int(max_images))
    per_image = side_by_side_distance(models, layers, ids, bool(renormalize))
    shown = bootstrap_frame(per_image, ["model", "layer", "head"], "distance_px",
                            n_boot=int(n_boot), seed=ctx.seed).rename(
        columns={"value": "distance_px"}).assign(n_images=len(ids))
    uniform = {name: float(pairwise_patch_distances(m.layout).mean())
               for name, m in models.items()}
    same_grid = len(set(uniform.values())) == 1
    names, keys = list(models), model_keys(list(models))
    numbers = {"n_images": float(len(ids))}
    for (name, layer), g in shown.groupby(["model", "layer"], sort=False):
        numbers[f"{keys[name]}_layer{int(layer)}_mean_px"] = float(g["distance_px"].mean())
    convention = "weights renormalised over patch keys" if renormalize else "raw weights"
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: models {', '.join(names)} (primary {names[0]}); {len(ids)} images, "
             f"{convention}, {int(n_boot)} bootstrap resamples. Uniform attention gives "
             + ", ".join(f"{u:.1f} px ({n})" for n, u in uniform.items()) + ".")
    return Section(
        title=TITLE, text=text,
        figures=[Figure(
            "compare_attention_distance",
            plot_attention_distance(shown, jitter=float(jitter),
                                    uniform_px=uniform[names[0]] if same_grid else None),
            f"Mean attention distance (pixels) of each head against depth, one colour per "
            f"model and one marker per head, mean over the same {len(ids)} images (whiskers: "
            f"95% bootstrap interval over images); {convention}."
            + (f" Dashed: uniform attention, {uniform[names[0]]:.1f} px." if same_grid else ""),
            shown)],
        tables=[Table("compare_attention_distance_heads", shown,
                      "Mean attention distance in pixels per model, layer and head, mean over "
                      "images and 95% bootstrap interval.")],
        numbers=numbers,
        references=REFERENCES,
    )
