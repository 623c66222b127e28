"""Positional-encoding analyses on a 24x24 grid at dim 1024 (ViT-L/16 at 384 px).

Baseline: one float64 Gram matrix ``X @ X.T`` of the same (576, 1024) table, the unavoidable
core of every similarity study. Each analysis is reported as seconds and as a ratio to that
baseline; the target is that each finishes well under a second.
"""

from __future__ import annotations

import numpy as np

from benchmarks._common import Row, median_time, print_rows
from probing import posenc as P

GRID = (24, 24)
DIM = 1024


def run(quick: bool = False) -> list[Row]:
    """Time sincos tables, similarity grids, decay curves and resampling against one matmul."""
    repeat = 3 if quick else 7
    rng = np.random.default_rng(0)
    learned = rng.standard_normal((GRID[0] * GRID[1], DIM))
    sincos = P.sincos_2d(GRID, DIM)
    frame = P.table_frame(learned, GRID)
    base = median_time(lambda: learned @ learned.T, repeat=repeat)
    cases = {
        "sincos_2d 24x24 d1024": lambda: P.sincos_2d(GRID, DIM),
        "sincos_1d 576 d1024": lambda: P.sincos_1d(576, DIM),
        "similarity_grid cosine (array)": lambda: P.similarity_grid(sincos, GRID),
        "similarity_grid cosine (frame)": lambda: P.similarity_grid(frame),
        "similarity_frame (331,776 rows)": lambda: P.similarity_frame(sincos, GRID),
        "decay_2d by offset": lambda: P.decay_2d(learned, GRID),
        "decay_2d by distance + halving": lambda: P.halving_distance(
            P.decay_2d(learned, GRID, by="distance")),
        "decay_1d 576 positions x 4 starts": lambda: P.decay_1d(P.sincos_1d(576, DIM)),
        "resample 24x24 -> 32x32": lambda: P.resample(learned, (32, 32), GRID),
    }
    rows = [Row("baseline: X @ X.T (576x1024, f64)", base, None, "s", "")]
    for name, fn in cases.items():
        t = median_time(fn, repeat=repeat)
        rows.append(Row(f"{name} (ratio vs matmul)", t, base, "s", "<= 5"))
        rows.append(Row(f"{name} under 1 s", t, 1.0, "s", "< 0.25"))
    return rows


if __name__ == "__main__":
    print_rows(run())
