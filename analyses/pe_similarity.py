"""Similarity of positional embeddings: the grid of grids of the ViT paper (Fig. 7, centre).

Method (Dosovitskiy et al. 2021): take the model's absolute positional table (timm
"pos_embed"; its prefix rows, e.g. CLS, are left out) and, for every patch, compute the cosine
similarity of its positional vector to the vector of every patch of the grid. Each patch's map
is drawn at the patch's place, giving a grid of small grids; the same is drawn for the raw dot
product, which also shows the vectors' norms. Grids need not be square. A learned table that
encodes 2-D position shows each small map peaking at its own patch and falling off with grid
distance (row and column structure may appear as stripes). Summary: the mean cosine similarity
of grid neighbours (Euclidean grid distance 1) against that of far patches (distance at least
far_fraction of the largest distance on the grid), averaged over all ordered patch pairs.
Null: k random tables of the learned table's shape whose rows are isotropic Gaussian
directions scaled to the learned rows' norms (seeded); one of them is drawn as a grid of grids
beside the learned one, and the learned neighbour-minus-far cosine is compared with the k null
values by a one-sided Monte Carlo test, p = (1 + #{null >= learned}) / (k + 1) (Davison &
Hinkley 1997). A model without an absolute table (relative bias, RoPE, none) has no such grid;
then the 2-D sin-cos table of the same grid and width (MAE, He et al. 2022) is shown for
reference, without a null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, Options
from probing.errors import ConfigError, ModelError
from probing.plots.posenc import plot_similarity_grid
from probing.posenc import (
    decay_2d,
    decay_null_test,
    learned_table,
    norm_matched_table,
    similarity_frame,
    sincos_2d,
)
from probing.sections import Figure, Finding, Section, Table
from probing.seeding import derive_seed

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Positional-embedding similarity"
DESCRIPTION = "cosine / dot similarity of each patch's PE to all others (ViT Fig. 7 centre)"
NEEDS: dict = {}


def _position_table(ctx) -> tuple[pd.DataFrame | np.ndarray, str, str]:
    """The model's learned table, or a 2-D sin-cos table of its grid with a note saying why."""
    try:
        return learned_table(ctx.model), "learned", ""
    except ModelError:
        dim = 4 * max(1, ctx.model.embed_dim // 4)
        has = " and ".join(ctx.layout.position) or "no positional parameters"
        note = (f" This model has no absolute positional table (it has {has}). The figures "
                f"show the 2-D sin-cos table (timm layout, width {dim}) of the same "
                f"{ctx.layout.rows}x{ctx.layout.cols} grid for reference, not the model.")
        return sincos_2d(ctx.layout.grid, dim), "2-D sin-cos (reference)", note


def _ring_mean(decay: pd.DataFrame, low: float, high: float = np.inf) -> float:
    """Pair-weighted mean cosine over the rows of a decay frame with low <= distance <= high."""
    part = decay[(decay["distance"] >= low - 1e-9) & (decay["distance"] <= high + 1e-9)]
    return float(np.average(part["cosine_mean"], weights=part["n_pairs"]))


def run(ctx: RunContext,
        metrics: Annotated[str | list, (Options("cosine", "dot"),
                                        Items(Options("cosine", "dot"), min_len=1))
                           ] = ("cosine", "dot"),
        far_fraction: Annotated[float, Interval(float, 0, 1, closed="right")] = 0.5,
        n_null: Annotated[int, Interval(int, 0, None)] = 100,
        ) -> Section:
    """Similarity of positional-table rows, as grids of grids.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    metrics : "cosine", "dot" or a list of them
        Which grids of grids to draw.
    far_fraction : float
        "Far" = a grid distance of at least this fraction of the largest distance.
    n_null : int
        Random tables of the null (same shape and row norms as the learned table; 0 = none).
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics or set(metrics) - {"cosine", "dot"}:
        raise ConfigError(f"pe_similarity.metrics={metrics!r} is invalid; use a list of "
                          "'cosine' and/or 'dot'.")
    if not 0 < far_fraction <= 1:
        raise ConfigError(f"pe_similarity.far_fraction={far_fraction!r} must lie in (0, 1]; "
                          "the default is 0.5.")
    grid = ctx.layout.grid
    if grid == (1, 1):
        raise ConfigError("pe_similarity needs a grid of at least two patches; this model has "
                          "one patch.")
    table, source, note = _position_table(ctx)
    figures = []
    for metric in metrics:
        sim = similarity_frame(table, grid, metric)
        figures.append(Figure(
            f"pe_similarity_{metric}",
            plot_similarity_grid(sim, title=f"{source} PE"),
            f"{'Cosine similarity' if metric == 'cosine' else 'Dot product'} of the positional "
            f"embedding of each patch (small map at the patch's place on the {grid[0]}x{grid[1]} "
            "grid) with those of all patches; colour scale symmetric around 0.",
            sim))
    decay = decay_2d(table, grid, by="distance")
    far = far_fraction * float(decay["distance"].max())

    def contrast(frame: pd.DataFrame) -> float:
        return _ring_mean(frame, 1.0, 1.0) - _ring_mean(frame, max(far, 1.0))

    neighbour, distant = _ring_mean(decay, 1.0, 1.0), _ring_mean(decay, max(far, 1.0))
    numbers = {"neighbour_cosine": neighbour, "far_cosine": distant,
               "neighbour_minus_far_cosine": neighbour - distant, "far_distance": far}
    null_text = ""
    if source == "learned" and n_null > 0:
        seed = derive_seed(ctx.seed, "pe_null")
        _, values, observed, p = decay_null_test(table, grid, contrast, n_null, seed, "greater")
        low, high = np.quantile(values, [0.025, 0.975])
        numbers.update(null_contrast_low=float(low), null_contrast_high=float(high),
                       null_p=p)
        sim = similarity_frame(norm_matched_table(table, grid, seed), grid, "cosine")
        figures.append(Figure(
            "pe_similarity_cosine_null",
            plot_similarity_grid(sim, title="random PE, same row norms"),
            "Null: cosine similarity grid of one random table of the learned table's shape "
            "whose rows are Gaussian directions with the learned rows' norms (the first draw "
            "of the null).", sim))
        verdict = "distinguishable" if p < 0.05 else "not distinguishable"
        null_text = (f" Null ({n_null} random tables of the same shape and row norms): "
                     f"neighbour-minus-far cosine {observed:.3f} vs the null's 95% range "
                     f"[{low:.3f}, {high:.3f}]; one-sided Monte Carlo test, p = {p:.3f}: the "
                     f"learned table is {verdict} from random at the 5% level.")
    return Section(
        title=TITLE,
        text=(__doc__ or "").split("\n\n", 1)[1].strip() + note + (
            f" Here ({source}, {grid[0]}x{grid[1]} grid): mean cosine of neighbours "
            f"{neighbour:.3f}, of patches at distance >= {far:.2f} patches {distant:.3f}."
            + null_text),
        figures=figures,
        tables=[Table("pe_similarity_by_distance", decay,
                      "Mean (and population std) cosine similarity and dot product of patch "
                      "pairs' positional embeddings by Euclidean grid distance (patches).")],
        numbers=numbers,
        findings=_findings(numbers, source),
        references=["Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT), Fig. 7",
                    "He et al. (2022), Masked Autoencoders Are Scalable Vision Learners"],
    )


def _findings(numbers: dict[str, float], source: str) -> list[Finding]:
    """Whether nearby patches get similar positional embeddings."""
    word = ("nearby patches get similar embeddings, so the grid's 2-D layout is encoded"
            if numbers["neighbour_minus_far_cosine"] > 0.1 else
            "similarity barely falls with distance, so the 2-D layout is hardly encoded")
    return [Finding("Do the positional embeddings encode the grid?",
                    f"In the {source} positional embeddings, neighbouring patches have a mean "
                    "cosine of {neighbour_cosine:.2f} and patches {far_distance:.1f} or more "
                    f"apart {{far_cosine:.2f}}: {word}.")]
