"""Head importance by ablation: how much the target logit and accuracy drop without each head.

Method (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?"): one head at a
time, and then all heads of a block at once, is removed from the model and the images are run
again. Two ablation values: zero (the head's output set to 0, Michel et al.'s mask) and mean
(the head's output replaced by its mean over the images, per token position), both applied to
the concatenated head outputs before the attention's output projection. Importance = the
intact model's target logit minus the ablated model's (positive: the head helps the target),
and the intact top-1 accuracy minus the ablated one, averaged over images. Read the heatmap
beside the mean attention distance section: it tells how far each head looks, this one how
much the decision needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np

from probing.attention import ALL_HEADS, head_ablation
from probing.constraints import Interval, Items, LabelColumn, Layers, Options
from probing.errors import ConfigError
from probing.findings import Finding
from probing.plots.ablation import plot_head_ablation
from probing.sections import Figure, Section, Table
from probing.targets import label_classes, model_class_names

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Head importance by ablation"
DESCRIPTION = "zero / mean ablation of every attention head: drop of the target logit and accuracy"
NEEDS: dict = {}

REFERENCES = [
    "Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better than One? (NeurIPS)",
    "Wang et al. (2023), Interpretability in the Wild (ICLR): mean ablation",
]


def run(ctx: RunContext,
        target: Annotated[str, LabelColumn(also=("prediction",))] = "label",
        layers: Annotated[str | int | list, Layers()] = "all",
        modes: Annotated[list, Items(Options("zero", "mean"), min_len=1)] = ("zero", "mean"),
        max_images: Annotated[int, Interval(int, 1, None)] = 128,
        whole_layer: bool = True) -> Section:
    """Zero and mean ablation of every head (and every block's attention).

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    target : str
        Label column that maps onto the head's classes (probing.targets.label_map: class
        indices, the model's class names, or a 1:1 integer code column such as shape_id), or
        "prediction" (the
        intact model's top-1).
    layers : "all", int or list
        Blocks whose heads are ablated (1-based).
    modes : list of "zero", "mean"
        Ablation values.
    max_images : int
        The first N images of the data (each ablation runs the model on all of them).
    whole_layer : bool
        Also ablate all heads of a block at once (column "all").
    """
    table = ctx.labels()
    if target != "prediction" and target not in table.columns:
        raise ConfigError(f"head_ablation.target={target!r} is not a label column (have "
                          f"{[c for c in table.columns if c != 'image_id']}); name one or use "
                          "'prediction'.")
    images, ids = ctx.images(max_images)
    y = None
    if target != "prediction":
        n_classes = int(getattr(ctx.model.model, "num_classes", 0))
        y = label_classes(table, target, n_classes, "head_ablation.target",
                          model_class_names(ctx.model), image_ids=ids)
    blocks = ctx.layers(layers).blocks
    if not blocks:
        raise ConfigError(f"head_ablation.layers={layers!r} holds no block; pick blocks 1.."
                          f"{ctx.depth}.")
    result = head_ablation(ctx.model.model, images, y, blocks, modes=list(modes),
                           whole_layer=whole_layer, batch_size=ctx.batch_size,
                           progress=False if ctx.quiet else None)
    intact = result[result["mode"] == "none"].set_index("metric")["value"]
    numbers = {"intact_accuracy": float(intact["accuracy"]),
               "intact_target_logit": float(intact["target_logit"]), "n_images": float(len(ids))}
    figures = []
    for metric, what in (("logit_drop", "target logit"), ("accuracy_drop", "accuracy")):
        part = result[result["metric"] == metric]
        heads = part[(part["head"] != ALL_HEADS) & (part["mode"] != "none")]
        for mode, g in heads.groupby("mode", sort=False):
            top = g.loc[g["value"].idxmax()]
            numbers[f"{mode}_max_{metric}"] = float(top["value"])
            numbers[f"{mode}_max_{metric}_block"] = float(top["layer"])
            numbers[f"{mode}_max_{metric}_head"] = float(top["head"])
        figures.append(Figure(
            f"head_ablation_{metric}",
            plot_head_ablation(result, metric),
            f"Drop of the {what} when one head (columns 0..H-1) or all heads of a block "
            f"(column 'all') are ablated, per block (rows); {' and '.join(modes)} ablation, "
            f"mean over {len(ids)} images. Red: the {what} falls without the head.",
            part))
    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Here: {len(ids)} images (the first of the data), target {target!r}, intact "
             f"accuracy {numbers['intact_accuracy']:.3f}; "
             f"{int((result['mode'] != 'none').sum() // 2)} ablations, each a forward pass "
             "from the ablated block on.")
    return Section(
        title=TITLE,
        text=text,
        figures=figures,
        tables=[Table("head_ablation", result,
                      "Drop of the target logit and of accuracy per block, head (-1 = all heads "
                      "of the block) and ablation mode, mean over images with a 95% t-interval; "
                      "mode 'none' rows hold the intact model's target logit and accuracy.")],
        numbers=(numbers := {k: v for k, v in numbers.items() if np.isfinite(v)}),
        findings=_findings(numbers),
        references=REFERENCES,
    )


#: An accuracy drop below this (a fraction of images) counts as "no single head is essential".
ESSENTIAL_DROP = 0.05


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """The head whose ablation costs most, and whether any single head is essential."""
    mode = next((m for m in ("mean", "zero") if f"{m}_max_logit_drop" in numbers), None)
    if mode is None:
        return []
    acc = f"{mode}_max_accuracy_drop"
    tail = ""
    if acc in numbers:
        word = ("no single head is essential" if numbers[acc] < ESSENTIAL_DROP else
                "some heads are essential")
        tail = (f"; the largest accuracy drop of one head is {{{acc}:.1%}} (intact "
                f"{{intact_accuracy:.1%}}): {word}")
    return [Finding("Which heads does the decision need?",
                    f"{mode.capitalize()}-ablating head {{{mode}_max_logit_drop_head}} of block "
                    f"{{{mode}_max_logit_drop_block}} lowers the target logit most, by "
                    f"{{{mode}_max_logit_drop:.2f}} (intact {{intact_target_logit:.2f}}){tail}.")]
