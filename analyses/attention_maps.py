"""Attention maps: where each head of each layer looks from one query token.

Method: for a few images, the post-softmax attention of every layer and head is read from the
stored capture, and the row of one query token is drawn over the patch grid, overlaid on the
image (Dosovitskiy et al. 2021, ViT, Fig. 6 style; Caron et al. 2021, DINO, multi-head
visualisation). The query is the CLS token by default (any sequence position, "dist" / "reg"
or "pooled", the mean over patch queries, may be given); for models without a CLS token the
default query is the mean over the patch queries. Maps are not renormalised: the weights over
the patch keys plus those over prefix keys (CLS, registers) sum to 1, so a pale map can mean
the query attends to prefix tokens. One layers x heads grid per image, then one layer's heads
side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from probing.attention import attention_map_frame
from probing.constraints import Interval, Layers, Options
from probing.errors import ConfigError
from probing.imageselect import IMAGE_IDS
from probing.plots.attention import attention_grid_pages, plot_attention_grid, plot_multihead
from probing.sections import Figure, Finding, Section, Table, slug
from probing.selection import select_layers

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Attention maps"
DESCRIPTION = "Per layer x head attention from a query token (CLS by default) over the image"
NEEDS = {"attention": True}


def _query_label(layout, query) -> str:
    q = layout.query_index(query)
    if q is None:
        return "the mean over patch queries"
    kind = layout.kind_of(q)
    return "the CLS token" if kind == "cls" else f"token {q} ({kind})"


def run(ctx: RunContext,
        layers: Annotated[str | int | list, Layers()] = "all",
        n_images: Annotated[int, Interval(int, 1, None)] = 2,
        images: Annotated[list | None, IMAGE_IDS] = None,
        query: Annotated[str | int | None, (
            None, Options("cls", "pooled", "reg", "dist", renamed={"mean": "pooled"}),
            Interval(int, 0, None))] = None,
        multihead_layer: Annotated[int | None, (None, Options(-1), Interval(int, 1, None))
                                   ] = None,
        alpha: Annotated[float, Interval(float, 0, 1)] = 0.6) -> Section:
    """Attention maps of a query token, per layer and head.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    layers : "all", int or list
        Blocks to show (1-based), "all" or a list.
    n_images : int
        Images with a layers x heads grid figure each, chosen by the spec's ``[data]
        selection`` (stratified over classes by default).
    images : list, optional
        Image ids to show instead, in this order.
    query : None, "cls", "pooled", "reg", "dist" or int
        The query token: None = CLS (the mean over patch queries without CLS), "pooled" (the
        mean over patch queries), or a sequence position.
    multihead_layer : None or int
        Block of the multi-head figure, one of the shown layers: None = the last shown layer;
        -1 = the model's last block (as everywhere).
    alpha : float
        Opacity of the maps over the images.
    """
    if int(n_images) < 1:
        raise ConfigError(f"attention_maps.n_images is {n_images}; pass 1 or more.")
    chosen = ctx.select_images(int(n_images), images)
    how = ctx.selection if images is None else "listed"
    attn, ids, labels = ctx.attention(layers, image_ids=chosen)
    attn_by_layer = {int(layer): attn[:, i] for i, layer in enumerate(labels)}
    frame = attention_map_frame(attn_by_layer, ctx.layout, query, ids)
    shown = sorted(attn_by_layer)
    (mh_layer,) = (shown[-1],) if multihead_layer is None else select_layers(
        int(multihead_layer), shown, error=ConfigError, depth=ctx.depth,
        where="the layers shown (attention_maps.multihead_layer)")
    pictures, picture_ids = ctx.display_images(image_ids=chosen)
    images = dict(zip(picture_ids.tolist(), pictures))
    true, pred = (dict(zip(picture_ids.tolist(), v))
                  for v in ctx.shown_labels(picture_ids, ctx.images(image_ids=picture_ids)[0]))
    who = _query_label(ctx.layout, query)
    figures = []
    for image_id in ids.tolist():
        sub = frame[frame["image_id"] == image_id]
        pages = plot_attention_grid(sub, images.get(image_id), image_id, alpha,
                                    label=true.get(image_id), prediction=pred.get(image_id))
        for page, (shown_layers, fig) in enumerate(zip(attention_grid_pages(sub), pages), 1):
            part = f" (page {page} of {len(pages)})" if len(pages) > 1 else ""
            figures.append(Figure(
                f"attention_maps_image{slug(image_id)}" + (f"_page{page}" if page > 1 else ""),
                fig,
                f"Image {ctx.describe_images([image_id])}{part}: attention weight from {who} to "
                "each patch, per layer (rows) and head (columns), on one colour scale; unitless "
                "weights (a row sums to 1 over all keys, prefix tokens included). Title: true "
                "label and the model's prediction.",
                sub[sub["layer"].isin(shown_layers)]))
    first = ids.tolist()[0]
    sub = frame[(frame["image_id"] == first) & (frame["layer"] == mh_layer)]
    figures.append(Figure(
        "attention_multihead",
        plot_multihead(sub, mh_layer, images.get(first), first, alpha, label=true.get(first),
                       prediction=pred.get(first)),
        f"Multi-head attention of layer {mh_layer} from {who}, image {first}: one panel per head.",
        sub))
    # how much of the query's attention lands on patches (the rest goes to prefix tokens),
    # and how peaked it is: per layer and head, over the shown images
    per_map = (frame.groupby(["image_id", "layer", "head"], sort=True)["value"]
               .agg(patch_mass="sum", peak="max").reset_index())
    table = (per_map.groupby(["layer", "head"], sort=True)[["patch_mass", "peak"]]
             .mean().reset_index())
    numbers = {f"layer{int(layer)}_patch_mass": float(g["patch_mass"].mean())
               for layer, g in table.groupby("layer")}
    numbers["n_images"] = float(len(ids))
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Query: {who}. Images ({how}): "
             f"{ctx.describe_images(ids)}; layers: {', '.join(map(str, shown))}.")
    if not ctx.layout.has_cls and query is None:
        text += " This model has no CLS token, so the maps show the mean over patch queries."
    return Section(
        title=TITLE,
        text=text,
        figures=figures,
        tables=[Table("attention_maps_mass", table,
                      f"Attention mass from {who} on patch keys (patch_mass, the rest goes to "
                      "prefix tokens) and the largest single patch weight (peak), per layer and "
                      f"head, mean over {len(ids)} images.")],
        numbers=numbers,
        findings=_findings(numbers, who),
        references=["Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ICLR)",
                    "Caron et al. (2021), Emerging Properties in Self-Supervised Vision "
                    "Transformers (ICCV)"],
    )


def _findings(numbers: dict[str, float], who: str) -> list[Finding]:
    """How much of the last shown layer's attention goes to patches (not prefix tokens)."""
    layers = [int(k[5:].split("_")[0]) for k in numbers if k.endswith("_patch_mass")]
    if not layers:
        return []
    key = f"layer{max(layers)}_patch_mass"
    word = "mostly on image patches" if numbers[key] >= 0.5 else "mostly on prefix tokens"
    return [Finding("Where does the attention go?",
                    f"At layer {max(layers)}, {who} puts {{{key}:.0%}} of its attention on patch "
                    f"tokens (the rest on prefix tokens): {word}.")]
