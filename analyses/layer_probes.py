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
the same probe, folds and images on the raw input pixels (the model's preprocessed input,
flattened; area-averaged down to at most 4096 values per image when larger), drawn as a flat
line because it has no layer: what needs no network at all; and, optionally, the online-code
minimum description length of the labels in bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd
import torch

from probing.constraints import Interval, Is, Items, LabelColumn, Layers, Options
from probing.errors import ConfigError
from probing.frames import POSITION_COLUMNS, require_label_column, vectors_to_arrow
from probing.plots.probes import plot_probe_layers
from probing.probes import probe_layers
from probing.sections import Figure, Finding, Section, Table, slug
from probing.selection import LayerLabels

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
#: Largest number of raw-pixel features per image; larger inputs are area-averaged down.
MAX_PIXEL_FEATURES = 4096


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


def _pixel_features(images, max_features: int = MAX_PIXEL_FEATURES) -> np.ndarray:
    """``(n, C * h * w)`` float32 flattened input pixels, area-averaged (adaptive average
    pooling, aspect kept) to the largest ``h x w`` with ``C * h * w <= max_features``."""
    x = torch.as_tensor(images, dtype=torch.float32)
    c, h, w = x.shape[1:]
    scale = min(1.0, float(np.sqrt(max_features / (c * h * w))))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    if size != (h, w):
        x = torch.nn.functional.adaptive_avg_pool2d(x, size)
    return x.reshape(len(x), -1).numpy()


def _pixel_rows(ctx, probed, target, kinds, layers, n_images, params) -> pd.DataFrame:
    """``raw_pixels`` rows: the task probe on the input pixels of the probed images, with the
    same probe, seed and folds (folds depend only on the set of image ids and the seed), one
    copy per layer (it has no layer: a flat line) under the first image-level kind."""
    images, img_ids = ctx.images(image_ids=probed)
    keep = np.isin(img_ids, probed)
    X = _pixel_features(images[torch.as_tensor(keep)])
    labels = ctx.labels()
    pixels = pd.DataFrame({"image_id": img_ids[keep], "layer": 0, "kind": "pooled", "token": -1})
    pixels = pixels.merge(labels, on="image_id", how="left")
    pixels["emb"] = pd.arrays.ArrowExtensionArray(vectors_to_arrow(X))
    row = probe_layers(pixels, target, "pooled", seed=ctx.seed, control=False,
                       **{k: v for k, v in params.items() if k not in ("control_by", "mdl")})
    row = row[row["probe"] == "task"].assign(probe="raw_pixels")
    kind = next(k for k in kinds if k != "patch")  # one copy: the same under every kind
    return pd.concat([row.assign(layer=layer, kind=kind) for layer in layers],
                     ignore_index=True)


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
        solver: Annotated[str | dict, (Options("auto", "logistic", "ridge"), Is(dict))] = "auto",
        alpha: Annotated[float, Interval(float, 0, None)] = 1.0,
        C: Annotated[float, Interval(float, 0, None, closed="neither")] = 1.0,
        control_by: Annotated[str, Options("image", "label")] = "image",
        random_init: bool = True,
        raw_pixels: bool = True,
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
    solver : "auto", "logistic", "ridge" or a table per kind
        For every kind, or per kind (``{cls = "logistic", patch = "ridge"}``; kinds left out
        are "auto"). "ridge" is closed form, much faster on many rows; "auto" = logistic for
        cls / pooled, ridge for per-patch probes over many rows
        (:func:`probing.probes.resolve_solver`).
    alpha : float
        Ridge penalty.
    C : float
        Inverse logistic penalty.
    control_by : "image" or "label"
        Control task type.
    random_init : bool
        Also probe a randomly initialised copy of the architecture.
    raw_pixels : bool
        Also probe the raw input pixels (image-level target only).
    mdl : bool
        Add online-code MDL rows (classification only).
    max_images : int
        Probe N of the images (0 = all), chosen as every "n images" parameter is (the spec's
        [data] selection, stratified by default).
    """
    kinds, notes = _check(ctx, kinds, target, patch_target, max_images)
    layers = ctx.layers(layers)
    # all stored images, or max_images of them chosen as every "n images" is (stratified)
    ids = ctx.select_images(None if max_images == 0 else int(max_images))
    n_images = len(ids)
    stored = ["cls"] if "cls" in kinds else []
    stored += ["pooled"] if "pooled" in kinds else []
    stored += ["patch"] if "patch" in kinds else []
    if "patch" in kinds and "patch" not in ctx.store.kinds():
        raise ConfigError("layer_probes.kinds has 'patch' but the store holds no patch tokens; "
                          "add 'patch' to [capture] kinds.")

    def frame(layer: int) -> pd.DataFrame:  # one layer's rows at a time (flat in layers)
        return _subset(ctx.tokens(stored, LayerLabels([layer])), ids)

    random_frame = None
    if random_init:
        model = ctx.random_init_model()
        extract_kinds = [k for k in ("cls", "patch") if k in stored] or ["pooled"]
        random_store = ctx.extract_store(model, kinds=extract_kinds, layers=layers,
                                         pooled="mean", image_ids=ids)

        def random_frame(layer: int) -> pd.DataFrame:  # the control, one layer at a time
            return random_store.read(layers=LayerLabels([layer]))
    params = dict(cv=cv, solver=solver, alpha=alpha, C=C, control_by=control_by, mdl=mdl,
                  progress=False if ctx.quiet else None)
    by_target: dict[str, list[str]] = {}  # one sweep per target: each layer read once
    for kind in kinds:
        by_target.setdefault((patch_target or target) if kind == "patch" else target,
                             []).append(kind)
    result = pd.concat([_probe(ctx, frame, random_frame, group, name, layers, params)
                        for name, group in by_target.items()], ignore_index=True)
    order = result["kind"].map({k: i for i, k in enumerate(kinds)}).to_numpy()
    result = result.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    if raw_pixels and set(kinds) - {"patch"}:
        result = pd.concat([result, _pixel_rows(ctx, ids, target, kinds, layers, n_images,
                                                params)], ignore_index=True)

    figures = []
    for name, part in result.groupby("target", sort=False):
        probed = ", ".join(_KIND_NAMES[k] for k in part["kind"].unique())
        figures.append(Figure(
            f"layer_probes_{slug(name)}",
            plot_probe_layers(part, title=f"probing {name!r}"),
            f"Held-out score of linear probes for {name!r} from {probed} vectors vs layer "
            f"(line style = vector kind), {cv}-fold grouped CV on {n_images} images; bands are "
            "95% t-intervals across folds. Colours: task probe, control task (random label per "
            "image), the same probe on a random-initialised model, on the raw input pixels "
            "(flat: no layer), majority class.",
            part))
    if random_init:
        notes.append(f"Random-init copy: {ctx.random_init_model().name}.")
    if (result["probe"] == "raw_pixels").any():
        pix = result[result["probe"] == "raw_pixels"].iloc[0]
        notes.append(f"Raw pixels: {pix['value']:.3f} [{pix['ci_low']:.3f}, "
                     f"{pix['ci_high']:.3f}] on {int(pix['n'])} images.")
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    solvers = ", ".join(f"{_KIND_NAMES[k]} {s}" for k, s in
                        result.groupby("kind", sort=False)["solver"].first().items())
    text += (f" Here: {n_images} images, {cv} folds, solvers: {solvers}; control by {control_by}. "
             + " ".join(notes))
    return Section(
        title=TITLE,
        text=text.strip(),
        figures=figures,
        tables=[Table("layer_probes", result,
                      "Probe scores per layer, kind and probe (task, majority, control with its "
                      "selectivity, random_init, raw_pixels (no layer: the same row repeated at "
                      "every layer, under the first image-level kind), mdl): "
                      "mean over folds and 95% t-interval.")],
        numbers=(numbers := _numbers(result)),
        references=REFERENCES,
        findings=_findings(numbers, target), labels=_labels(numbers),
    )


_WHO = {"cls": "the CLS token", "pooled": "the mean patch token", "patch": "patch tokens"}


def _findings(numbers: dict[str, float], target: str) -> list[Finding]:
    """Which layer decodes the target best, and how much of it the probe alone explains."""
    kind = next((k for k in ("cls", "pooled", "patch") if f"{k}_best_layer" in numbers), None)
    if kind is None:
        return []
    metric = "accuracy" if f"{kind}_best_accuracy" in numbers else "r2"
    spec = ".1%" if metric == "accuracy" else ".3f"
    out = [Finding(f"Which layers encode the {target}?",
                   f"A linear probe on {_WHO[kind]} decodes the {target} best at layer "
                   f"{{{kind}_best_layer}} ({metric} {{{kind}_best_{metric}:{spec}}}); the last "
                   f"layer gives {{{kind}_last_{metric}:{spec}}}.")]
    control, rand = f"{kind}_last_control_{metric}", f"{kind}_last_random_init_{metric}"
    parts = [f"{{{key}:{spec}}} {name}" for key, name in
             ((control, "on a control task of random labels"),
              (rand, "on the random-initialised model")) if key in numbers]
    if parts:
        task = numbers[f"{kind}_last_{metric}"]
        share = max(numbers[k] for k in (control, rand) if k in numbers)
        word = "mostly the trained features" if share < 0.8 * task else "largely the probe itself"
        out.append(Finding("How much of it is the probe?",
                           f"At the last layer the probe reaches {{{kind}_last_{metric}:{spec}}}"
                           f", against {' and '.join(parts)}: {word}."))
    return out


def _labels(numbers: dict[str, float]) -> dict[str, str]:
    """Names for people (``cls_last_control_accuracy``: "last-layer CLS control probe
    accuracy")."""
    out = {}
    for key in numbers:
        kind, where, rest = key.split("_", 2)
        who = {"cls": "CLS", "pooled": "pooled"}.get(kind, kind)
        if where == "best" and rest == "layer":
            out[key] = f"layer of the best {who} probe"
        elif rest == "selectivity":
            out[key] = f"last-layer {who} probe selectivity (task - control)"
        else:
            *probe, metric = rest.rsplit("_", 1) if rest not in ("accuracy", "r2") else [rest]
            probe_name = " ".join(p.replace("_", "-") for p in probe)
            out[key] = (f"{'last' if where == 'last' else 'best'}-layer {who} "
                        f"{probe_name + ' ' if probe_name else ''}probe {metric}")
    return out
