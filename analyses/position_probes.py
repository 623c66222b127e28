"""How much absolute position do patch tokens carry, layer by layer? Linear position probes.

Method (linear probes, Alain & Bengio 2016): at every layer, each patch token is a sample and
its place on the grid the target. A ridge regression predicts the (row, col) pair (held-out R²,
averaged over the two outputs) and a one-vs-rest ridge classifier predicts the grid cell
(row * cols + col; held-out accuracy, chance 1 / number of cells). Folds are grouped by image,
so tokens of one image never sit on both sides of a split; features are standardised inside
each fold; the band is a t-interval across folds. To keep the cost down, a seeded random subset
of patches of each image is used. The random-init control (the same probes on a randomly
initialised copy of the architecture, same images and tokens) separates position learned in
training from position that any network of this shape carries (e.g. through its random
positional table). Layer 0 is the input to the first block (patch projection plus the
positional encoding); layer k is the output of block k. A learned table need not be a linear
function of (row, col), and patch content adds variance a linear read-out cannot ignore: a probe
can tell the cells apart (high accuracy) while the R² of (row, col) stays moderate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Layers
from probing.errors import ConfigError
from probing.plots.probes import plot_probe_layers
from probing.probes import probe_layers
from probing.sections import Figure, Finding, Section, Table
from probing.selection import LayerLabels

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Position probes"
DESCRIPTION = "ridge probes of each patch token's (row, col) and grid cell per layer"
NEEDS = {"kinds": ["patch"]}


def _sample(frame: pd.DataFrame, ids: np.ndarray, picked: np.ndarray, cols: int
            ) -> pd.DataFrame:
    """Patch rows of images ``ids`` whose cell is picked, with the grid-cell target ``cell``.

    ``picked`` is ``(len(ids), rows * cols)`` bool: which cells of each image to keep.
    """
    image = pd.Index(ids).get_indexer(frame["image_id"].to_numpy())
    cell = frame["row"].to_numpy(dtype=np.int64) * cols + frame["col"].to_numpy(dtype=np.int64)
    keep = image >= 0
    keep[keep] = picked[image[keep], cell[keep]]
    out = frame[keep].reset_index(drop=True)
    out["cell"] = cell[keep]
    return out


def run(ctx: RunContext,
        layers: Annotated[str | int | list, Layers()] = "all",
        max_images: Annotated[int, Interval(int, 2, None)] = 96,
        patches_per_image: Annotated[int, Interval(int, 0, None)] = 32,
        cv: Annotated[int, Interval(int, 2, None)] = 5,
        alpha: Annotated[float, Interval(float, 0, None)] = 1.0,
        random_init: bool = True) -> Section:
    """Ridge probes of each patch token's grid position per layer.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    layers : "all", int or list
        Layers probed.
    max_images : int
        Images probed (at least ``cv``), chosen by the spec's ``[data] selection``.
    patches_per_image : int
        Random patches per image; 0 = all.
    cv : int
        Cross-validation folds (grouped by image).
    alpha : float
        Ridge penalty on standardised features.
    random_init : bool
        Add the random-init control.
    """
    layout = ctx.layout
    if int(max_images) < cv:
        raise ConfigError(f"position_probes.max_images={max_images!r} must be at least cv={cv} "
                          "(folds are grouped by image); e.g. 96.")
    if not 0 <= int(patches_per_image):
        raise ConfigError(f"position_probes.patches_per_image={patches_per_image!r} must be >= 0 "
                          "(0 = all patches).")
    chosen = LayerLabels(k for k in ctx.layers(layers) if k >= 0)
    ids = ctx.select_images(int(max_images))
    n_cells, per = layout.num_patches, int(patches_per_image)
    picked = np.ones((len(ids), n_cells), dtype=bool)
    if 0 < per < n_cells:
        rng = ctx.rng("position_probes")
        picked = rng.permuted(np.arange(n_cells)[None].repeat(len(ids), 0), axis=1) < per

    def frame(layer: int) -> pd.DataFrame:  # one layer's rows of the chosen images
        return _sample(ctx.tokens("patch", LayerLabels([layer]), image_ids=ids, labels=False),
                       ids, picked, layout.cols)

    random = None
    if random_init:
        rand = ctx.extract_store(ctx.random_init_model(), kinds=("patch",), layers=chosen,
                                 image_ids=ids)

        def random(layer: int) -> pd.DataFrame:  # the control, one layer at a time
            return _sample(rand.read(layers=LayerLabels([layer]), labels=False,
                                     filters=[("image_id", "in", ids.tolist())]),
                           ids, picked, layout.cols)
    settings = dict(kind="patch", cv=int(cv), alpha=float(alpha), seed=ctx.seed, control=False)
    probes = {"regression": (["row", "col"], {}), "classification": ("cell", {"solver": "ridge"})}
    parts: dict[str, list[pd.DataFrame]] = {task: [] for task in probes}
    for layer in chosen:  # each layer read once for both probes, one layer held at a time
        task_rows = frame(layer)
        random_rows = None if random is None else random(layer)
        for task, (target, extra) in probes.items():
            # the folds depend only on the images, the same at every layer: a sweep of one
            # layer gives that layer's rows of the sweep over all layers
            parts[task].append(probe_layers(
                lambda _, rows=task_rows: rows, target, task=task, layers=LayerLabels([layer]),
                random_frame=None if random_rows is None else (lambda _, rows=random_rows: rows),
                **settings, **extra))
    result = pd.concat([p for task in probes for p in parts[task]], ignore_index=True)
    result["target"] = result["target"].replace({"row,col": "(row, col)", "cell": "grid cell"})

    def score(probe: str, metric: str, layer: int) -> float:
        hit = result[(result["probe"] == probe) & (result["metric"] == metric)
                     & (result["layer"] == layer)]
        return float(hit["value"].iloc[0])

    first, last = chosen[0], chosen[-1]
    numbers = {f"r2_layer{first}": score("task", "r2", first),
               f"r2_layer{last}": score("task", "r2", last),
               f"cell_accuracy_layer{first}": score("task", "accuracy", first),
               f"cell_accuracy_layer{last}": score("task", "accuracy", last),
               "cell_chance": 1.0 / layout.num_patches}
    if random_init:
        numbers[f"random_init_r2_layer{first}"] = score("random_init", "r2", first)
        numbers[f"random_init_r2_layer{last}"] = score("random_init", "r2", last)
    n_rows = int(result["n"].iloc[0])
    shown = {"r2": "(row, col) regression", "accuracy": "grid-cell classification"}
    drawn = {m: plot_probe_layers(result[result["metric"] == m], m,
                                  ("task", "random_init", "majority"), title=t)
             for m, t in shown.items()}
    return Section(
        title=TITLE,
        text=(__doc__ or "").split("\n\n", 1)[1].strip() + (
            f" Here: {n_rows} patch tokens of {len(ids)} images on the {layout.rows}x"
            f"{layout.cols} grid, {cv} folds; R² of (row, col) {numbers[f'r2_layer{first}']:.3f} "
            f"at layer {first} and {numbers[f'r2_layer{last}']:.3f} at layer {last}; grid-cell "
            f"accuracy {numbers[f'cell_accuracy_layer{first}']:.3f} and "
            f"{numbers[f'cell_accuracy_layer{last}']:.3f} (chance {numbers['cell_chance']:.3f})."
            + ("" if random_init else " The random-init control was switched off.")),
        figures=[
            Figure("position_probes_r2",
                   drawn["r2"],
                   "Held-out R² (uniform over row and column) of a ridge probe predicting each "
                   "patch token's grid position, per layer; band: t-interval over grouped folds. "
                   "Majority = training-fold mean.", result[result["metric"] == "r2"]),
            Figure("position_probes_cell",
                   drawn["accuracy"],
                   f"Held-out accuracy of a ridge classifier of the grid cell (chance "
                   f"{numbers['cell_chance']:.3f}), per layer.",
                   result[result["metric"] == "accuracy"]),
        ],
        tables=[Table("position_probes", result,
                      "Position probe scores per layer (mean over folds and t-interval).")],
        numbers=numbers,
        findings=_findings(first, last),
        references=["Alain & Bengio (2016), Understanding intermediate layers using linear "
                    "classifier probes",
                    "Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT)"],
    )


def _findings(first: int, last: int) -> list[Finding]:
    """How well a patch token's grid cell can be read from it, early and late."""
    return [Finding("Do the patch tokens know where they are?",
                    f"A linear probe reads a patch token's grid cell with "
                    f"{{cell_accuracy_layer{first}:.0%}} accuracy at layer {first} and "
                    f"{{cell_accuracy_layer{last}:.0%}} at layer {last} (chance "
                    f"{{cell_chance:.1%}}).")]
