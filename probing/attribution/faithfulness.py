"""Deletion and insertion curves at patch granularity (Petsiuk, Das & Saenko 2018, RISE).

Deletion: starting from the image, replace patches with the baseline in order of attributed
importance, most relevant first, and track the softmax probability of the target class; a
faithful map makes it fall fast (low area under the curve). Insertion: start from the baseline
and put the image's patches back in the same order; a faithful map makes it rise fast (high
area). The curve has ``ceil(P / step) + 1`` points at fractions ``0 .. 1`` of the ``P``
patches; the area is the trapezoidal integral over the fraction. A random order (the mean curve
over ``n_random`` seeded permutations per image) is the reference every method should beat.

Baselines are :func:`probing.attribution.inputs.make_baseline`'s (``"zero"``, ``"mean"``,
``"blur"``) or a tensor such as :func:`black_baseline` (raw pixel value 0, i.e. ``-mean / std``
after normalisation, where ``"zero"`` is the normalised 0, the mean grey); Petsiuk et al. used a
constant (zero) for deletion and a blurred image for insertion. Pass a dict such as
``{"deletion": "zero", "insertion": "blur"}`` to choose per mode.

Insertion says nothing when its start is already classified as the target: the probability
curve then starts high whatever the order. :attr:`FaithfulnessResult.start` reports, per image
and mode, the target probability of the start image and whether the target is its argmax.
Intervals of the mean areas are percentile-bootstrap intervals over images (Efron &
Tibshirani 1993; :func:`probing.stats.bootstrap_frame`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..frames import require_columns
from ..layout import TokenLayout
from ..models import eval_mode
from ..patchgrid import image_id_array
from ..stats import DEFAULT_N_BOOT, bootstrap_frame
from ..targets import resolve_targets
from .inputs import Baseline, make_baseline, prepare

__all__ = [
    "FaithfulnessResult",
    "black_baseline",
    "deletion_curve",
    "faithfulness_curves",
    "insertion_curve",
]

Mode = Literal["deletion", "insertion"]


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion/insertion curves and their areas.

    Attributes
    ----------
    curves : pandas.DataFrame
        ``image_id, method, mode, step, fraction, prob``: the target-class probability after
        ``fraction`` of the patches were deleted (inserted). ``method == "random"`` is the
        random-order reference.
    auc : pandas.DataFrame
        ``image_id, method, mode, auc``: area under each image's curve (fraction in [0, 1]).
    summary : pandas.DataFrame
        ``method, mode, auc_mean, auc_std, n_images, ci_low, ci_high`` (std over images, ddof
        0; ``ci_low``/``ci_high`` the percentile-bootstrap interval of ``auc_mean`` over images,
        NaN when ``n_boot = 0``).
    start : pandas.DataFrame
        ``image_id, mode, prob, is_argmax``: the target probability of each mode's start image
        (the intact image for deletion, the baseline for insertion) and whether the target is
        its most probable class.
    """

    curves: pd.DataFrame
    auc: pd.DataFrame
    summary: pd.DataFrame
    start: pd.DataFrame | None = None

    def start_classified(self, mode: Mode = "insertion", threshold: float = 0.5) -> float:
        """Fraction of images whose ``mode`` start image has ``p(target) >= threshold`` or the
        target as its argmax (NaN when ``mode`` was not run)."""
        if self.start is None:
            return float("nan")
        part = self.start[self.start["mode"] == mode]
        if part.empty:
            return float("nan")
        return float(((part["prob"] >= threshold) | part["is_argmax"]).mean())


def black_baseline(images, mean: Sequence[float], std: Sequence[float]):
    """A black image in the model's input space: raw pixel value 0, normalised.

    Parameters
    ----------
    images : torch.Tensor
        ``(batch, channels, H, W)`` preprocessed images (gives shape, dtype and device).
    mean, std : sequence of float
        The preprocessing's per-channel mean and std (``data_config["mean"]``, ``["std"]``;
        one value is broadcast to every channel).

    Returns
    -------
    torch.Tensor
        ``(batch, channels, H, W)`` filled with ``-mean_c / std_c`` per channel.
    """
    import torch

    x = torch.as_tensor(images)
    m = torch.as_tensor(np.broadcast_to(np.asarray(mean, dtype=np.float64), (x.shape[1],)).copy())
    s = torch.as_tensor(np.broadcast_to(np.asarray(std, dtype=np.float64), (x.shape[1],)).copy())
    if torch.any(s <= 0):
        raise ConfigError(f"std {list(std)!r} has a value <= 0; pass the preprocessing's std.")
    value = (-m / s).to(dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return value.expand_as(x).clone()


def _fractions(n_patches: int, step: int) -> np.ndarray:
    counts = np.minimum(np.arange(0, n_patches + step, step), n_patches)
    counts = np.unique(counts)
    return counts


def _curve(model, x, base, orders: np.ndarray, t, layout: TokenLayout, mode: str,
           step: int, batch_size: int) -> np.ndarray:
    """``(batch, K + 1)`` target probabilities along the given patch orders."""
    import torch

    counts = _fractions(layout.num_patches, step)
    ph, pw = layout.patch_size
    b = x.shape[0]
    # rank[b, p] = position of patch p in image b's order
    rank = np.empty_like(orders)
    np.put_along_axis(rank, orders, np.arange(orders.shape[1])[None], axis=1)
    jobs = [(i, k) for i in range(b) for k in range(len(counts))]
    out = np.empty((b, len(counts)))
    with torch.no_grad():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            img = torch.as_tensor([i for i, _ in chunk], device=x.device)
            hit = np.stack([rank[i] < counts[k] for i, k in chunk])  # patches switched so far
            keep_image = hit if mode == "insertion" else ~hit
            m = torch.as_tensor(keep_image.reshape(len(chunk), 1, layout.rows, layout.cols),
                                dtype=x.dtype, device=x.device)
            m = m.repeat_interleave(ph, 2).repeat_interleave(pw, 3)
            batch = m * x[img] + (1 - m) * base[img]
            prob = torch.softmax(model(batch).double(), -1)
            p = prob.gather(1, t[img][:, None])[:, 0].cpu().numpy()
            for (i, k), v in zip(chunk, p):
                out[i, k] = v
    return out


def _area(curve: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each row of ``curve`` over ``frac``."""
    return (0.5 * (curve[:, 1:] + curve[:, :-1]) * np.diff(frac)).sum(axis=1)


def _orders(maps: np.ndarray) -> np.ndarray:
    """Patch indices most relevant first (stable for ties), ``(batch, P)``."""
    flat = np.asarray(maps, dtype=np.float64).reshape(maps.shape[0], -1)
    return np.argsort(-flat, axis=1, kind="stable")


def _run_mode(model, images, maps, mode, baseline, target, layout, step, batch_size, device,
              blur_sigma):
    import torch

    x, layout = prepare(model, images, layout, device)
    maps = _check_maps(maps, x.shape[0], layout)
    with eval_mode(model):  # the caller's training flags come back as they were
        with torch.no_grad():
            t = resolve_targets(model(x), target)
        base = make_baseline(x, layout, baseline, blur_sigma)
        return _curve(model, x, base, _orders(maps), t, layout, mode, step, batch_size)


def _check_maps(maps, b: int, layout: TokenLayout) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != (b, layout.rows, layout.cols):
        raise DataError(
            f"maps has shape {maps.shape}; pass one (rows, cols) = {layout.grid} map per image, "
            f"({b}, {layout.rows}, {layout.cols})."
        )
    return maps


def deletion_curve(
    model, images, layout: TokenLayout | None = None, *, maps,
    baseline: Baseline | object = "zero", target: int | Sequence[int] | None = None,
    step: int = 1, batch_size: int = 64, device: str | None = None,
    blur_sigma: float | None = None,
) -> np.ndarray:
    """Deletion curve of each image (Petsiuk et al. 2018), most relevant patch first.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits (evaluated in eval mode, its mode restored after).
    images : torch.Tensor or numpy.ndarray
        ``(batch, channels, H, W)`` preprocessed images; moved to the model's device.
    layout : TokenLayout, optional
        Defaults to ``TokenLayout.from_model(model, img_size=(H, W))``.
    maps : numpy.ndarray
        ``(batch, rows, cols)`` patch relevance; higher means more relevant (keyword-only).
    baseline : {"zero", "mean", "blur"} or torch.Tensor
        What deleted patches become.
    target : int or sequence of int, optional
        Class per image; the predicted class on the intact image by default.
    step : int
        Patches deleted per point.
    batch_size : int
        Perturbed images per forward pass.
    device : str, optional
        Where the model must be: checked, never changed (a device other than the model's raises
        :class:`~probing.errors.ConfigError`; move the model yourself with ``model.to(...)``).
    blur_sigma : float, optional
        Sigma in pixels of the ``"blur"`` baseline.

    Returns
    -------
    numpy.ndarray
        ``(batch, ceil(P / step) + 1)`` target-class probabilities, first point the intact image.
    """
    return _run_mode(model, images, maps, "deletion", baseline, target, layout, step,
                     batch_size, device, blur_sigma)


def insertion_curve(
    model, images, layout: TokenLayout | None = None, *, maps,
    baseline: Baseline | object = "blur", target: int | Sequence[int] | None = None,
    step: int = 1, batch_size: int = 64, device: str | None = None,
    blur_sigma: float | None = None,
) -> np.ndarray:
    """Insertion curve of each image (Petsiuk et al. 2018): as :func:`deletion_curve`, but
    starting from the baseline and inserting the image's patches, most relevant first."""
    return _run_mode(model, images, maps, "insertion", baseline, target, layout, step,
                     batch_size, device, blur_sigma)


def _maps_from(maps, image_ids) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``{method: (batch, rows, cols)}`` from a dict or a tidy ``image_id, method, row, col,
    value`` frame (images in ``image_ids`` order, else in order of first appearance)."""
    if isinstance(maps, pd.DataFrame):
        require_columns(maps, ("image_id", "method", "row", "col", "value"), "maps frame",
                        "pass attribute()'s or relevance_frame()'s output")
        ids = pd.unique(maps["image_id"]) if image_ids is None else np.asarray(image_ids)
        out = {}
        for method, g in maps.groupby("method", sort=False):
            cube = g.pivot_table(index=["image_id", "row"], columns="col", values="value")
            rows = int(g["row"].max()) + 1
            out[str(method)] = np.stack([cube.loc[i].to_numpy() for i in ids]).reshape(
                len(ids), rows, -1)
        return out, ids
    if not isinstance(maps, Mapping) or not maps:
        raise ConfigError("maps is neither a non-empty dict {method: array} nor a tidy frame.")
    return {str(k): np.asarray(v, dtype=np.float64) for k, v in maps.items()}, image_ids


def faithfulness_curves(
    model,
    images,
    layout: TokenLayout | None = None,
    *,
    maps,
    modes: Sequence[Mode] = ("deletion", "insertion"),
    baseline: Baseline | object | Mapping[str, object] = "blur",
    target: int | Sequence[int] | None = None,
    n_random: int = 1,
    seed: int = 0,
    step: int = 1,
    batch_size: int = 64,
    device: str | None = None,
    blur_sigma: float | None = None,
    image_ids: Sequence | None = None,
    n_boot: int = DEFAULT_N_BOOT,
) -> FaithfulnessResult:
    """Deletion and insertion curves of several methods plus a random order (Petsiuk et al. 2018).

    Parameters
    ----------
    model, images, layout, target, step, batch_size, device, blur_sigma
        As in :func:`deletion_curve`. The target is fixed once, on the intact images.
    maps : dict or pandas.DataFrame
        ``{method: (batch, rows, cols)}`` or a tidy frame ``image_id, method, row, col, value``
        (:func:`probing.attribution.attribute`, :func:`probing.attention.relevance_frame`);
        keyword-only.
    modes : sequence of {"deletion", "insertion"}
        Which curves to draw.
    baseline : {"zero", "mean", "blur"}, tensor, or dict {mode: baseline}
        What deleted patches become / where insertion starts (module docstring).
    n_random : int
        Random permutations per image for the ``"random"`` reference (its curve is their mean);
        0 leaves the reference out.
    seed : int
        Seed of the random permutations.
    image_ids : sequence, optional
        Ids of the images in order (``0..batch-1``, or the frame's order of first appearance).
    n_boot : int
        Bootstrap resamples of the images for the AUC intervals (seeded by ``seed``; 0 =
        none).

    Returns
    -------
    FaithfulnessResult
    """
    import torch

    bad = [m for m in modes if m not in ("deletion", "insertion")]
    if bad or not modes:
        raise ConfigError(f"modes {list(modes)!r} must be 'deletion' and/or 'insertion'.")
    if int(step) < 1 or int(n_random) < 0:
        raise ConfigError(f"step {step!r} must be >= 1 and n_random {n_random!r} >= 0.")
    method_maps, ids = _maps_from(maps, image_ids)
    x, layout = prepare(model, images, layout, device)
    ids = image_id_array(ids, x.shape[0])
    orders = {m: _orders(_check_maps(v, x.shape[0], layout)) for m, v in method_maps.items()}
    rng = np.random.default_rng(seed)
    rand = [np.stack([rng.permutation(layout.num_patches) for _ in range(x.shape[0])])
            for _ in range(int(n_random))]
    counts = _fractions(layout.num_patches, int(step))
    frac = counts / layout.num_patches
    frames, aucs, starts = [], [], []
    with eval_mode(model):  # the caller's training flags come back as they were
        with torch.no_grad():
            t = resolve_targets(model(x), target)
        for mode in modes:
            spec = baseline.get(mode, "blur") if isinstance(baseline, Mapping) else baseline
            base = make_baseline(x, layout, spec, blur_sigma)
            with torch.no_grad():
                prob = torch.softmax(model(x if mode == "deletion" else base).double(), -1)
            starts.append(pd.DataFrame({
                "image_id": ids, "mode": mode,
                "prob": prob.gather(1, t[:, None])[:, 0].cpu().numpy(),
                "is_argmax": (prob.argmax(1) == t).cpu().numpy()}))
            runs = {m: [o] for m, o in orders.items()}
            if rand:
                runs["random"] = rand
            for method, order_list in runs.items():
                curve = np.mean([_curve(model, x, base, o, t, layout, mode, int(step),
                                        int(batch_size)) for o in order_list], axis=0)
                k = len(frac)
                frames.append(pd.DataFrame({
                    "image_id": np.repeat(ids, k), "method": method, "mode": mode,
                    "step": np.tile(np.arange(k), len(ids)), "fraction": np.tile(frac, len(ids)),
                    "prob": curve.ravel(),
                }))
                aucs.append(pd.DataFrame({"image_id": ids, "method": method, "mode": mode,
                                          "auc": _area(curve, frac)}))
    auc = pd.concat(aucs, ignore_index=True)
    summary = (auc.groupby(["method", "mode"], sort=False)["auc"]
               .agg(auc_mean="mean", auc_std=lambda s: float(np.std(s)), n_images="size")
               .reset_index())
    if int(n_boot) > 0:
        ci = bootstrap_frame(auc, ["method", "mode"], "auc", n_boot=int(n_boot), seed=seed)
        summary = summary.merge(ci[["method", "mode", "ci_low", "ci_high"]],
                                on=["method", "mode"], how="left")
    else:
        summary = summary.assign(ci_low=np.nan, ci_high=np.nan)
    return FaithfulnessResult(pd.concat(frames, ignore_index=True), auc, summary,
                              pd.concat(starts, ignore_index=True))
