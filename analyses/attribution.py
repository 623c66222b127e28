"""Attribution: which patches explain the prediction, and is the explanation faithful?

Method: for a few images and the class the model predicts, four explanations over the patch
grid: attention rollout (Abnar & Zuidema 2020), gradient rollout (Chefer et al. 2021),
Integrated Gradients (Sundararajan et al. 2017; pixel attributions summed per patch, with
captum's convergence delta ``sum(attributions) - (F(x) - F(x'))`` per image) and occlusion
(Zeiler & Fergus 2014; one patch at a time replaced by the baseline). Faithfulness (Petsiuk
et al. 2018): patches are deleted from the image (replaced by the deletion baseline), or
inserted into the insertion baseline, most relevant first, tracking the predicted class's
probability; a faithful map gives a low deletion and a high insertion area under the curve,
and must beat a random patch order; when the insertion start image is already classified as
the target, the insertion curve starts high whatever the order, and the section says so (the
"black" start, raw pixel value 0, avoids a start that keeps the digit's shape as a blur does).
Sanity check (Adebayo et al. 2018): the model's parameters are randomised cumulatively from the
head down to the embedding, the maps recomputed and compared with the intact model's by
Spearman rank correlation of absolute values; a method whose maps still correlate at or above
the threshold at any step of the cascade does not depend on the parameters randomised so far,
and is flagged with the steps it ignores. Areas, mean curves and correlations carry 95%
percentile-bootstrap intervals over images (Efron & Tibshirani 1993).
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
    black_baseline,
    cascading_randomization,
    faithfulness_curves,
    make_baseline,
)
from probing.constraints import Interval, Items, Options
from probing.errors import ConfigError
from probing.imageselect import IMAGE_IDS
from probing.plots.attribution import (
    method_map_pages,
    plot_faithfulness,
    plot_method_maps,
    plot_sanity,
)
from probing.sections import Figure, Finding, Section, Table
from probing.stats import bootstrap_frame

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Attribution, faithfulness and sanity checks"
DESCRIPTION = "Rollout, gradient rollout, IG and occlusion maps; deletion/insertion; sanity check"
_METHOD = Options(*CAPTUM_METHODS, *ATTENTION_METHODS)
_BASELINE = Options("zero", "mean", "blur")
_CURVE_BASELINE = Options("zero", "mean", "blur", "black")
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


def _map_arrays(maps: pd.DataFrame, ids: np.ndarray, layout
                ) -> tuple[dict[str, np.ndarray], list[int] | None]:
    """``{method: (len(ids), rows, cols)}`` maps of ``ids`` from :func:`attribute`'s tidy
    frames, and the classes they explain (None when only rollout, which has no class, ran)."""
    part = maps[maps["image_id"].isin(ids)]
    index = pd.MultiIndex.from_product([ids, range(layout.rows), range(layout.cols)],
                                       names=["image_id", "row", "col"])
    out = {str(m): g.set_index(["image_id", "row", "col"])["value"].reindex(index)
           .to_numpy(dtype=np.float64).reshape(len(ids), layout.rows, layout.cols)
           for m, g in part.groupby("method", sort=False)}
    explained = part[part["target"] >= 0].drop_duplicates("image_id").set_index("image_id")
    targets = (explained["target"].reindex(ids).astype(int).tolist()
               if len(explained) and explained.index.isin(ids).sum() == len(ids) else None)
    return out, targets


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
        deletion_baseline: Annotated[str, _CURVE_BASELINE] = "zero",
        insertion_baseline: Annotated[str, _CURVE_BASELINE] = "blur",
        n_random: Annotated[int, Interval(int, 0, None)] = 2,
        step: Annotated[int, Interval(int, 1, None)] = 2,
        sanity: bool = True,
        sanity_images: Annotated[int, Interval(int, 1, None)] = 3,
        sanity_threshold: Annotated[float, Interval(float, -1, 1)] = 0.5,
        internal_batch_size: Annotated[int, Interval(int, 1, None)] = 256,
        torch_threads: Annotated[int, Interval(int, 0, None)] = 1,
        n_boot: Annotated[int, Interval(int, 0, None)] = 200) -> Section:
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
    deletion_baseline : "zero", "mean", "blur" or "black"
        What deleted patches become ("zero" = normalised 0, the mean grey; "black" = raw
        pixel value 0).
    insertion_baseline : "zero", "mean", "blur" or "black"
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
        Mean Spearman correlation at or above which a cascade step counts as insensitive; a
        method with any insensitive step is flagged.
    internal_batch_size : int
        Inputs per forward pass inside captum.
    torch_threads : int
        CPU threads while attributing (0: leave torch's setting).
    n_boot : int
        Bootstrap resamples of the images for the intervals (0 = none).
    """
    with _torch_threads(int(torch_threads)):
        return _run(ctx, ctx.select_images(int(n_images), images), methods, n_steps, baseline,
                    deletion_baseline, insertion_baseline, n_random, step, sanity,
                    sanity_images, sanity_threshold, internal_batch_size, int(n_boot))


def _curve_baseline(ctx, x, name: str):
    """A curve baseline by name: ``"black"`` as a tensor, the others as they are."""
    if name != "black":
        return name
    cfg = ctx.model.data_config
    return black_baseline(x, cfg["mean"], cfg["std"])


def _start_warning(faith, insertion_baseline: str) -> tuple[str, dict[str, float]]:
    """The insertion-start check: text and numbers."""
    start = faith.start[faith.start["mode"] == "insertion"]
    if start.empty:
        return "", {}
    frac = faith.start_classified("insertion")
    numbers = {"insertion_start_classified_fraction": frac,
               "insertion_start_mean_prob": float(start["prob"].mean())}
    if frac == 0:
        return (f" Insertion start ({insertion_baseline}): no image's start is classified as "
                "its target.", numbers)
    hint = ("" if insertion_baseline == "black" else
            ' Try insertion_baseline = "black".')
    return (f" Warning: the insertion start ({insertion_baseline}) is already classified as "
            f"the target for {frac:.0%} of the images (p(target) >= 0.5 or the target is its "
            f"argmax; mean p(target) at the start {start['prob'].mean():.2f}), so their "
            f"insertion curves start high whatever the order and insertion AUCs say little."
            + hint, numbers)


def _run(ctx, chosen, methods, n_steps, baseline, deletion_baseline, insertion_baseline,
         n_random, step, sanity, sanity_images, sanity_threshold,
         internal_batch_size, n_boot) -> Section:
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
    true, pred = ctx.shown_labels(ids, x)
    units = {"rollout": "relevance (max 1)", "gradient_rollout": "relevance (max 1)",
             "integrated_gradients": "IG (logit per patch)",
             "occlusion": "logit change per patch"}
    pages = plot_method_maps(maps, dict(zip(picture_ids.tolist(), pictures)), list(ids),
                             methods, labels=true, predictions=pred, units=units)
    figures = [Figure(
        "attribution_maps" + (f"_page{k}" if k > 1 else ""), fig,
        f"Explanations of the predicted class, one row per image ({ctx.describe_images(ids)}; "
        "first column: the image, its true label and the model's prediction) and one column "
        "per method, each method on one colour scale over the images (bar below; rollout "
        "maps scaled to max 1, IG in logit units summed per patch, occlusion in logit change "
        "per patch; signed maps on a diverging scale centred at 0)"
        + (f"; page {k} of {len(pages)}." if len(pages) > 1 else "."),
        maps[maps["image_id"].isin(shown)])
        for k, (shown, fig) in enumerate(zip(method_map_pages(list(ids), len(methods)), pages),
                                         1)]
    tables, numbers = [], {"n_images": float(len(ids))}

    faith = faithfulness_curves(
        model, x, ctx.layout, maps=maps,
        baseline={"deletion": _curve_baseline(ctx, x, deletion_baseline),
                  "insertion": _curve_baseline(ctx, x, insertion_baseline)},
        n_random=int(n_random), seed=ctx.seed, step=int(step), image_ids=ids, n_boot=n_boot)
    if n_boot:
        mean_curves = bootstrap_frame(faith.curves, ["method", "mode", "fraction"], "prob",
                                      n_boot=n_boot, seed=ctx.seed).rename(
                                          columns={"value": "prob"})
    else:
        mean_curves = (faith.curves.groupby(["method", "mode", "fraction"], sort=False)["prob"]
                       .mean().reset_index())
    start_text, start_numbers = _start_warning(faith, insertion_baseline)
    numbers.update(start_numbers)
    figures.append(Figure(
        "attribution_faithfulness", plot_faithfulness(mean_curves),
        f"Deletion (baseline {deletion_baseline}) and insertion (from {insertion_baseline}) "
        f"curves: predicted-class probability against the fraction of patches changed, most "
        f"relevant first, mean over {len(ids)} images (band: 95% bootstrap interval over "
        f"images, {n_boot} resamples); dashed: random order ({int(n_random)} permutations per "
        "image).", mean_curves))
    tables.append(Table("attribution_auc", faith.summary,
                        "Area under the deletion (lower is better) and insertion (higher is "
                        "better) curves per method, mean and std over images with the 95% "
                        "bootstrap interval of the mean (ci_low, ci_high); 'random' is the "
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
    text += (f" Settings: {len(ids)} images ({ctx.describe_images(ids)}), {len(methods)} "
             f"methods, IG with {int(n_steps)} steps and a {baseline} baseline (also the "
             f"occlusion fill), deletion to {deletion_baseline}, insertion from "
             f"{insertion_baseline}, {int(n_random)} random orders per image, {int(step)} "
             "patch(es) per curve point." + start_text)
    if sanity:
        k = min(int(sanity_images), len(ids))
        # the intact model's maps of these images are those drawn above: not computed again
        original, targets = _map_arrays(maps, ids[:k], ctx.layout)
        checks = cascading_randomization(
            model, x[:k], ctx.layout, methods=methods, seed=ctx.seed, target=targets,
            threshold=float(sanity_threshold), image_ids=ids[:k], baseline=baseline,
            n_steps=int(n_steps), internal_batch_size=int(internal_batch_size), n_boot=n_boot,
            original=original)
        figures.append(Figure(
            "attribution_sanity", plot_sanity(checks.summary),
            f"Cascading randomisation (top first): mean Spearman correlation of |map| with the "
            f"intact model's, over {k} images (band: 95% bootstrap interval over images).",
            checks.summary))
        tables.append(Table("attribution_sanity_flags", checks.flags,
                            "Per method over the whole cascade: the mean Spearman correlation "
                            "at the last step and its largest over the randomised steps, and the "
                            f"steps at which it stays >= {float(sanity_threshold):g} "
                            "(insensitive); flagged when any step is."))
        for _, r in checks.flags.iterrows():
            if np.isfinite(r["final_spearman"]):
                numbers[f"{r['method']}_sanity_final_spearman"] = float(r["final_spearman"])
        flagged = checks.flags[checks.flags["flagged"]]
        numbers["sanity_flagged"] = float(len(flagged))
        detail = "; ".join(f"{r.method} (insensitive to {r.n_insensitive} of {r.n_steps} "
                           f"steps: {r.insensitive_to})" for r in flagged.itertuples())
        text += (f" Sanity check on {k} images: "
                 + (f"flagged (maps barely change under randomisation): {detail}."
                    if len(flagged) else "no method flagged; every method's maps change at "
                    "every step of the cascade."))
    return Section(
        title=TITLE,
        text=text,
        figures=figures,
        tables=tables,
        numbers=numbers,
        findings=_findings(numbers),
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


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """Which method's ranking is most faithful by deletion, against random order."""
    auc = {k[:-len("_deletion_auc")]: v for k, v in numbers.items() if k.endswith("_deletion_auc")}
    methods = {m: v for m, v in auc.items() if m != "random"}
    if not methods or "random" not in auc:
        return []
    best = min(methods, key=methods.get)
    word = ("faithful: its ranking beats random order" if methods[best] < auc["random"]
            else "not faithful: no method beats random order")
    sanity = (" The randomisation sanity check flagged {sanity_flagged} method(s)."
              if "sanity_flagged" in numbers else "")
    return [Finding("Are the attributions faithful?",
                    f"Deleting the patches {best.replace('_', ' ')} ranks most relevant first "
                    f"gives a deletion AUC of {{{best}_deletion_auc:.2f}} against "
                    f"{{random_deletion_auc:.2f}} for random order (lower is more faithful): "
                    f"{word}.{sanity}")]
