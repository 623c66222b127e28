"""Representation similarity across layers: linear CKA, CLS-to-patch cosine and mutual k-NN.

Method: each layer represents the n images by their CLS vectors and, separately, by the mean of
their patch vectors. Linear CKA (Kornblith et al. 2019; debiased with the unbiased HSIC estimator
of Song et al. 2012 when asked) is computed between every pair of layers, in the feature-space
form when n exceeds the width, giving a layers x layers matrix that is 1 on the diagonal and
symmetric. The cosine similarity of the CLS vector to each patch vector, averaged over patches
and then over images (Student-t interval across images), shows how far CLS moves away from or
towards the patch tokens. Mutual k-nearest-neighbour overlap (Huh et al. 2024; cosine neighbours,
self excluded) between consecutive layers measures how much of each image's neighbourhood a
block keeps (chance is k / (n - 1)). As a second-model comparison, the same images pass through
a randomly initialised copy of the architecture and each layer is compared with the trained
model's same layer by CKA and mutual k-NN: what the architecture alone shares with training.
CKA intervals are percentile-bootstrap intervals over images (Efron & Tibshirani 1993): the
images are resampled with replacement and every layer pair's CKA recomputed (Gram form, all
resamples at once; the same resamples for every pair).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, Layers, Options
from probing.errors import ConfigError
from probing.plots.similarity import plot_cka_heatmap, plot_similarity_vs_layer
from probing.sections import Figure, Finding, Section, Table
from probing.similarity import cls_patch_cosine, layer_mutual_knn, layer_similarity
from probing.stats import bootstrap_cka
from probing.views import FrameViews, align_rows

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Representation similarity across layers (CKA)"
DESCRIPTION = "layer x layer linear CKA, CLS-patch cosine and mutual k-NN, vs a random-init copy"
NEEDS = {"kinds": ["cls", "patch"], "pooled": "mean"}

REFERENCES = [
    "Kornblith et al. (2019), Similarity of Neural Network Representations Revisited",
    "Song et al. (2012), Feature Selection via Dependence Maximization (unbiased HSIC)",
    "Huh et al. (2024), The Platonic Representation Hypothesis (mutual k-NN)",
]
_KIND_NAMES = {"cls": "CLS", "pooled": "mean patch"}


def _kinds(ctx, kinds) -> tuple[list[str], list[str]]:
    bad = [k for k in kinds if k not in _KIND_NAMES]
    if bad or not kinds:
        raise ConfigError(f"cka.kinds={list(kinds)!r} is invalid; pick from 'cls', 'pooled'.")
    kinds = list(dict.fromkeys(kinds))
    if ctx.layout.has_cls:
        return kinds, []
    note = "The model has no CLS token: CLS similarities and the CLS-patch cosine are skipped."
    return [k for k in kinds if k != "cls"] or ["pooled"], [note]


def _matrices(frame: pd.DataFrame, kind: str, layers) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Per-layer ``(n, d)`` matrices of one kind, in the row order ``layer_similarity`` uses."""
    views = FrameViews(frame)
    got = [views.get(layer, kind) for layer in views.select(layers)]
    return [m for m, _ in got], got[0][1]


def _with_intervals(cka: pd.DataFrame, frame, other, kind, layers, n_boot, seed,
                    debiased) -> pd.DataFrame:
    """``cka`` (a ``layer_similarity`` frame) with bootstrap ``ci_low``/``ci_high`` columns
    (NaN for debiased CKA or ``n_boot = 0``)."""
    if debiased or n_boot == 0:
        return cka.assign(ci_low=np.nan, ci_high=np.nan, n_boot=0)
    mats, meta = _matrices(frame, kind, layers)
    mats_b = None
    if other is not None:
        mats_b, meta_b = _matrices(other, kind, layers)
        here, there = align_rows(meta, meta_b)
        mats, mats_b = [m[here] for m in mats], [m[there] for m in mats_b]
    try:
        low, high = bootstrap_cka(mats, mats_b, n_boot=n_boot, seed=seed)
    except ConfigError as exc:  # too many images for the Gram form: no intervals, said why
        logging.getLogger("probing").warning("cka: no bootstrap intervals: %s", exc)
        return cka.assign(ci_low=np.nan, ci_high=np.nan, n_boot=0)
    return cka.assign(ci_low=low.ravel(), ci_high=high.ravel(), n_boot=n_boot)


def _consecutive(frame: pd.DataFrame, layers: list[int]) -> pd.DataFrame:
    """Rows of a layer x layer frame pairing each layer with the previous one (x = later layer)."""
    pairs = pd.DataFrame({"layer_a": layers[:-1], "layer_b": layers[1:]})
    out = pairs.merge(frame, on=["layer_a", "layer_b"], how="left")
    return out.rename(columns={"layer_b": "layer"})


def _same_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of a two-model layer x layer frame comparing a layer with the same layer."""
    out = frame[frame["layer_a"] == frame["layer_b"]].drop(columns="layer_b")
    return out.rename(columns={"layer_a": "layer"})


def _curve(part: pd.DataFrame, key: str, label: str) -> pd.DataFrame:
    """A per-layer curve for the similarity figure: ``layer, value[, ci_low, ci_high], n``."""
    cols = [c for c in ("layer", "value", "ci_low", "ci_high", "n") if c in part]
    return part[cols].assign(measure=label, key=key)


def _numbers(cka: pd.DataFrame, curves: pd.DataFrame, layers: list[int], k: int,
             n: int) -> dict[str, float]:
    """Headline numbers: CKA first vs last layer and between neighbours; last-layer curves."""
    first, last = layers[0], layers[-1]
    out: dict[str, float] = {"mutual_knn_chance": k / (n - 1)}
    for kind, part in cka.groupby("kind", sort=False):
        grid = part.set_index(["layer_a", "layer_b"])["value"]
        out[f"cka_{kind}_first_last"] = grid.get((first, last), np.nan)
        out[f"cka_{kind}_consecutive_mean"] = grid.reindex(
            list(zip(layers[:-1], layers[1:]))).mean()
    for key, part in curves.groupby("key", sort=False):
        values = part.set_index("layer")["value"]
        out[f"{key}_first"] = values.dropna().iloc[0] if values.notna().any() else np.nan
        out[f"{key}_last"] = values.get(last, np.nan)
    return {name: float(v) for name, v in out.items() if np.isfinite(float(v))}


def run(ctx: RunContext,
        kinds: Annotated[list, Items(Options("cls", "pooled"), min_len=1)] = ("cls", "pooled"),
        layers: Annotated[str | int | list, Layers()] = "all",
        debiased: bool = False,
        k: Annotated[int, Interval(int, 1, None)] = 10,
        random_init: bool = True,
        max_images: Annotated[int, Interval(int, 0, None)] = 0,
        n_boot: Annotated[int, Interval(int, 0, None)] = 200) -> Section:
    """CKA and mutual k-NN between layers, and against a random-init copy.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    kinds : list of "cls", "pooled"
        Image representations: the CLS vector, the mean of the patch vectors.
    layers : "all", int or list
        Layers compared.
    debiased : bool
        Debiased CKA (unbiased HSIC) instead of the biased estimator.
    k : int
        Neighbours for mutual k-NN (below the number of images).
    random_init : bool
        Compare with a randomly initialised copy of the architecture.
    max_images : int
        Use N of the images (0 = all), chosen as every "n images" parameter is (the spec's
        [data] selection, stratified by default).
    n_boot : int
        Bootstrap resamples of the images for the CKA intervals (0 = none; biased CKA only).
    """
    kinds, notes = _kinds(ctx, kinds)
    if max_images < 0:
        raise ConfigError(f"cka.max_images={max_images} is negative; use 0 for all.")
    layers = ctx.layers(layers)
    # all stored images, or max_images of them chosen as every "n images" is (stratified)
    keep = ctx.select_images(None if max_images == 0 else int(max_images))
    n_images = len(keep)
    if not 1 <= k < n_images:
        raise ConfigError(f"cka.k={k} must be at least 1 and below the number of images "
                          f"({n_images}); lower k.")
    images = ["cls", "pooled"] if "cls" in kinds else ["pooled"]
    frame = ctx.tokens(images, layers)
    frame = frame[frame["image_id"].isin(keep)].reset_index(drop=True)
    random_frame = None
    if random_init:
        # the control store layer_probes reads too (same model, images, layers and capture):
        # one extraction of the random-init copy serves both analyses
        random_frame = ctx.extract_store(ctx.random_init_model(), kinds=images[:1],
                                         layers=layers, pooled="mean", image_ids=keep).read()

    cka, knn, curves, cross = [], [], [], []
    if ctx.layout.has_cls:
        cosine = pd.concat(  # one layer's patch rows at a time (flat in layers)
            [cls_patch_cosine(tokens[tokens["image_id"].isin(keep)].reset_index(drop=True))
             for _, tokens in ctx.iter_layers(["cls", "patch"], layers)], ignore_index=True)
        curves.append(_curve(cosine, "cls_patch_cosine", "cos(CLS, patch)"))
    for kind in kinds:
        name = _KIND_NAMES[kind]
        cka.append(_with_intervals(
            layer_similarity(frame, kind=kind, layers=layers, debiased=debiased),
            frame, None, kind, layers, n_boot, ctx.seed, debiased).assign(kind=kind))
        knn.append(layer_mutual_knn(frame, kind=kind, k=k, layers=layers).assign(kind=kind))
        curves.append(_curve(_consecutive(knn[-1], layers),
                             f"mutual_knn_{kind}_consecutive",
                             f"k-NN overlap with previous layer ({name})"))
        if random_frame is not None:
            c = _with_intervals(
                layer_similarity(frame, random_frame, kind=kind, layers=layers,
                                 debiased=debiased),
                frame, random_frame, kind, layers, n_boot, ctx.seed, debiased).assign(kind=kind)
            m = layer_mutual_knn(frame, random_frame, kind=kind, k=k, layers=layers)
            cross.append(pd.concat([c, m.assign(kind=kind)], ignore_index=True))
            curves.append(_curve(_same_layer(c), f"cka_{kind}_vs_random_init",
                                 f"CKA vs random init ({name})"))
            curves.append(_curve(_same_layer(m),
                                 f"mutual_knn_{kind}_vs_random_init",
                                 f"k-NN overlap vs random init ({name})"))
    cka, knn, curves = (pd.concat(x, ignore_index=True) for x in (cka, knn, curves))

    constant = sorted({(kind, int(a)) for kind, a, b, v in
                       cka[["kind", "layer_a", "layer_b", "value"]].itertuples(index=False)
                       if a == b and not np.isfinite(v)})
    if constant:
        notes.append("Blank cells: representations that are the same for every image (CKA and "
                     "k-NN undefined): " + ", ".join(f"{_KIND_NAMES[kd]} at layer {a}"
                                                     for kd, a in constant) + ".")
    estimator = "debiased" if debiased else "biased"
    if not debiased and n_boot and (cka["n_boot"] == 0).any():
        notes.append("No CKA intervals: the images' Gram matrices exceed the bootstrap's "
                     "memory limit; lower max_images.")
    elif debiased or n_boot == 0:
        notes.append("No CKA intervals: " + ("the bootstrap is for biased CKA only (a resample "
                                             "repeats images, which the unbiased estimator "
                                             "does not allow for)." if debiased else
                                             "n_boot = 0."))
    else:
        notes.append(f"CKA intervals: 95% percentile bootstrap, {n_boot} resamples of the "
                     f"images (seed {ctx.seed}).")
    figures = [
        Figure(f"cka_heatmap_{kind}",
               plot_cka_heatmap(part, title=f"{_KIND_NAMES[kind]} vectors"),
               f"Linear CKA ({estimator}) between the {_KIND_NAMES[kind]} representations of "
               f"{n_images} images at every pair of layers (0 = block input, k = output of "
               "block k); 1 = identical up to rotation and scale.", part)
        for kind, part in cka.groupby("kind", sort=False)
    ]
    within = curves[~curves["key"].str.endswith("_vs_random_init")]
    figures.append(Figure(
        "similarity_vs_layer",
        plot_similarity_vs_layer(within, group="measure", ylabel="cosine or k-NN overlap"),
        f"Per layer: mean cosine of CLS to the patch tokens (band: 95% t-interval over "
        f"images) and the fraction of each image's {k} nearest neighbours shared with the "
        f"previous layer (chance {k / (n_images - 1):.3f}).", within))
    versus = curves[curves["key"].str.endswith("_vs_random_init")]
    if not versus.empty:
        figures.append(Figure(
            "similarity_vs_random_init",
            plot_similarity_vs_layer(versus, group="measure", ylabel="CKA or k-NN overlap"),
            f"Trained model vs a random-initialised copy, layer by layer: linear CKA "
            f"({estimator}; band: 95% bootstrap interval over images, {n_boot} resamples) and "
            f"mutual {k}-NN overlap of the same images (chance {k / (n_images - 1):.3f}).",
            versus))
    tables = [
        Table("cka_layers", cka, f"Linear CKA ({estimator}) between layers, per representation, "
              "with its 95% percentile-bootstrap interval over images (ci_low, ci_high)."),
        Table("mutual_knn_layers", knn, f"Mutual {k}-NN overlap between layers."),
    ]
    if cross:
        tables.append(Table(
            "cka_vs_random_init", pd.concat(cross, ignore_index=True),
            "Trained model (layer_a) vs random-initialised copy (layer_b): CKA and mutual k-NN."))
        notes.append(f"Random-init copy: {ctx.random_init_model().name}.")
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += f" Here: {n_images} images, k = {k}, {estimator} CKA. " + " ".join(notes)
    return Section(
        title=TITLE,
        text=text.strip(),
        figures=figures,
        tables=tables,
        numbers=(numbers := _numbers(cka, curves, layers, k, n_images)),
        references=REFERENCES,
        findings=_findings(numbers),
    )


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """How far training moved the representation from the random-initialised copy's."""
    kind = next((k for k in ("cls", "pooled") if f"cka_{k}_vs_random_init_last" in numbers), None)
    if kind is None:
        return []
    last = numbers[f"cka_{kind}_vs_random_init_last"]
    word = ("the trained model's last layer shares little with random features" if last < 0.5
            else "the last layer is still close to random features")
    return [Finding("How different is the trained model from a random-initialised one?",
                    f"Linear CKA between the trained and the random-initialised "
                    f"{'CLS' if kind == 'cls' else 'pooled'} representations is "
                    f"{{cka_{kind}_vs_random_init_first:.2f}} at the first "
                    f"layer and {{cka_{kind}_vs_random_init_last:.2f}} at the last: {word}.")]
