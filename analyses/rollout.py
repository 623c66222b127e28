"""Attention rollout and gradient rollout: which input patches the output token draws on.

Method: attention rollout (Abnar & Zuidema 2020) fuses each layer's heads (mean by default),
optionally zeroes the lowest ``discard_ratio`` fraction of each fused matrix (never the
CLS->CLS entry), adds the identity for the residual connection, ``(A + I) / 2``, renormalises
each row to 1 and multiplies the layers (later layers on the left); the map is the query's row
over the patch grid. Gradient rollout (Chefer, Gur & Wolf 2021, "generic" rule) weights each
layer's attention by the gradient of the explained class's logit with respect to that same
attention, keeps the positive part, averages heads and accumulates ``R = R + A R`` from
``R = I``. Rollout is class-agnostic; gradient rollout explains the predicted class. Both maps
are scaled to a maximum of 1 per image and overlaid on the image. The query is CLS by default;
for models without CLS it is the mean over patch queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.attention import gradient_rollout, relevance_frame, rollout_map
from probing.constraints import Interval, Options
from probing.errors import ConfigError
from probing.findings import Finding
from probing.imageselect import IMAGE_IDS
from probing.plots.attribution import method_map_pages, plot_method_maps
from probing.sections import Figure, Section, Table
from probing.stats import spearman_rows

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Attention rollout"
DESCRIPTION = "Attention rollout (Abnar & Zuidema) and gradient rollout (Chefer et al.) maps"
NEEDS = {"attention": True}


def run(ctx: RunContext,
        n_images: Annotated[int, Interval(int, 1, None)] = 4,
        images: Annotated[list | None, IMAGE_IDS] = None,
        head_fusion: Annotated[str, Options("mean", "max", "min")] = "mean",
        discard_ratio: Annotated[float, Interval(float, 0, 1, closed="left")] = 0.0,
        start_layer: Annotated[int, Interval(int, 1, None)] = 1,
        query: Annotated[str | int | None, (
            None, Options("cls", "pooled", "reg", "dist", renamed={"mean": "pooled"}),
            Interval(int, 0, None))] = None,
        gradient: bool = True) -> Section:
    """Attention rollout (and gradient rollout) maps of the first images.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    n_images : int
        Images shown, chosen by the spec's ``[data] selection`` (stratified by default).
    images : list, optional
        Image ids to show instead, in this order.
    head_fusion : "mean", "max" or "min"
        How each layer's heads are fused.
    discard_ratio : float
        Fraction of the lowest fused entries zeroed per image and layer, in [0, 1).
    start_layer : int
        First block included in the rollout.
    query : None, "cls", "pooled", "reg", "dist" or int
        None = CLS (the mean over patch queries without CLS), or as in attention_maps.
    gradient : bool
        Also the gradient rollout of the predicted class.
    """
    if int(n_images) < 1:
        raise ConfigError(f"rollout.n_images is {n_images}; pass 1 or more.")
    chosen = ctx.select_images(int(n_images), images)
    attn, ids, labels = ctx.attention("all", image_ids=chosen)
    attn_by_layer = {int(layer): attn[:, i] for i, layer in enumerate(labels)}
    maps = {"rollout": rollout_map(attn_by_layer, ctx.layout, query, head_fusion,
                                   float(discard_ratio), int(start_layer))}
    if gradient:
        inputs, image_ids = ctx.images(image_ids=chosen)
        if not np.array_equal(image_ids, ids):
            raise ConfigError("rollout: the stored attention and the images differ; re-extract.")
        maps["gradient_rollout"] = gradient_rollout(ctx.model.model, inputs, ctx.layout,
                                                    query=query)
    frame = pd.concat([relevance_frame(m, name, ids) for name, m in maps.items()],
                      ignore_index=True)
    pictures, picture_ids = ctx.display_images(image_ids=chosen)
    numbers = {"n_images": float(len(ids))}
    tables = []
    if gradient:
        a, b = (np.asarray(maps[k], dtype=np.float64).reshape(len(ids), -1)
                for k in ("rollout", "gradient_rollout"))
        rho = spearman_rows(a, b)
        agree = pd.DataFrame({"image_id": ids, "spearman_rollout_vs_gradient": rho})
        tables.append(Table("rollout_agreement", agree,
                            "Spearman rank correlation between the rollout and gradient-rollout "
                            "maps of each image (NaN when a map is constant)."))
        if np.isfinite(rho).any():
            numbers["spearman_rollout_vs_gradient"] = float(np.nanmean(rho))
    setting = (f"head fusion {head_fusion}, discard ratio {float(discard_ratio):g}, layers "
               f"{int(start_layer)}..{max(labels)}")
    text = (__doc__ or "").split("\n\n", 1)[1].strip() + f" Settings: {setting}; {len(ids)} images"
    text += (f" ({ctx.selection if images is None else 'listed'}): "
             f"{ctx.describe_images(ids)}; {len(maps)} maps each.")
    if not ctx.layout.has_cls and query is None:
        text += " This model has no CLS token: the maps are the mean over patch queries."
    true, pred = ctx.shown_labels(picture_ids, ctx.images(image_ids=picture_ids)[0])
    pictures_by_id = dict(zip(picture_ids.tolist(), pictures))
    kw = {"labels": dict(zip(picture_ids.tolist(), true)),
          "predictions": dict(zip(picture_ids.tolist(), pred)),
          "units": dict.fromkeys(maps, "relevance (max 1)")}
    pages = plot_method_maps(frame, pictures_by_id, list(ids), **kw)
    figures = [Figure(
        "rollout_maps" + (f"_page{k}" if k > 1 else ""), fig,
        f"Attention rollout ({setting}) and gradient rollout of the predicted class, one "
        f"row per image ({ctx.describe_images(shown)}; first column: the image, its true label "
        "and the model's prediction); "
        "each map scaled to max 1 (unitless)"
        + (f"; page {k} of {len(pages)}." if len(pages) > 1 else "."),
        frame[frame["image_id"].isin(shown)])
        for k, (shown, fig) in enumerate(zip(method_map_pages(list(ids), len(maps)), pages), 1)]
    return Section(
        title=TITLE,
        text=text,
        figures=figures,
        tables=tables,
        numbers=numbers,
        findings=_findings(numbers),
        references=["Abnar & Zuidema (2020), Quantifying Attention Flow in Transformers (ACL)",
                    "Chefer, Gur & Wolf (2021), Generic Attention-model Explainability for "
                    "Interpreting Bi-Modal and Encoder-Decoder Transformers (ICCV)"],
    )


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """Whether attention rollout and gradient rollout point at the same patches."""
    if "spearman_rollout_vs_gradient" not in numbers:
        return []
    rho = numbers["spearman_rollout_vs_gradient"]
    word = ("they rank the same patches high" if rho >= 0.7 else
            "they partly agree on where the evidence is" if rho >= 0.3 else
            "they point at different patches, so attention alone does not explain the decision")
    return [Finding("Do attention and gradients agree on where the model looks?",
                    "Attention rollout and gradient rollout correlate with a mean Spearman rank "
                    f"correlation of {{spearman_rollout_vs_gradient:.2f}} over {{n_images}} "
                    f"images: {word}.")]
