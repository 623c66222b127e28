"""Decay of positional similarity with distance: sinusoidal, learned and resampled tables.

Method. (1) The 1-D sinusoidal encoding of Vaswani et al. (2017), PE(pos, 2i) = sin(pos w_i),
PE(pos, 2i+1) = cos(pos w_i), w_i = 10000^(-2i/d), at the model's width d: the dot product
PE(p)·PE(p+k) and the cosine against the offset k for several start positions p. Theory says
the dot product equals sum_i cos(k w_i): the curves of all p coincide (shift invariance) and
decay with |k| while oscillating; the spread across p is reported. (2) 2-D tables on the
model's patch grid: the model's learned table (ViT, Dosovitskiy et al. 2021), the 2-D sin-cos
table of the same grid and width (MAE, He et al. 2022; timm layout), and the learned table
resampled bicubically to another grid (as timm does for a new input resolution). For every
table, the cosine similarity of all ordered patch pairs is averaged by 2-D offset (dr, dc) and
by Euclidean grid distance (patches of that table's grid). The decay is summarised by the
halving distance: the first distance at which the mean cosine falls to half its value at
distance 0 (linearly interpolated; not a fitted model, and an oscillating curve may rise
again), and by the decay slope: the pair-weighted least-squares slope of the mean cosine on
distance over 0 < distance <= half the grid's largest distance. Null: k random tables of the
learned table's shape whose rows are isotropic Gaussian directions scaled to the learned rows'
norms (seeded); the learned slope is compared with the k null slopes by a one-sided Monte Carlo
test, p = (1 + #{null slope <= learned slope}) / (k + 1) (Davison & Hinkley 1997). A
worked-numbers table shows sincos_1d at position 5 with d = 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import pandas as pd

from probing.constraints import Interval, Items, Options
from probing.errors import ConfigError, ModelError
from probing.findings import Finding
from probing.plots.posenc import plot_decay_1d, plot_decay_2d
from probing.posenc import (
    decay_1d,
    decay_2d,
    decay_null_test,
    decay_slope,
    halving_distance,
    learned_table,
    resample,
    sincos_1d,
    sincos_2d,
    worked_example,
)
from probing.sections import Figure, Section, Table
from probing.seeding import derive_seed

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Positional similarity vs distance"
DESCRIPTION = "decay of PE similarity with offset: 1-D/2-D sinusoidal, learned and resampled"
NEEDS: dict = {}


def _check(n_positions, positions, dim, resample_grid, width) -> tuple[int, list[int]]:
    if int(n_positions) < 2:
        raise ConfigError(f"pe_decay.n_positions={n_positions!r} must be >= 2; e.g. 128.")
    bad = [p for p in positions if not 0 <= int(p) < n_positions]
    if not positions or bad:
        raise ConfigError(f"pe_decay.positions={list(positions)!r} must be start positions in "
                          f"0..{n_positions - 1}; e.g. [0, 16, 32, 64].")
    dim = int(dim) or 4 * max(1, width // 4)
    if dim < 4 or dim % 4:
        raise ConfigError(f"pe_decay.dim={dim!r} must be a multiple of 4 (0 = the model's "
                          "width); the 2-D sin-cos table needs dim % 4 == 0.")
    if resample_grid and (len(resample_grid) != 2 or min(resample_grid) < 1):
        raise ConfigError(f"pe_decay.resample_grid={resample_grid!r} must be [rows, cols] of "
                          "positive ints, or [] for twice the model's grid.")
    return dim, [int(p) for p in positions]


def _tables(ctx, dim: int, resample_grid) -> tuple[dict[str, tuple], str]:
    """The 2-D tables to compare, ``{key: (label, table, grid)}``, and a note on what is missing."""
    grid = ctx.layout.grid
    tables = {"sincos_2d": (f"2-D sin-cos {grid[0]}x{grid[1]}", sincos_2d(grid, dim), grid)}
    try:
        learned = learned_table(ctx.model)
    except ModelError:
        has = " and ".join(ctx.layout.position) or "no positional parameters"
        return tables, (f" The model has no absolute positional table (it has {has}), so only "
                        "the sinusoidal tables are compared.")
    new = tuple(int(g) for g in resample_grid) or (2 * grid[0], 2 * grid[1])
    return {"learned": (f"learned {grid[0]}x{grid[1]}", learned, grid), **tables,
            "resampled": (f"learned resampled to {new[0]}x{new[1]}", resample(learned, new),
                          new)}, ""


NULL_SOURCE = "random, same row norms"


def _null_curve(null: pd.DataFrame) -> pd.DataFrame:
    """Mean null curve per distance, ``ci_low``/``ci_high`` the 2.5/97.5% of the draws."""
    g = null.groupby("distance", sort=True)["cosine_mean"]
    return pd.DataFrame({"distance": g.mean().index, "n_pairs": null.groupby("distance")[
        "n_pairs"].first().to_numpy(), "cosine_mean": g.mean().to_numpy(),
        "ci_low": g.quantile(0.025).to_numpy(), "ci_high": g.quantile(0.975).to_numpy()})


def run(ctx: RunContext,
        n_positions: Annotated[int, Interval(int, 2, None)] = 128,
        positions: Annotated[list, Items(Interval(int, 0, None), min_len=1)] = (0, 16, 32, 64),
        dim: Annotated[int, Interval(int, 0, None)] = 0,
        resample_grid: Annotated[list, (Options([]), Items(Interval(int, 1, None), 2, 2))
                                 ] = [],  # noqa: B006 - never mutated; the rule's "[]"
        n_null: Annotated[int, Interval(int, 0, None)] = 100,
        ) -> Section:
    """Dot-product and cosine decay of sinusoidal and learned positional tables.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    n_positions : int
        Length of the 1-D sinusoidal table.
    positions : list of int
        Start positions p of the 1-D curves (below ``n_positions``).
    dim : int
        Width of the sinusoidal tables, a multiple of 4; 0 = the model's width.
    resample_grid : list of int
        Grid [rows, cols] to resample the learned table to; [] = twice the model's grid.
    n_null : int
        Random tables of the null (same shape and row norms as the learned table; 0 = none).
    """
    dim, positions = _check(n_positions, list(positions), dim, list(resample_grid),
                            ctx.model.embed_dim)
    # (1) 1-D sinusoidal: dot and cosine vs offset k for several p
    pe_1d = sincos_1d(n_positions, dim)
    curves = decay_1d(pe_1d, offsets=np.arange(n_positions - max(positions)), positions=positions)
    spread = float(curves.groupby("k")["dot"].agg(np.ptp).max())
    # (2) 2-D tables: by offset and by Euclidean distance
    tables, note = _tables(ctx, dim, resample_grid)
    by_distance, by_offset, summary = [], [], []
    for key, (name, table, grid) in tables.items():
        dist = decay_2d(table, grid, by="distance").assign(source=name)
        by_distance.append(dist)
        by_offset.append(decay_2d(table, grid, by="offset").assign(source=name))
        at1 = dist.loc[np.isclose(dist["distance"], 1.0), "cosine_mean"]
        summary.append({"key": key, "source": name, "grid": f"{grid[0]}x{grid[1]}", "dim": dim,
                        "halving_distance": halving_distance(dist),
                        "slope": decay_slope(dist),
                        "cosine_at_distance_1": float(at1.iloc[0]) if len(at1) else np.nan,
                        "min_mean_cosine": float(dist["cosine_mean"].min())})
    null_text = ""
    if "learned" in tables and n_null > 0:
        _, learned, grid = tables["learned"]
        null, slopes, slope, p = decay_null_test(learned, grid, decay_slope, n_null,
                                           derive_seed(ctx.seed, "pe_null"), "less")
        curve = _null_curve(null).assign(source=f"{NULL_SOURCE} (mean of {n_null})")
        by_distance.append(curve)
        low, high = np.quantile(slopes, [0.025, 0.975])
        summary[0].update(null_slope_low=low, null_slope_high=high, p_value=p)
        summary.append({"key": "random_null", "source": curve["source"].iloc[0],
                        "grid": summary[0]["grid"], "dim": summary[0]["dim"],
                        "halving_distance": halving_distance(curve), "slope": float(
                            np.median(slopes)),
                        "cosine_at_distance_1": float(curve.loc[np.isclose(
                            curve["distance"], 1.0), "cosine_mean"].iloc[0]),
                        "min_mean_cosine": float(curve["cosine_mean"].min())})
        verdict = "distinguishable" if p < 0.05 else "not distinguishable"
        null_text = (f" Null ({n_null} random tables of the learned table's shape and row "
                     f"norms): the learned decay slope is {slope:.4f} cosine per patch, the "
                     f"null's 95% range [{low:.4f}, {high:.4f}]; one-sided Monte Carlo test of a "
                     f"steeper decay than random, p = {p:.3f}: the learned table is {verdict} "
                     "from a random table of the same norms at the 5% level.")
    summary.append({"key": "sincos_1d", "source": f"1-D sin-cos ({n_positions} positions)",
                    "grid": "1-D", "dim": dim, "halving_distance": halving_distance(curves),
                    "cosine_at_distance_1": float(curves.loc[curves["k"] == 1, "cosine"].mean()),
                    "min_mean_cosine": float(curves.groupby("k")["cosine"].mean().min())})
    summary = pd.DataFrame(summary)
    by_distance = pd.concat(by_distance, ignore_index=True)
    by_offset = pd.concat(by_offset, ignore_index=True)
    halving = dict(zip(summary["source"], summary["halving_distance"]))
    worked = worked_example()

    numbers = {"shift_invariance_max_spread": spread,
               **{f"worked_pos5_dim3_col{c}": float(v) for c, v in enumerate(worked["value"])}}
    numbers.update({f"{key}_halving_distance": float(h) for key, h in
                    zip(summary["key"], summary["halving_distance"]) if np.isfinite(h)})
    numbers.update({f"{key}_decay_slope": float(v) for key, v in
                    zip(summary["key"], summary["slope"]) if np.isfinite(v)})
    if "p_value" in summary:
        numbers["learned_decay_null_p"] = float(summary["p_value"].iloc[0])
    return Section(
        title=TITLE,
        text=(__doc__ or "").split("\n\n", 1)[1].strip() + note + (
            f" Largest spread of PE(p)·PE(p+k) across start positions at any offset: "
            f"{spread:.2e} (0 up to rounding means shift invariance)." + null_text),
        figures=[
            Figure("pe_decay_1d", plot_decay_1d(curves, value="dot"),
                   f"1-D sinusoidal encoding (d = {dim}): dot product PE(p)·PE(p+k) against the "
                   f"offset k (positions), one line per start position p; the cosine is the dot "
                   f"product divided by d/2 = {dim // 2} (every row has norm sqrt(d/2)). Lines "
                   "coincide: shift invariance.", curves),
            Figure("pe_decay_2d", plot_decay_2d(by_distance, value="cosine", halving=halving),
                   "Mean cosine similarity (band: ± one std over pairs) of patch pairs' "
                   "positional vectors against their Euclidean grid distance (patches of each "
                   "table's own grid), per table; dotted lines mark the halving distances. "
                   f"'{NULL_SOURCE}': mean over {n_null} random tables of the learned table's "
                   "shape and row norms, band: the 2.5-97.5% range of the draws.",
                   by_distance),
        ],
        tables=[
            Table("pe_decay_summary", summary,
                  "Decay summary per table: halving distance of the mean cosine (patches of the "
                  "table's grid, positions for 1-D; NaN when it never halves), decay slope "
                  "(cosine per patch over 0 < distance <= half the largest; the null row: "
                  "median over the random tables), mean cosine at distance 1 and the lowest "
                  "mean cosine; for the learned table the null slopes' 2.5-97.5% range and "
                  "the one-sided Monte Carlo p-value."),
            Table("pe_decay_worked_example", worked,
                  "Worked numbers: sincos_1d at position 5 with d = 3 (frequency in radians per "
                  "position; the last column is an unpaired sine)."),
            Table("pe_decay_by_offset", by_offset,
                  "Mean and std of dot product and cosine by 2-D offset (dr, dc) of the pair, "
                  "per table."),
        ],
        numbers=numbers,
        references=["Vaswani et al. (2017), Attention Is All You Need",
                    "Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT)",
                    "He et al. (2022), Masked Autoencoders Are Scalable Vision Learners"],
        findings=_findings(numbers),
    )


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """Whether the learned table's similarity falls with grid distance more than a random
    table's (the null), or, without a learned table, the 2-D sin-cos table's decay."""
    if "learned_decay_slope" not in numbers:
        if "sincos_2d_decay_slope" not in numbers:
            return []
        return [Finding("Do positional vectors encode distance?",
                        "The model has no learned positional table; a 2-D sin-cos table of its "
                        "width loses {sincos_2d_decay_slope:.3f} cosine per patch of distance.")]
    if "learned_decay_null_p" not in numbers:
        return [Finding("Do positional vectors encode distance?",
                        "The learned positional table's cosine similarity changes by "
                        "{learned_decay_slope:.4f} per patch of grid distance (no null drawn).")]
    word = ("it decays with distance more than a random table does" if
            numbers["learned_decay_null_p"] < 0.05 else
            "indistinguishable from a random table of the same norms")
    return [Finding("Do positional vectors encode distance?",
                    "The learned positional table's cosine similarity changes by "
                    "{learned_decay_slope:.4f} per patch of grid distance, against "
                    "{random_null_decay_slope:.4f} for random tables (p = "
                    f"{{learned_decay_null_p:.3f}}): {word}.")]
