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
(c) The analyses stage (``layer_probes`` with CLS, pooled and per-patch ridge probes and the
    random-init control, ``cka``, ``position_probes``, ``embedding_map`` PCA) on a store of a
    12-block random-init ViT-Tiny (32 px, patch 4: 65 tokens of width 192), each measurement in
    a fresh subprocess. Peak RSS (``ru_maxrss``) is taken as the increase over a baseline of
    the same process after it imported everything, built the model and opened the store (its
    resident size, with the peak reset through ``/proc/self/clear_refs`` on Linux), so
    the figure is the analyses' own memory: at 12 vs 3 layers analysed (same images) it must
    be flat; at 4N vs N images it is compared per byte of one layer's token rows (what a
    one-layer-at-a-time stage holds), which must be flat too. A third row, in runs of its
    own, takes the peak of what numpy and Python hold (``tracemalloc``) at 12 vs 3 layers:
    RSS also counts pages that the allocators (glibc's heap, Arrow's pool) keep after a free,
    which grow with the number of reads (2026-12-02: RSS 306 vs 267 MB over the baseline,
    1.15, while the traced peak was 74.2 vs 74.2 MB; the 3-layer RSS ranged 212-270 MB over
    three runs of one store).
(d) A 5-fold ridge probe sweep on ``10^6 x 192`` vs ``2.5 x 10^5 x 192`` rows (per-patch scale:
    5,000 images x 197 tokens): time ratio ~4 when the solve is linear in rows (``d x d``
    statistics, never ``n x n``).
(e) The report stage (figures drawn and saved as PNG + SVG, tables, HTML, provenance) of one
    spec run (the demo model; embedding_map PCA, layer_probes, cka, attention_maps,
    attention_distance) at ``4N`` vs ``N`` images, each run in a fresh subprocess with its own
    store: ``timings_s["report"]`` of provenance.json. The analyses run serially
    (``processes=1``), so the report stage draws every figure (with parallel analyses the
    workers draw them and the stage only writes bytes: the two runs would then measure
    different work whenever the load average let one of them run in parallel). The figures
    are the same; only the points of the embedding scatter grow with the images, so the time
    must stay near flat.
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


_ANALYSES = """
import json, resource, sys, torch
torch.manual_seed(0)
torch.set_num_threads(1)
from probing import load_model
from probing.data import open_source
from probing.run.context import RunContext, run_analysis
from probing.run.registry import load_analysis
from probing.store import EmbeddingStore
from pathlib import Path
import analyses, probing.plots  # noqa: F401  (imported before the baseline)
store_path, n, layers = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
model = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4)
ctx = RunContext(model=model, source=open_source("shapes:n=" + str(n)),
                 store=EmbeddingStore(store_path), seed=0, batch_size=64, quiet=True)
ctx.labels()
modules = {name: load_analysis(Path("analyses") / (name + ".py")) for name in
           ("layer_probes", "cka", "position_probes", "embedding_map")}
params = {"layer_probes": dict(kinds=["cls", "pooled", "patch"], solver="ridge", cv=3,
                               raw_pixels=False, layers=layers),
          "cka": dict(layers=layers, n_boot=50),
          "position_probes": dict(layers=layers, cv=3),
          "embedding_map": dict(layers=layers, methods=["pca"])}
def status(key):  # MB from /proc/self/status (Linux); None elsewhere
    try:
        return [int(x.split()[1]) / 1024 for x in open("/proc/self/status")
                if x.startswith(key + ":")][0]
    except (OSError, IndexError):
        return None
try:  # reset the peak (VmHWM) so that it is the analyses' own, over the current RSS
    open("/proc/self/clear_refs", "w").write("5")
    base = status("VmRSS")
except OSError:
    base = None
base = base if base is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
traced = sys.argv[4:] == ["traced"]
if traced:  # what numpy and Python hold, without the allocators' retained pages
    import tracemalloc
    tracemalloc.start()
for name, module in modules.items():
    run_analysis(module.run, ctx, params[name], name=name)
peak = status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"base_mb": base, "peak_mb": peak,
                  "traced_mb": tracemalloc.get_traced_memory()[1] / 2**20 if traced else None}))
"""

_TINY = """
import sys
from probing import extract, load_model
m = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4)
extract(m, "shapes:n=" + sys.argv[2], store=sys.argv[1], kinds=("cls", "patch"),
        pooled="mean", batch_size=64, shard_size=64, progress=False)
"""


def _python(code: str, *args: str) -> str:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=3600, check=True)
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def _analyses_rows(quick: bool) -> list[Row]:
    base = 64 if quick else 256
    with tempfile.TemporaryDirectory() as tmp:
        stores = {k: str(Path(tmp) / f"s{k}") for k in (1, 4)}
        for k, path in stores.items():
            _python(_TINY, path, str(k * base))
        runs = {(k, name): json.loads(_python(_ANALYSES, stores[k], str(k * base),
                                              json.dumps(sel)))
                for k, name, sel in ((1, "3", [1, 2, 3]), (1, "12", list(range(1, 13))),
                                     (4, "12", list(range(1, 13))))}
        traced = {name: json.loads(_python(_ANALYSES, stores[1], str(base), json.dumps(sel),
                                           "traced"))["traced_mb"]
                  for name, sel in (("3", [1, 2, 3]), ("12", list(range(1, 13))))}
    grow = {key: r["peak_mb"] - r["base_mb"] for key, r in runs.items()}
    layer_mb = {k: k * base * 65 * 192 * 4 / 2**20 for k in (1, 4)}  # one layer's rows
    return [
        Row(f"(c) analyses stage peak RSS over a baseline process (imports, model, store "
            f"opened), 12 vs 3 layers, {base} images", grow[1, "12"], grow[1, "3"], "MB",
            "<= 1.1"),
        Row(f"(c) analyses stage peak RSS over a baseline process per MB of one layer's token "
            f"rows, {4 * base} vs {base} images (12 layers)", grow[4, "12"] / layer_mb[4],
            grow[1, "12"] / layer_mb[1], "MB/MB", "<= 1.1"),
        Row(f"(c) analyses stage peak of the memory numpy and Python hold (tracemalloc), 12 vs "
            f"3 layers, {base} images", traced["12"], traced["3"], "MB", "<= 1.1"),
    ]


def _per_patch_ridge_rows(quick: bool) -> list[Row]:
    from probing.probes.cv import fold_sweep, group_folds

    d, sizes = 192, ((62_500, 250_000) if quick else (250_000, 1_000_000))
    seconds = {}
    for n in sizes:
        X, _, y = _data(n, d)
        fold = group_folds(np.arange(n) // 197, 5, seed=0)  # grouped by image, 197 tokens
        seconds[n] = _time_and_memory(
            lambda X=X, y=y, fold=fold: fold_sweep(X, {"y": y}, fold, 5, solver="ridge"), 2)[0]
        del X, y, fold
    small, large = sizes
    return [Row(f"(d) per-patch ridge probe sweep time, {large:.2g} vs {small:.2g} rows x {d} "
                f"(linear: {large // small})", seconds[large], seconds[small], "s",
                f"<= {1.25 * large / small:g}")]


_REPORT_SPEC = """
title = "report-stage benchmark"
seed = 0
store = "{store}"
[model]
spec = "demo"
[data]
source = "shapes"
n = {n}
[capture]
kinds = ["cls", "patch"]
pooled = "mean"
attention = true
[analyses.embedding_map]
methods = ["pca"]
[analyses.layer_probes]
target = "label"
kinds = ["cls", "pooled"]
[analyses.cka]
kinds = ["cls", "pooled"]
[analyses.attention_maps]
n_images = 2
[analyses.attention_distance]
max_images = 64
"""

_REPORT = """
import json, sys, torch
torch.set_num_threads(1)
from probing.run.runner import run_spec
r = run_spec(sys.argv[1], out=sys.argv[2], quiet=True, processes=1)  # figures drawn here
print(json.dumps({"report_s": r.timings["report"], "total_s": r.timings["total"]}))
"""


def _report_rows(quick: bool) -> list[Row]:
    base = 64 if quick else 256
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 4):
            spec = Path(tmp) / f"spec{k}.toml"
            spec.write_text(_REPORT_SPEC.format(n=k * base, store=f"{Path(tmp).as_posix()}/s{k}"))
            seconds[k] = json.loads(_python(_REPORT, str(spec), str(Path(tmp) / f"out{k}")))
    return [Row(f"(e) report stage (figures PNG + SVG, tables, HTML) time, {4 * base} vs {base} "
                f"images (5 analyses)", seconds[4]["report_s"], seconds[1]["report_s"], "s",
                "<= 1.5")]


def run(quick: bool = False) -> list[Row]:
    """Extraction at N, 4N, 16N images; ridge probe and CKA at 10^4..10^6 rows; the analyses
    stage at 3 and 12 layers and N and 4N images; per-patch ridge at 2.5 x 10^5 and 10^6; the
    report stage at N and 4N images."""
    return (_extraction_rows(quick) + _scaling_rows(quick) + _analyses_rows(quick)
            + _per_patch_ridge_rows(quick) + _report_rows(quick))


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
