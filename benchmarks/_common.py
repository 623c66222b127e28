"""Shared benchmark helpers: timing, peak memory and the one result-table format.

Every benchmark module exposes ``run(quick: bool = False) -> list[Row]`` and, as a script,
prints :func:`format_table` of its rows. ``python -m benchmarks`` runs them all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Row", "cached_gram_cka", "format_table", "interleaved_clocks", "interleaved_times",
           "median_time", "paired_times", "print_rows", "random_vit", "vit_cls_features"]


@dataclass
class Row:
    """One benchmark figure.

    ``ratio`` is ``measured / baseline`` (both in ``unit``) unless given; ``target`` is a
    comparison such as ``"<= 1.05"`` or ``">= 10"`` applied to ``ratio``. A row comparing
    outputs (the peer table) gives ``diff``, the max absolute difference of ours and the
    reference, and ``tol``, the stated tolerance: beyond it the row fails whatever the times.
    """

    figure: str
    measured: float
    baseline: float | None
    unit: str
    target: str
    ratio: float | None = None
    diff: float | None = None
    tol: float | None = None
    wall: float | None = None
    wall_baseline: float | None = None
    wall_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.measured / self.baseline

    @property
    def outputs_differ(self) -> bool:
        """Whether the outputs compared differ beyond the stated tolerance (NaN differs)."""
        return self.tol is not None and not (self.diff is not None and self.diff <= self.tol)

    @property
    def met(self) -> bool:
        """Whether the outputs agree (when compared) and the ratio meets the target."""
        if self.outputs_differ:
            return False
        if self.ratio is None or not self.target:
            return True
        op, value = self.target.split()
        value = float(value)
        return {"<=": self.ratio <= value, ">=": self.ratio >= value,
                "<": self.ratio < value, ">": self.ratio > value}[op]

    def as_dict(self) -> dict:
        """Plain-dict form with ``met`` included (for JSON)."""
        d = asdict(self)
        d["met"] = self.met
        return d


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_times(a: Callable[[], object], b: Callable[[], object],
                 repeat: int = 7) -> tuple[float, float]:
    """Median times of ``a`` and ``b`` run alternately (one warm-up each), so that load from
    other processes on a shared machine hits measurement and baseline alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def interleaved_times(fns: list[Callable[[], object]], repeat: int = 7) -> list[float]:
    """Median wall times of several callables run round-robin (one warm-up round): the n-way
    :func:`paired_times`, so that every ratio between them comes from the same rounds."""
    return [wall for _, wall in interleaved_clocks(fns, repeat)]


def interleaved_clocks(fns: list[Callable[[], object]],
                       repeat: int = 7) -> list[tuple[float, float]]:
    """``(median process CPU time, median wall time)`` of each callable, run round-robin after
    one warm-up round. CPU time (:func:`time.process_time`, all threads of this process) is
    what a loaded machine disturbs least: time spent waiting for a core is not counted."""
    for fn in fns:
        fn()
    cpu: list[list[float]] = [[] for _ in fns]
    wall: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, c, w in zip(fns, cpu, wall):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            w.append(time.perf_counter() - w0)
            c.append(time.process_time() - c0)
    return [(statistics.median(c), statistics.median(w)) for c, w in zip(cpu, wall)]


def format_table(rows: list[Row], markdown: bool = False) -> str:
    """Rows as a fixed-width text table, or (``markdown``) a Markdown table: the same cells,
    the ratio as each row holds it (the README's tables are pasted from this)."""
    head = ("figure", "measured", "baseline", "unit", "ratio", "target", "max|diff|", "tol",
            "met")
    walls = any(r.wall is not None for r in rows)
    if walls:
        head = (*head, "wall (s)", "wall ratio")
    body = [
        (
            r.figure,
            f"{r.measured:.4g}",
            "-" if r.baseline is None else f"{r.baseline:.4g}",
            r.unit,
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target or "-",
            "-" if r.diff is None else f"{r.diff:.1e}",
            "-" if r.tol is None else f"{r.tol:.0e}",
            "NO (outputs differ)" if r.outputs_differ else ("yes" if r.met else "NO"),
        ) + (_wall_cells(r) if walls else ())
        for r in rows
    ]
    if markdown:
        def line(cells) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        rule = ["---" if i in (0, 3, 5, 8) else "---:" for i in range(len(head))]
        return "\n".join([line(head), "| " + " | ".join(rule) + " |", *map(line, body)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _wall_cells(r: Row) -> tuple[str, str]:
    """``measured / baseline`` wall seconds and their ratio."""
    if r.wall is None or r.wall_baseline is None:
        return "-", "-"
    ratio = "-" if r.wall_ratio is None else f"{r.wall_ratio:.3f}"
    return f"{r.wall:.4g} / {r.wall_baseline:.4g}", ratio


def print_rows(rows: list[Row], markdown: bool = False) -> None:
    """Print the rows as a table (``markdown``: as a Markdown table)."""
    print(format_table(rows, markdown))


def cached_gram_cka(mats: list[np.ndarray]) -> np.ndarray:
    """Baseline linear CKA ``(L, L)`` of ``L`` matrices ``(n, d)``: one cached centred float64
    Gram per layer, then pairwise HSIC ratios (the peers and probes benchmarks' baseline)."""
    grams = []
    for X in mats:
        c = X.astype(np.float64)
        c -= c.mean(axis=0)
        grams.append(c @ c.T)
    norms = [np.sqrt(np.vdot(K, K)) for K in grams]
    out = np.eye(len(grams))
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            out[i, j] = out[j, i] = np.vdot(grams[i], grams[j]) / (norms[i] * norms[j])
    return out


def random_vit(name: str, img_size: int = 224) -> torch.nn.Module:
    """A timm ViT with random (seeded) weights, in eval mode."""
    import timm
    import torch

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, img_size=img_size).eval()


def vit_cls_features(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Real probe features: CLS of blocks 1..12 of a random-init ``vit_small`` (48 px) over
    ``n`` ``shapes`` images, one ``(n, 384)`` matrix per block (rows by ``image_id``), and
    the ``(n,)`` shape labels."""
    from probing import extract
    from probing.data import open_source
    from probing.frames import embedding_matrix

    model = random_vit("vit_small_patch16_224", img_size=48)
    source = open_source(f"shapes:n={n},size=48")
    frame = extract(model, source, layers=list(range(1, 13)), kinds=("cls",), batch_size=256,
                    progress=False)
    frame = frame.sort_values(["layer", "image_id"], kind="stable")
    mats = [embedding_matrix(g) for _, g in frame.groupby("layer", sort=True)]
    y = source.labels()["shape_id"].to_numpy().astype(np.int64)
    return mats, y
