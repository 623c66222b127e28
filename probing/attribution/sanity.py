"""Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The model's parameters are randomised cumulatively from the top down: first the head (``head``,
``norm``, ``fc_norm``, attention pooling: every parameter outside the blocks and the embedding),
then block ``L``, ``L - 1`` ... ``1``, then the embedding (``patch_embed``, ``pos_embed`` and the
prefix tokens). After each step every method's maps are recomputed for the same target classes
(those the intact model predicts, unless given) and compared with the intact model's maps by the
Spearman rank correlation per image. An explanation must change at every step of the cascade:
one whose maps still correlate with the intact model's at or above the threshold at any step
(the head or a block randomised, with everything above it) does not depend on those parameters,
and is flagged, naming the steps it is insensitive to. (Looking only at the last step misses a
method that ignores all blocks but the first.) Mean correlations per step carry
percentile-bootstrap intervals over images (Efron & Tibshirani 1993).

Randomisation happens on a deep copy; the user's model is never touched. Each parameter tensor
is redrawn i.i.d. from a normal with that tensor's own mean and standard deviation (scales stay
comparable; a tensor that is constant, such as a freshly initialised LayerNorm weight, stays so).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..layout import TokenLayout
from ..patchgrid import image_id_array
from ..stats import DEFAULT_N_BOOT, bootstrap_frame, spearman_rows
from ..targets import resolve_targets
from .inputs import prepare
from .methods import Method, attribution_maps

__all__ = ["SanityResult", "cascade_flags", "cascading_randomization", "randomization_steps"]

_EMBED = ("patch_embed", "pos_embed", "cls_token", "reg_token", "dist_token", "norm_pre")


@dataclass(frozen=True)
class SanityResult:
    """Outcome of :func:`cascading_randomization`.

    Attributes
    ----------
    scores : pandas.DataFrame
        ``image_id, method, step, randomized, spearman``: step 0 (``"none"``) is the intact
        model (correlation 1); step ``k`` has the top ``k`` groups randomised, ``randomized``
        naming the last one (``"head"``, ``"block 12"`` ... ``"block 1"``, ``"embed"``).
    summary : pandas.DataFrame
        ``method, step, randomized, spearman_mean, spearman_std, n_images, ci_low, ci_high``
        (std ddof 0; NaN correlations, from constant maps, left out; ``ci_low``/``ci_high`` the
        percentile-bootstrap interval of the mean over images).
    flags : pandas.DataFrame
        ``method, final_spearman, max_spearman, n_steps, n_insensitive, insensitive_to,
        flagged``: over the randomised steps (step >= 1), the largest mean correlation, how many
        steps keep it at or above ``threshold`` and their labels; ``flagged`` is True when any
        step does (the whole cascade, not only its last step).
    """

    scores: pd.DataFrame
    summary: pd.DataFrame
    flags: pd.DataFrame


def randomization_steps(model) -> list[tuple[str, list[str]]]:
    """Parameter groups in cascading order, top first: ``[(label, [parameter names]), ...]``."""
    groups: dict[str, list[str]] = {}
    blocks: dict[int, list[str]] = {}
    for name, _ in model.named_parameters():
        m = re.match(r"blocks\.(\d+)\.", name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(name)
        elif name.split(".")[0] in _EMBED:
            groups.setdefault("embed", []).append(name)
        else:
            groups.setdefault("head", []).append(name)
    steps = [("head", groups["head"])] if "head" in groups else []
    steps += [(f"block {i + 1}", blocks[i]) for i in sorted(blocks, reverse=True)]
    if "embed" in groups:
        steps.append(("embed", groups["embed"]))
    return steps


def cascading_randomization(
    model,
    images,
    layout: TokenLayout | None = None,
    methods: Sequence[Method] = ("saliency", "integrated_gradients", "gradient_rollout"),
    target: int | Sequence[int] | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    absolute: bool = True,
    image_ids: Sequence | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    original: dict[str, np.ndarray] | None = None,
    **method_kwargs: object,
) -> SanityResult:
    """Cascading randomisation sanity check (Adebayo et al. 2018) for several methods.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT classifier; it is deep-copied, never modified.
    images : torch.Tensor or numpy.ndarray
        ``(batch, channels, H, W)`` preprocessed images.
    layout : TokenLayout, optional
        Defaults to the model's layout for the images' size.
    methods : sequence of str
        Method names of :func:`probing.attribution.attribution_maps`.
    target : int or sequence of int, optional
        Classes to explain at every step; the intact model's predictions by default.
    seed : int
        Seed of the parameter redraws (step ``k`` uses ``seed + k``).
    threshold : float
        Mean Spearman correlation at or above which a randomised step counts as insensitive
        (a method with any insensitive step is flagged).
    absolute : bool
        Correlate absolute values of the maps (Adebayo et al. show both; the sign of gradient
        maps flips freely under randomisation). False correlates signed maps.
    n_boot : int
        Bootstrap resamples of the images for the intervals (seeded by ``seed``; 0 = none).
    original : dict of str to numpy.ndarray, optional
        The intact model's maps per method, ``(batch, rows, cols)``, of these images for these
        targets with these ``method_kwargs`` (e.g. the maps already drawn, so that they are not
        computed again); the methods it lacks are computed.
    **method_kwargs
        Passed to :func:`probing.attribution.attribution_maps` (``n_steps``, ``baseline`` ...).

    Returns
    -------
    SanityResult
    """
    import torch

    if not methods:
        raise ConfigError("methods is empty; pass e.g. ('saliency', 'integrated_gradients').")
    work = copy.deepcopy(model).eval()
    x, layout = prepare(work, images, layout, method_kwargs.pop("device", None))
    ids = image_id_array(image_ids, x.shape[0])
    with torch.no_grad():
        t = resolve_targets(work(x), target).tolist()

    def maps_now(given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        out = {}
        for m in methods:
            if given is not None and m in given:
                maps = np.asarray(given[m])
            else:
                maps = attribution_maps(work, x, layout, method=m, target=t,
                                        **method_kwargs).maps
            maps = maps.reshape(len(x), -1)
            out[m] = np.abs(maps) if absolute else maps
        return out

    original = maps_now(original)
    params = dict(work.named_parameters())
    rows = [(m, 0, "none", np.ones(len(x))) for m in methods]
    for k, (label, names) in enumerate(randomization_steps(work), start=1):
        gen = torch.Generator().manual_seed(int(seed) + k)
        with torch.no_grad():
            for name in names:
                p = params[name]
                if p.numel() > 1:
                    noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                    p.copy_((noise * p.double().std() + p.double().mean()).to(p.dtype))
        now = maps_now()
        rows += [(m, k, label, spearman_rows(original[m], now[m])) for m in methods]
    scores = pd.concat(
        [pd.DataFrame({"image_id": ids, "method": m, "step": k, "randomized": lab, "spearman": r})
         for m, k, lab, r in rows],
        ignore_index=True,
    )
    summary = (
        scores.groupby(["method", "step", "randomized"], sort=False)["spearman"]
        .agg(spearman_mean="mean", spearman_std=lambda s: float(np.nanstd(s)),
             n_images="count")
        .reset_index()
        .sort_values(["method", "step"], kind="stable", ignore_index=True)
    )
    if int(n_boot) > 0 and len(x) > 0:
        ci = bootstrap_frame(scores, ["method", "step"], "spearman", n_boot=int(n_boot),
                             seed=seed)
        summary = summary.merge(ci[["method", "step", "ci_low", "ci_high"]],
                                on=["method", "step"], how="left")
    else:
        summary = summary.assign(ci_low=np.nan, ci_high=np.nan)
    return SanityResult(scores, summary, cascade_flags(summary, threshold))


def cascade_flags(summary: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Flags over the whole cascade from a :attr:`SanityResult.summary`-shaped frame.

    A step ``>= 1`` whose mean Spearman correlation is at least ``threshold`` is insensitive;
    a method is flagged when any step is (Adebayo et al. 2018: an explanation must depend on
    every randomised layer).

    Returns
    -------
    pandas.DataFrame
        One row per method (in order of appearance): ``method, final_spearman, max_spearman,
        n_steps, n_insensitive, insensitive_to`` (labels joined by ", "), ``flagged``.
    """
    rows = []
    for method, g in summary[summary["step"] >= 1].groupby("method", sort=False):
        g = g.sort_values("step")
        r = g["spearman_mean"].to_numpy(dtype=np.float64)
        bad = r >= threshold  # NaN (constant maps) never counts as insensitive
        rows.append({
            "method": method,
            "final_spearman": float(r[-1]),
            "max_spearman": float(np.nanmax(r)) if np.isfinite(r).any() else float("nan"),
            "n_steps": int(len(r)),
            "n_insensitive": int(bad.sum()),
            "insensitive_to": ", ".join(str(v) for v in g["randomized"].to_numpy()[bad]),
            "flagged": bool(bad.any()),
        })
    return pd.DataFrame(rows, columns=["method", "final_spearman", "max_spearman", "n_steps",
                                       "n_insensitive", "insensitive_to", "flagged"])
