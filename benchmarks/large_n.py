"""How cost grows with N: extraction time and peak RSS, ridge probe and CKA time and memory.

(a) Extraction of the demo model (all layers, CLS + patch + mean-pooled rows) over ``N``, ``4N``
    and ``16N`` generated shape images into a fresh store, each in its own subprocess (so peak
    RSS, ``ru_maxrss``, is that run's alone). Peak RSS must stay flat (shards are written and
    dropped); the time per image at ``16N`` is compared with that at ``N``.
(b) A 5-fold ridge probe sweep (:func:`probing.probes.cv.fold_sweep`, sufficient statistics
    accumulated in float64 row chunks) and linear CKA between two layers
    (:func:`probing.similarity.linear_cka`, feature form over row chunks) on ``n = 10^4, 10^5,
    10^6`` synthetic rows of width ``d = 64``. Time (best of 2-3 calls) is compared per decade
    with the previous ``n`` scaled linearly (``10^4`` rows fit in the CPU cache, larger ones do
    not, so the first decade also shows that step); working memory (``tracemalloc`` peak of the
    call, which numpy reports to) is compared per input byte with the smallest ``n``: flat means
    no ``n x n`` or per-layer-all-rows buffer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks._common import Row, print_rows

ROOT = Path(__file__).resolve().parents[1]

_EXTRACT = """
import json, resource, sys, time, torch
torch.manual_seed(0)
torch.set_num_threads(1)
from probing import extract, load_model
m = load_model("demo")
t = time.perf_counter()
extract(m, "shapes:n=" + sys.argv[2], store=sys.argv[1], kinds=("cls", "patch"),
        pooled="mean", batch_size=64, shard_size=64, progress=False)
t = time.perf_counter() - t
print(json.dumps({"seconds": t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024}))
"""


def _extract_once(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-c", _EXTRACT, str(Path(tmp) / "s"), str(n)],
                             capture_output=True, text=True, cwd=ROOT, timeout=1800, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _extraction_rows(quick: bool) -> list[Row]:
    base = 64 if quick else 256
    runs = {k: _extract_once(k * base) for k in (1, 4, 16)}
    rows = []
    for k in (4, 16):
        rows.append(Row(f"(a) extraction peak RSS, {k * base} vs {base} images", runs[k]["rss_mb"],
                        runs[1]["rss_mb"], "MB", "<= 1.1"))
    t1, t16 = runs[1]["seconds"] / base, runs[16]["seconds"] / (16 * base)
    rows.append(Row(f"(a) extraction time per image, {16 * base} vs {base} images", t16 * 1e3,
                    t1 * 1e3, "ms", "<= 1.2"))
    return rows


def _data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    centres = rng.normal(size=(10, d)).astype(np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32) + centres[y]
    Y = X @ rng.standard_normal((d, d), dtype=np.float32) + rng.standard_normal(
        (n, d), dtype=np.float32)
    return X, Y, y


def _time_and_memory(fn, repeat: int = 3) -> tuple[float, int]:
    """Best wall time of ``repeat`` calls (the machine is shared) and one call's traced peak."""
    seconds = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        seconds = min(seconds, time.perf_counter() - t)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


def _scaling_rows(quick: bool) -> list[Row]:
    from probing.probes.cv import fold_sweep, group_folds
    from probing.similarity import linear_cka

    d = 64
    sizes = (10**4, 10**5, 10**6)
    results: dict[str, dict[int, tuple[float, int, int]]] = {"ridge probe": {}, "CKA": {}}
    for n in sizes:
        X, Y, y = _data(n, d)
        fold = group_folds(np.arange(n), 5, seed=0)
        calls = {
            "ridge probe": lambda X=X, y=y, fold=fold: fold_sweep(X, {"y": y}, fold, 5,
                                                                  solver="ridge"),
            "CKA": lambda X=X, Y=Y: linear_cka(X, Y, method="feature"),
        }
        for name, fn in calls.items():
            seconds, peak = _time_and_memory(fn, 3 if n < sizes[-1] else 2)
            results[name][n] = (seconds, peak, X.nbytes)
        del X, Y, y, fold
    rows = []
    small = sizes[0]
    for name, by_n in results.items():
        _, peak0, in0 = by_n[small]
        for prev, n in zip(sizes, sizes[1:]):
            t, peak, nbytes = by_n[n]
            rows.append(Row(f"(b) {name} time, n={n:.0e} vs n={prev:.0e} x {n // prev} (d={d})",
                            t, by_n[prev][0] * n / prev, "s", "<= 1.5"))
            rows.append(Row(f"(b) {name} working memory per input byte, n={n:.0e} vs "
                            f"n={small:.0e}", peak / nbytes, peak0 / in0, "B/B", "<= 1.1"))
    return rows


def run(quick: bool = False) -> list[Row]:
    """Extraction at N, 4N, 16N images; ridge probe and CKA at 10^4..10^6 rows."""
    return _extraction_rows(quick) + _scaling_rows(quick)


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
