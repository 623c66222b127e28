"""Embedding maps: PCA and t-SNE (UMAP when installed) of CLS and mean-pooled patch embeddings.

Method: for each chosen layer, the CLS vectors and the mean of the patch vectors of each image
are mapped to 2-D (PCA: first two principal components of the centred vectors; t-SNE: on the top
50 principal components, perplexity 30, PCA initialisation, exact gradient up to 1000 points
(Barnes-Hut above), 500 iterations: 250 of early exaggeration and 250 more, where the paper runs
1000; on the demo's maps the extra 500 lowered the KL by under 6% and left trustworthiness
unchanged to 0.001), and coloured by a label column. The explained-variance curve shows how
many directions carry the variance per layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, LabelColumn, Layers, Options
from probing.findings import Finding
from probing.frames import embedding_matrix, require_label_column
from probing.maps import TSNE_MAX_ITER, default_methods, embedding_maps, explained_variance
from probing.plots.embedding import plot_embedding_maps, plot_explained_variance
from probing.sections import Figure, Section, Table
from probing.selection import LayerLabels

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Embedding maps"
DESCRIPTION = "PCA / t-SNE / UMAP maps of CLS and mean-pooled patch embeddings per layer"
NEEDS = {"kinds": ["cls"], "pooled": "mean"}


def _layers(ctx, spec) -> LayerLabels:
    if spec == "auto":
        d = ctx.depth
        return LayerLabels({0, d // 2, d})
    return LayerLabels(k for k in ctx.layers(spec) if k >= 0)


def _maps(sub: pd.DataFrame, layer: int, kind: str, methods: list[str], color: str,
          components: int, seed: int, perplexity: float, tsne_iterations: int
          ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """The explained-variance rows and the per-method map coordinates of one (layer, kind)."""
    x = embedding_matrix(sub)
    ratios = explained_variance(x, components)
    variance = pd.DataFrame({"layer": layer, "kind": kind,
                             "component": np.arange(1, len(ratios) + 1),
                             "ratio": ratios, "cumulative": np.cumsum(ratios)})
    coords = []
    maps = embedding_maps(x, methods, seed=seed, perplexity=perplexity, max_iter=tsne_iterations)
    for method, xy in maps.items():
        coords.append(pd.DataFrame({
            "image_id": sub["image_id"].to_numpy(), "layer": layer, "kind": kind,
            "method": method, "panel": f"{kind} {method.upper()}",
            "x": xy[:, 0], "y": xy[:, 1], color: sub[color].to_numpy()}))
    return variance, coords


def run(ctx: RunContext,
        layers: Annotated[str | int | list, Layers("auto")] = "auto",
        kinds: Annotated[list, Items(Options("cls", "reg", "dist", "patch", "pooled"),
                                     min_len=1)] = ("cls", "pooled"),
        methods: Annotated[str | list, (Options("auto"),
                                        Items(Options("pca", "tsne", "umap"), min_len=1))
                           ] = "auto",
        color: Annotated[str, LabelColumn()] = "label",
        max_points: Annotated[int, Interval(int, 3, None)] = 600,
        perplexity: Annotated[float, Interval(float, 0, None, closed="neither")] = 30.0,
        components: Annotated[int, Interval(int, 1, None)] = 20,
        tsne_iterations: Annotated[int, Interval(int, 250, None)] = TSNE_MAX_ITER) -> Section:
    """2-D maps of the image representations per layer.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    layers : "auto", "all", int or list
        "auto" = the first, middle and last layer.
    kinds : list of "cls", "reg", "dist", "patch", "pooled"
        Token kinds mapped.
    methods : "auto" or list of "pca", "tsne", "umap"
        "auto" = PCA, t-SNE, and UMAP when umap-learn is installed.
    color : str
        Label column the points are coloured by.
    max_points : int
        Images mapped (a random subset of this many when there are more); a map needs 3.
    perplexity : float
        t-SNE perplexity (clipped to ``(n - 1) / 3``).
    components : int
        Principal components in the explained-variance figure.
    tsne_iterations : int
        t-SNE iterations in all, the 250 of early exaggeration included
        (:data:`probing.maps.TSNE_MAX_ITER`; 1000 = the paper's and scikit-learn's default).
    """
    layers = _layers(ctx, layers)
    methods = default_methods() if methods == "auto" else list(methods)
    kinds = [k for k in kinds if k == "pooled" or k in ctx.layout.kinds]
    labels = ctx.labels()
    require_label_column(labels.columns, color, "embedding_map.color")
    keep = labels["image_id"].to_numpy()
    if len(keep) > max_points:
        keep = np.sort(ctx.rng("embedding_map").choice(keep, max_points, replace=False))
    done: dict[tuple[int, int], tuple[pd.DataFrame, list[pd.DataFrame]]] = {}
    for li, (layer, frame) in enumerate(ctx.iter_layers(kinds, layers)):  # one layer at a time
        frame = frame[frame["image_id"].isin(keep)]
        for ki, kind in enumerate(kinds):
            sub = frame[frame["kind"] == kind]
            if len(sub) >= 3:
                done[ki, li] = _maps(sub, layer, kind, methods, color, components,
                                     ctx.seed, perplexity, tsne_iterations)
    variance = [done[key][0] for key in sorted(done)]
    coords = [c for key in sorted(done) for c in done[key][1]]
    coords = pd.concat(coords, ignore_index=True)
    variance = pd.concat(variance, ignore_index=True)
    figures = [Figure(
        "embedding_map_overview",
        plot_embedding_maps(coords, color),
        f"2-D maps of {', '.join(kinds)} embeddings (rows: kind and method) at layers "
        f"{', '.join(map(str, layers))} (columns), coloured by {color}; "
        f"{coords['image_id'].nunique()} images. Axes are unitless map coordinates.",
        coords)]
    for layer in layers:
        sub = coords[coords["layer"] == layer]
        figures.append(Figure(
            f"embedding_map_layer{layer}",
            plot_embedding_maps(sub, color, rows="kind", cols="method", width="single"),
            f"Layer {layer}: {', '.join(methods)} maps of {', '.join(kinds)} embeddings coloured "
            f"by {color}.", sub))
    figures.append(Figure(
        "explained_variance", plot_explained_variance(variance, components),
        "Cumulative fraction of variance explained by the first principal components, per layer "
        "(a layer whose vectors are all equal has no variance, and no line).",
        variance))
    numbers = {}
    for (kind, layer), g in variance.groupby(["kind", "layer"]):
        share = float(g["ratio"].head(2).sum(min_count=1))
        if np.isfinite(share):  # no key number where the vectors do not vary (undefined)
            numbers[f"{kind}_layer{layer}_pc1_2_variance"] = share
    first2 = variance[variance["component"] <= 2]  # NaN ratios kept (no variance)
    summary = first2.set_index(["kind", "layer", "component"])["ratio"].unstack("component") \
        .reindex(columns=[1, 2]).reset_index()  # components=1: pc2 is empty
    summary.columns = ["kind", "layer", "pc1", "pc2"]
    return Section(
        title=TITLE,
        text=(__doc__ or "").split("\n\n", 1)[1].strip(),
        figures=figures,
        tables=[Table("embedding_map_variance", summary,
                      "Fraction of variance on the first two principal components (empty where "
                      "a layer's vectors are all equal, as the CLS token's before the first "
                      "block: there is no variance to share out)")],
        numbers=numbers,
        findings=_findings(numbers),
        references=["van der Maaten & Hinton (2008), Visualizing Data using t-SNE",
                    "McInnes et al. (2018), UMAP"],
    )


_WHO = {"cls": "CLS", "pooled": "mean-pooled", "patch": "patch", "reg": "register",
        "dist": "distillation"}


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """How much of the first and last mapped layer's variance the first two PCs hold."""
    kind = next((k for k in ("cls", "pooled", "patch", "reg", "dist")
                 if any(key.startswith(f"{k}_layer") for key in numbers)), None)
    if kind is None:
        return []
    key = f"{kind}_layer{{}}_pc1_2_variance"
    # a layer whose vectors are all equal (CLS before the first block) has no key number
    layers = sorted(int(name[len(kind) + 6:].split("_")[0]) for name in numbers
                    if name.startswith(f"{kind}_layer"))
    if not layers:
        return []
    first, last = layers[0], layers[-1]
    if first == last:
        return [Finding("How low-dimensional are the embeddings?",
                        f"The first two principal components hold {{{key.format(last)}:.0%}} of "
                        f"the variance of {_WHO[kind]} embeddings at layer {last}.")]
    more = numbers[key.format(last)] > numbers[key.format(first)]
    return [Finding("How low-dimensional are the embeddings?",
                    f"The first two principal components hold {{{key.format(last)}:.0%}} of the "
                    f"variance of {_WHO[kind]} embeddings at layer {last}, against "
                    f"{{{key.format(first)}:.0%}} at layer {first}: the maps show "
                    f"{'more' if more else 'less'} of the embedding at the last layer.")]
