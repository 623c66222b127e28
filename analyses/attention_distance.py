"""Mean attention distance: how far, in pixels, each head looks (ViT paper, Fig. 7 right).

Method (Dosovitskiy et al. 2021): for each image, layer and head, the attention-weighted
Euclidean distance between the centres of the query patch and the key patch,
``mean_i sum_j A_ij d_ij`` over patch queries ``i`` and patch keys ``j``; prefix tokens (CLS,
registers, distillation) are dropped as queries and as keys. The figure shows the mean over
images, one dot per head, against depth, with a 95% percentile-bootstrap interval over images
(Efron & Tibshirani 1993; images resampled with replacement, the same resamples for every
layer and head). Heads near 0 attend locally, heads near the uniform-attention reference (the
mean distance between two patches) attend globally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.attention import (
    mean_attention_distance,
    mean_attention_distance_per_image,
    pairwise_patch_distances,
)
from probing.constraints import Interval, Layers
from probing.errors import ConfigError
from probing.plots.attention import plot_attention_distance
from probing.sections import Figure, Finding, Section, Table
from probing.stats import bootstrap_frame

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Mean attention distance"
DESCRIPTION = "Attention-weighted query-key patch distance in pixels per layer and head"
NEEDS = {"attention": True}

_CONVENTIONS = {
    False: "raw patch-to-patch weights (renormalize=False, the ViT notebook's convention: a "
           "query's distance is scaled by its attention mass on patches)",
    True: "weights renormalised over patch keys per query (renormalize=True)",
}


def run(ctx: RunContext,
        layers: Annotated[str | int | list, Layers()] = "all",
        max_images: Annotated[int, Interval(int, 1, None)] = 64,
        renormalize: bool = False,
        jitter: Annotated[float, Interval(float, 0, 1)] = 0.3,
        n_boot: Annotated[int, Interval(int, 1, None)] = 200) -> Section:
    """Mean attention distance per layer and head.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    layers : "all", int or list
        Blocks (1-based), "all" or a list.
    max_images : int
        Images averaged over, chosen by the spec's ``[data] selection`` (stratified over
        classes by default).
    renormalize : bool
        Convention of the figure: False = raw weights (the ViT notebook's), True = weights
        renormalised over patch keys per query. The table has both.
    jitter : float
        Horizontal spread of a layer's heads in the figure, in layers.
    n_boot : int
        Bootstrap resamples of the images for the intervals.
    """
    if int(max_images) < 1:
        raise ConfigError(f"attention_distance.max_images is {max_images}; pass 1 or more.")
    # with the mask of real query rows: a layer without patch queries (CaiT's class
    # attention) gives NaN, not 0
    attn = ctx.dense_attention(layers, max_images=int(max_images))
    ids = attn.image_ids
    both = {}
    for r in (False, True):
        per_image = mean_attention_distance_per_image(attn, ctx.layout, renormalize=r)
        ci = bootstrap_frame(per_image, ["layer", "head"], "distance_px", n_boot=int(n_boot),
                             seed=ctx.seed)
        both[r] = mean_attention_distance(attn, ctx.layout, renormalize=r).merge(
            ci[["layer", "head", "ci_low", "ci_high"]], on=["layer", "head"], how="left")
    shown = both[bool(renormalize)]
    table = pd.merge(both[False], both[True], on=["layer", "head", "n_images"],
                     suffixes=("_raw", "_renorm"))
    uniform_px = float(pairwise_patch_distances(ctx.layout).mean())
    h = ctx.layout.rows * ctx.layout.patch_size[0]
    w = ctx.layout.cols * ctx.layout.patch_size[1]
    numbers = {"uniform_reference_px": uniform_px, "image_diagonal_px": float(np.hypot(h, w)),
               "n_images": float(len(ids))}
    for tag, frame in (("raw", both[False]), ("renorm", both[True])):
        for layer, g in frame.groupby("layer"):
            px = g["distance_px"].dropna()
            if px.empty:  # no patch queries (class attention): NaN in the tables only
                continue
            numbers[f"layer{int(layer)}_mean_px_{tag}"] = float(px.mean())
            numbers[f"layer{int(layer)}_min_head_px_{tag}"] = float(px.min())
            numbers[f"layer{int(layer)}_max_head_px_{tag}"] = float(px.max())
    convention = _CONVENTIONS[bool(renormalize)]
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (
        f" The figure uses {convention}; the table gives both conventions (suffix _raw and "
        f"_renorm), each with its spread over images (std, min, max) and a 95% bootstrap "
        f"interval of the mean ({int(n_boot)} resamples, ci_low/ci_high). {len(ids)} images of "
        f"{h} x {w} px, {shown['layer'].nunique()} layers, {shown['head'].nunique()} heads; "
        f"grid {ctx.layout.rows} x {ctx.layout.cols} of "
        f"{ctx.layout.patch_size[0]} x {ctx.layout.patch_size[1]} px patches; uniform attention "
        f"would give {uniform_px:.1f} px."
    )
    return Section(
        title=TITLE,
        text=text,
        figures=[Figure(
            "attention_distance",
            plot_attention_distance(shown, jitter=float(jitter), uniform_px=uniform_px),
            f"Mean attention distance (pixels) of each head (one marker and colour per head) "
            f"against depth, mean over {len(ids)} images (whiskers: 95% bootstrap interval "
            f"over images, {int(n_boot)} resamples); {convention.split(' (')[0]}. Dashed: "
            f"uniform attention, {uniform_px:.1f} px.",
            shown)],
        tables=[Table("attention_distance_both", table,
                      "Mean attention distance in pixels per layer and head, mean over images "
                      "with the spread over images and the 95% bootstrap interval, raw (_raw) "
                      "and renormalised over patch keys (_renorm).")],
        numbers=numbers,
        references=["Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ICLR), Fig. 7"],
        findings=_findings(numbers, "renorm" if renormalize else "raw"),
    )


def _findings(numbers: dict[str, float], tag: str) -> list[Finding]:
    """How far the last layer's heads look, against uniform attention."""
    layers = [int(k[5:].split("_")[0]) for k in numbers
              if k.startswith("layer") and k.endswith(f"_mean_px_{tag}")]
    if not layers:
        return []
    last = max(layers)
    ratio = numbers[f"layer{last}_mean_px_{tag}"] / numbers["uniform_reference_px"]
    word = ("more local than uniform attention" if ratio < 0.9 else
            "farther than uniform attention" if ratio > 1.1 else
            "about as far as uniform attention")
    return [Finding("Where do the heads look?",
                    f"At layer {last}, heads attend {{layer{last}_mean_px_{tag}:.1f}} px away "
                    f"on average "
                    f"(heads from {{layer{last}_min_head_px_{tag}:.1f}} to "
                    f"{{layer{last}_max_head_px_{tag}:.1f}} px; uniform attention: "
                    f"{{uniform_reference_px:.1f}} px): {word}.")]
