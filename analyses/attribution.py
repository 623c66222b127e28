"""Attribution: which patches explain the prediction, and is the explanation faithful?

Method: for a few images and the class the model predicts, four explanations over the patch
grid: attention rollout (Abnar & Zuidema 2020), gradient rollout (Chefer et al. 2021),
Integrated Gradients (Sundararajan et al. 2017; pixel attributions summed per patch, with
captum's convergence delta ``sum(attributions) - (F(x) - F(x'))`` per image) and occlusion
(Zeiler & Fergus 2014; one patch at a time replaced by the baseline). Faithfulness (Petsiuk
et al. 2018): patches are deleted from the image (replaced by the deletion baseline), or
inserted into the insertion baseline, most relevant first, tracking the predicted class's
probability; a faithful map gives a low deletion and a high insertion area under the curve,
and must beat a random patch order. Sanity check (Adebayo et al. 2018): the model's parameters
are randomised cumulatively from the head down to the embedding, the maps recomputed and
compared with the intact model's by Spearman rank correlation of absolute values; a method
whose maps still correlate at or above the threshold once the whole model is random does not
depend on what the model learned, and is flagged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd
import torch

from probing.attribution import (
    ATTENTION_METHODS,
    CAPTUM_METHODS,
    attribute,
    cascading_randomization,
    faithfulness_curves,
    make_baseline,
)
from probing.constraints import Interval, Items, Options
from probing.errors import ConfigError
from probing.imageselect import IMAGE_IDS
from probing.plots.attribution import plot_faithfulness, plot_method_maps, plot_sanity
from probing.sections import Figure, Section, Table

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Attribution, faithfulness and sanity checks"
DESCRIPTION = "Rollout, gradient rollout, IG and occlusion maps; deletion/insertion; sanity check"
_METHOD = Options(*CAPTUM_METHODS, *ATTENTION_METHODS)
_BASELINE = Options("zero", "mean", "blur")
NEEDS = {"attention": False}  # maps come from the model itself, not the store


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: unchanged). The demo model's small batches are
    overhead-bound: on 2 shared cores one thread took 3-6 s where two took 3-33 s."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _delta_table(model, x, ig: pd.DataFrame, baseline: str, layout) -> pd.DataFrame:
    """IG convergence delta per image beside ``F(x) - F(x')`` (the logit difference it is
    relative to)."""
    per_image = ig.drop_duplicates("image_id")[["image_id", "target", "delta"]]
    t = torch.tensor(per_image["target"].to_numpy(dtype=np.int64))[:, None]
    with torch.no_grad():
        fx = model(x).gather(1, t)[:, 0]
        fb = model(make_baseline(x, layout, baseline)).gather(1, t)[:, 0]
    gap = (fx - fb).double().numpy()
    return per_image.assign(logit_gap=gap, relative_delta=np.abs(per_image["delta"]) / np.abs(gap))


def run(ctx: RunContext,
        n_images: Annotated[int, Interval(int, 1, None)] = 4,
        images: Annotated[list | None, IMAGE_IDS] = None,
        methods: Annotated[str | list, (_METHOD, Items(_METHOD, min_len=1))] = (
            "rollout", "gradient_rollout", "integrated_gradients", "occlusion"),
        n_steps: Annotated[int, Interval(int, 1, None)] = 32,
        baseline: Annotated[str, _BASELINE] = "zero",
        deletion_baseline: Annotated[str, _BASELINE] = "zero",
        insertion_baseline: Annotated[str, _BASELINE] = "blur",
        n_random: Annotated[int, Interval(int, 0, None)] = 2,
        step: Annotated[int, Interval(int, 1, None)] = 2,
        sanity: bool = True,
        sanity_images: Annotated[int, Interval(int, 1, None)] = 3,
        sanity_threshold: Annotated[float, Interval(float, -1, 1)] = 0.5,
        internal_batch_size: Annotated[int, Interval(int, 1, None)] = 256,
        torch_threads: Annotated[int, Interval(int, 0, None)] = 1) -> Section:
    """Attribution maps, their faithfulness and the sanity check.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    n_images : int
        Images explained, chosen by the spec's ``[data] selection`` (stratified by default).
    images : list, optional
        Image ids to explain instead, in this order.
    methods : str or list
        Attribution methods (captum's and the attention-based ones).
    n_steps : int
        Integrated-gradients steps.
    baseline : "zero", "mean" or "blur"
        Integrated-gradients reference and occlusion fill.
    deletion_baseline : "zero", "mean" or "blur"
        What deleted patches become.
    insertion_baseline : "zero", "mean" or "blur"
        What insertion starts from.
    n_random : int
        Random patch orders per image (the reference curve).
    step : int
        Patches deleted / inserted per curve point.
    sanity : bool
        Run the cascading randomisation.
    sanity_images : int
        Images of the sanity check.
    sanity_threshold : float
        Final mean Spearman correlation at or above which a method is flagged.
    internal_batch_size : int
        Inputs per forward pass inside captum.
    torch_threads : int
        CPU threads while attributing (0: leave torch's setting).
    """
    with _torch_threads(int(torch_threads)):
        return _run(ctx, ctx.select_images(int(n_images), images), methods, n_steps, baseline,
                    deletion_baseline, insertion_baseline, n_random, step, sanity,
                    sanity_images, sanity_threshold, internal_batch_size)


def _run(ctx, chosen, methods, n_steps, baseline, deletion_baseline, insertion_baseline,
         n_random, step, sanity, sanity_images, sanity_threshold,
         internal_batch_size) -> Section:
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ConfigError("attribution needs at least one method; list one in methods.")
    model = ctx.model.model.eval()
    x, ids = ctx.images(image_ids=chosen)
    common = {"baseline": baseline, "n_steps": int(n_steps),
              "internal_batch_size": int(internal_batch_size)}
    frames = [attribute(model, x, ctx.layout, method=m, image_ids=ids, **common)
              for m in methods]
    maps = pd.concat(frames, ignore_index=True)
    pictures, picture_ids = ctx.display_images(image_ids=chosen)
    figures = [Figure(
        "attribution_maps",
        plot_method_maps(maps, dict(zip(picture_ids.tolist(), pictures)), list(ids), methods),
        f"Explanations of the predicted class, one row per image ({ctx.describe_images(ids)}) "
        "and one column per method; "
        "each map on its own colour scale (rollout maps scaled to max 1, IG in logit units "
        "summed per patch, occlusion in logit change per patch).",
        maps)]
    tables, numbers = [], {"n_images": float(len(ids))}

    faith = faithfulness_curves(
        model, x, ctx.layout, maps=maps,
        baseline={"deletion": deletion_baseline, "insertion": insertion_baseline},
        n_random=int(n_random), seed=ctx.seed, step=int(step), image_ids=ids)
    mean_curves = (faith.curves.groupby(["method", "mode", "fraction"], sort=False)["prob"]
                   .mean().reset_index())
    figures.append(Figure(
        "attribution_faithfulness", plot_faithfulness(mean_curves),
        f"Deletion (baseline {deletion_baseline}) and insertion (from {insertion_baseline}) "
        f"curves: predicted-class probability against the fraction of patches changed, most "
        f"relevant first, mean over {len(ids)} images; dashed: random order "
        f"({int(n_random)} permutations per image).", mean_curves))
    tables.append(Table("attribution_auc", faith.summary,
                        "Area under the deletion (lower is better) and insertion (higher is "
                        "better) curves per method, mean and std over images; 'random' is the "
                        "random-order baseline."))
    for _, r in faith.summary.iterrows():
        numbers[f"{r['method']}_{r['mode']}_auc"] = float(r["auc_mean"])

    if "integrated_gradients" in methods:
        ig = maps[maps["method"] == "integrated_gradients"]
        deltas = _delta_table(model, x, ig, baseline, ctx.layout)
        tables.append(Table("attribution_ig_delta", deltas,
                            f"Integrated gradients ({int(n_steps)} steps, baseline {baseline}): "
                            "captum's convergence delta per image, the logit gap F(x) - F(x') it "
                            "should be small against, and |delta| / |gap|."))
        numbers["ig_max_relative_delta"] = float(deltas["relative_delta"].max())

    text = (__doc__ or "").split("\n\n", 1)[1].strip()
    text += (f" Settings: {len(ids)} images ({ctx.describe_images(ids)}), IG with "
             f"{int(n_steps)} steps and a {baseline} baseline (also the occlusion fill), "
             f"deletion to {deletion_baseline}, insertion from {insertion_baseline}, "
             f"{int(n_random)} random orders per image, {int(step)} "
             "patch(es) per curve point.")
    if sanity:
        k = min(int(sanity_images), len(ids))
        checks = cascading_randomization(
            model, x[:k], ctx.layout, methods=methods, seed=ctx.seed,
            threshold=float(sanity_threshold), image_ids=ids[:k], baseline=baseline,
            n_steps=int(n_steps), internal_batch_size=int(internal_batch_size))
        figures.append(Figure(
            "attribution_sanity", plot_sanity(checks.summary),
            f"Cascading randomisation (top first): mean Spearman correlation of |map| with the "
            f"intact model's, over {k} images (band: std).", checks.summary))
        tables.append(Table("attribution_sanity_flags", checks.flags,
                            f"Mean Spearman correlation with the whole model randomised; flagged "
                            f"when >= {float(sanity_threshold):g}."))
        for _, r in checks.flags.iterrows():
            if np.isfinite(r["final_spearman"]):
                numbers[f"{r['method']}_sanity_final_spearman"] = float(r["final_spearman"])
        flagged = checks.flags.loc[checks.flags["flagged"], "method"].tolist()
        numbers["sanity_flagged"] = float(len(flagged))
        text += (f" Sanity check on {k} images: "
                 + (f"flagged (maps barely change under randomisation): {', '.join(flagged)}."
                    if flagged else "no method flagged; every method's maps change once the "
                    "model is randomised."))
    return Section(
        title=TITLE,
        text=text,
        figures=figures,
        tables=tables,
        numbers=numbers,
        references=[
            "Sundararajan, Taly & Yan (2017), Axiomatic Attribution for Deep Networks (ICML)",
            "Zeiler & Fergus (2014), Visualizing and Understanding Convolutional Networks (ECCV)",
            "Petsiuk, Das & Saenko (2018), RISE (BMVC)",
            "Adebayo et al. (2018), Sanity Checks for Saliency Maps (NeurIPS)",
            "Abnar & Zuidema (2020), Quantifying Attention Flow in Transformers (ACL)",
            "Chefer, Gur & Wolf (2021), Generic Attention-model Explainability (ICCV)",
            "Kokhlikyan et al. (2020), Captum",
        ],
    )
