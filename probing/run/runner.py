"""Run a spec: extract (or reuse the store), run each analysis, write the report.

The store of a run lives in ``<spec.store>/<key>`` where ``key`` is the hash of its whole
manifest (:func:`probing.store.manifest_key` of :func:`probing.extract.store_manifest`), so
rerunning an unchanged spec finds the complete store. Each analysis's section is cached in the
store (:mod:`probing.run.cache`), keyed by the store, its parameters, its file and probing's
code, so a rerun recomputes only the analyses whose inputs changed.

A spec with several ``[[model]]`` entries extracts each model over the same data with the same
capture into a store of its own (the store key holds the model), runs the single-model analyses
on the first (primary) model and gives every analysis ``ctx.models``; section and report keys
then hash every model's store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..card import model_card
from ..constraints import respell
from ..data import open_source, select_source
from ..errors import AnalysisError, ConfigError, ProbingError, ReportError
from ..extract import extract, shard_job, store_manifest
from ..figfiles import render_settings, settings_key
from ..models import LoadedModel, load_model
from ..ownership import check_report_target
from ..report import Report
from ..sections import Section
from ..seeding import seeded
from ..selection import resolve_layers, to_selection
from ..store import EmbeddingStore, manifest_covers, manifest_key
from ..threads import ThreadLimit, thread_scope, threads_for_model
from .cache import load_section, package_digest, save_section, section_key
from .checks import check_columns, check_layout
from .context import RunContext, run_analysis
from .parallel import AnalysisPool, analysis_processes, requested_processes
from .registry import PACKAGE_ANALYSES, AnalysisModule, analysis_dirs, get_analysis
from .spec import ModelSpec, RunSpec, check_params, dump_toml, load_spec, model_name, spec_models

__all__ = ["RunContext", "RunResult", "demo_spec_path", "run_spec"]

log = logging.getLogger("probing")

#: The spec table of each option an error message may suggest (:func:`probing.constraints.respell`).
_SPEC_TABLES = {"on_error": "data.options", "pretrained": "model", "arch": "model"}


def demo_spec_path() -> Path:
    """The demo spec installed with probing (never one from the working directory)."""
    path = PACKAGE_ANALYSES / "demo.toml"
    if not path.is_file():
        raise AnalysisError(
            f"the demo spec {path} is missing from this installation; reinstall probing "
            "('pip install .' from its source)."
        )
    return path


@dataclass
class RunResult:
    """What :func:`run_spec` did."""

    report_dir: Path
    store: EmbeddingStore
    timings: dict[str, float]
    reused_store: bool
    reused_report: bool = False


def _run_key(store: EmbeddingStore, spec_text: str, modules: Iterable[AnalysisModule],
             others: Iterable[EmbeddingStore] = ()) -> str:
    """Hash of everything a report depends on: the store (manifest and shard markers), the
    stores of the other models, the resolved spec, the analysis files and probing's own source
    files (and report template)."""
    h = hashlib.sha256()
    h.update(_content_key(store, others).encode())
    h.update(spec_text.encode())
    for m in modules:
        h.update(m.path.name.encode())
        h.update(Path(m.path).read_bytes())
    h.update(package_digest((".py", ".html")).encode())
    return h.hexdigest()[:20]


def _content_key(store: EmbeddingStore, others: Iterable[EmbeddingStore] = ()) -> str:
    """The content key of the primary store, combined with those of the other models' stores
    (the primary's own key when there are none, so single-model caches stay valid)."""
    keys = [store.content_key(), *(o.content_key() for o in others)]
    if len(keys) == 1:
        return keys[0]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


@dataclass
class _ModelStore:
    """One model of a spec, loaded, with its store and extraction settings."""

    name: str
    loaded: LoadedModel
    capture: dict
    settings: dict
    job: Any
    store: EmbeddingStore
    reused: bool


def _model_opts(model: ModelSpec) -> dict:
    """The :func:`probing.models.load_model` keyword arguments of a ``[model]`` table."""
    return {"pretrained": model.pretrained, "arch": model.arch, "mapping": model.mapping,
            "mapping_options": model.mapping_options, "preprocessing": model.preprocessing,
            "device": model.device, **model.options}


def _model_store(spec: RunSpec, model: ModelSpec, loaded: LoadedModel, source: Any,
                 modules: list[AnalysisModule]) -> _ModelStore:
    """The capture settings of ``loaded`` (the spec's [capture] merged with the analyses'
    needs) and the store it reads (:func:`_select_store`; one per model, since the store key
    holds the model's fingerprint and preprocessing)."""
    capture = _capture_settings(spec, modules, loaded)
    settings = {"layers": capture["layers"], "kinds": capture["kinds"],
                "pooled": capture["pooled"], "attention": capture["attention"],
                "batch_size": spec.capture.batch_size, "dtype": spec.capture.dtype,
                "autocast": spec.capture.autocast, "shard_size": spec.capture.shard_size,
                "num_workers": spec.capture.num_workers}
    job = shard_job(loaded, **settings)
    wanted = store_manifest(loaded, source, job.capture_config(), job.shard_size)
    store, reused = _select_store(Path(spec.store), wanted, job.n_shards(len(source)))
    return _ModelStore(model_name(model), loaded, capture, settings, job, store, reused)


def _other_models(spec: RunSpec, source: Any, modules: list[AnalysisModule],
                  client: Any) -> list[_ModelStore]:
    """The spec's models after the primary, loaded, with their stores (not yet extracted).

    Each is built under the spec's seed, as the primary is (and as it would be as the one
    model of a spec): a random-init model gets the same weights in any position."""
    rest = spec_models(spec)[1:]
    if rest and client is not None:
        raise ConfigError(
            f"the spec has {len(rest) + 1} [[model]] entries, which run in-process only; drop "
            "--workers/--scheduler or keep one model.")
    out = []
    for m in rest:
        with seeded(spec.seed):  # built as in a spec of its own: random-init weights alike
            loaded = load_model(m.spec, **_model_opts(m))
        out.append(_model_store(spec, m, loaded, source, modules))
    return out


def _complete(store: EmbeddingStore, n_shards: int) -> bool:
    return set(range(n_shards)) <= set(store.done_shards())


def _select_store(root: Path, wanted: dict, n_shards: int) -> tuple[EmbeddingStore, bool]:
    """The store a run reads, and whether it is reused as it is.

    The run's own store is ``root / manifest_key(wanted)``. It is reused when it is complete and
    its manifest serves ``wanted``; otherwise any complete store under ``root`` that serves
    ``wanted`` (a wider capture of the same model and data: removing an analysis, or asking
    for fewer layers, never extracts again). Both decisions go through
    :func:`probing.store.manifest_covers`. Otherwise the run extracts into its own store (whose
    manifest, when one is there, must then equal ``wanted``).
    """
    own = EmbeddingStore(root / manifest_key(wanted))
    others = sorted(p for p in root.iterdir() if p.is_dir() and p != own.path) \
        if root.is_dir() else []
    for store in [own, *(EmbeddingStore(p) for p in others)]:
        try:
            manifest = store.manifest
        except ProbingError:
            continue
        if manifest is not None and manifest_covers(manifest, wanted) \
                and _complete(store, n_shards):
            return store, True
    return own, False


def _report_is_current(out_dir: Path, run_key: str) -> bool:
    try:
        prov = json.loads((out_dir / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return prov.get("run_key") == run_key and (out_dir / "index.html").is_file()


def _capture_settings(spec: RunSpec, modules: Iterable[AnalysisModule],
                      loaded: LoadedModel) -> dict:
    """The spec's [capture] table merged with what the analyses need.

    Kinds the spec asks for must exist in the model (an error otherwise); kinds an analysis
    needs but the model lacks (CLS on a model without one) are left out, and the analysis
    handles their absence.
    """
    cap = spec.capture
    modules = list(modules)
    kinds = list(dict.fromkeys(cap.kinds))
    pooled = cap.pooled
    attention = cap.attention
    for m in modules:
        kinds += [k for k in m.needs.get("kinds", []) if k not in kinds
                  and (k == "pooled" or k in loaded.layout.kinds)]
        attention = attention or bool(m.needs.get("attention", False))
        pooled = pooled or m.needs.get("pooled")
    labels = set(resolve_layers(cap.layers, loaded.depth))
    for m in modules:
        if m.needs.get("layers"):
            labels |= set(resolve_layers(m.needs["layers"], loaded.depth))
    # one canonical selection (labels written back as names and block numbers), "all" kept
    # as it is when nothing beyond 0..depth was asked for
    layers = "all" if labels == set(resolve_layers("all", loaded.depth)) else \
        to_selection(labels)
    return {"kinds": kinds, "pooled": pooled, "attention": attention, "layers": layers}


def output_guard(spec: RunSpec) -> dict[Path, str]:
    """Folders a run's report may neither replace, contain nor lie in: its store folder and the
    analyses folders (see :func:`probing.ownership.check_report_target`)."""
    guard = {Path(spec.store): "the spec's store folder"}
    guard.update({d: "an analyses folder" for d in analysis_dirs()})
    return guard


def check_writable(path: Path, what: str, option: str) -> None:
    """Raise ReportError before any work when ``path`` could not be created or replaced.

    A report or store folder is created (and a report swapped in) inside its parent, so the
    nearest existing folder at or above the parent must be a writable folder.
    """
    probe = Path(path).absolute().parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ReportError(f"{what} {path} cannot be created: {probe} is a file; choose another "
                          f"folder for {option}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ReportError(f"{what} {path} is not writable ({probe} is read-only); choose a "
                          f"writable folder for {option}.")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("probing", "torch", "timm", "numpy", "pandas", "pyarrow", "scikit-learn",
                "scipy", "captum", "matplotlib", "jinja2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _git_revision() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parents[2])
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def run_spec(
    spec: RunSpec | str | os.PathLike,
    out: str | os.PathLike | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    quiet: bool = False,
    force: bool = False,
    processes: int | None = None,
) -> RunResult:
    """Run a spec end to end.

    Rerunning is incremental: a complete store for the same model, data and capture settings
    is reused (no extraction), an analysis whose store, parameters, file and probing code are
    unchanged takes its cached section (provenance ``analyses.NAME.cached``), and when the
    report in ``out`` was made by the same resolved spec, the same analysis files and the same
    probing code, nothing is recomputed at all (``force=True`` recomputes analyses and report
    anyway).

    Parameters
    ----------
    spec : RunSpec or path
        The spec (or the path of its TOML file).
    out : path, optional
        Report directory; overrides the spec's ``output``.
    workers : int, optional
        Run extraction shards and analyses as tasks on a new local Dask cluster of ``workers``
        processes (:mod:`probing.run.distributed`; needs ``pip install 'probing[dask]'``).
    scheduler : str, optional
        Run them on the Dask cluster whose scheduler is at this address instead. Results are
        identical to the default in-process run.
    quiet : bool
        No progress bars. Progress messages go to the ``probing`` logger at INFO level
        (silent unless logging is configured; the CLI shows them unless ``--quiet``).
    force : bool
        Recompute analyses and the report even when they are up to date.
    processes : int, optional
        Processes that run the analyses of an in-process run (1: one after another in this
        process). Default: ``$PROBING_PROCESSES``, else (or ``auto``) decided per run
        (:func:`probing.run.parallel.analysis_processes`: as many as there are free CPUs and
        analyses to run when the model is tiny enough to run on one thread, else 1). Results
        are identical for any value, figures included, byte for byte.

    Returns
    -------
    RunResult
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    spec = spec if isinstance(spec, RunSpec) else load_spec(spec)
    out_dir = Path(out if out is not None else spec.output)
    protect = output_guard(spec)
    check_report_target(out_dir, protect)
    check_writable(out_dir, "report output", "--out (or the spec's output)")
    check_writable(Path(spec.store), "store folder", "the spec's store")
    modules = [get_analysis(name) for name in spec.analyses]
    params = {m.name: check_params(m.name, spec.analyses[m.name] or {}, m.params)
              for m in modules}
    processes = requested_processes(processes)  # a bad number or $PROBING_PROCESSES, now
    try:
        # the run is seeded (the caller's global torch RNG is left as it was); thread limits
        # for a tiny model end with the run
        with seeded(spec.seed), thread_scope() as threads:
            if workers is None and scheduler is None:
                return _run_spec(spec, out_dir, modules, params, None, quiet, t_start, timings,
                                 force, threads, processes)
            from .distributed import dask_client

            with dask_client(workers, scheduler) as client:
                return _run_spec(spec, out_dir, modules, params, client, quiet, t_start,
                                 timings, force)
    except ProbingError as exc:  # options the message suggests, as the spec writes them
        if getattr(exc, "suggests", None):
            exc.args, exc.suggests = (respell(exc, "spec", _SPEC_TABLES),), {}
        raise


def _card(ctx: RunContext, store_content: str, context: dict, force: bool
          ) -> tuple[Section, dict]:
    """The model and data card (:func:`probing.card.model_card`), cached as sections are, and
    its provenance entry (``cached``, ``cache_key``)."""
    key = section_key(store_content, "card", {}, Path(model_card.__code__.co_filename), context)
    if not force and (hit := load_section(ctx.store, key)) is not None:
        return hit, {"cached": True, "cache_key": key}
    card = model_card(ctx.model, ctx.source, ctx.store, ctx.batch_size, ctx.stratify,
                      progress=False if ctx.quiet else None)
    card.check_numbers()
    save_section(ctx.store, key, card)
    return card, {"cached": False, "cache_key": key}


def _run_spec(spec: RunSpec, out_dir: Path, modules: list[AnalysisModule], params: dict,
              client: Any, quiet: bool, t_start: float, timings: dict[str, float],
              force: bool = False, threads: ThreadLimit | None = None,
              processes: int | None = None) -> RunResult:
    """The body of :func:`run_spec`: in-process when ``client`` is None, else on Dask."""
    t = time.perf_counter()
    model_opts = _model_opts(spec.model)
    # the data first: a bad source option is reported before the model is built or loaded
    source = select_source(open_source(spec.data.source, **spec.data.options), spec.data.where,
                           spec.data.n).keep_images()  # read by extraction, card, analyses
    check_columns(modules, params, source)  # a typo in a label column, before the model loads
    loaded = load_model(spec.model.spec, **model_opts)
    n_threads = threads_for_model(sum(p.numel() for p in loaded.model.parameters()))
    if threads is not None:  # one torch / BLAS thread for a tiny model (probing.threads)
        threads.limit(n_threads)

    primary = _model_store(spec, spec.model, loaded, source, modules)
    capture, settings, job, store, reused = (primary.capture, primary.settings, primary.job,
                                             primary.store, primary.reused)
    check_layout(modules, params, loaded, capture)  # layers and kinds, before any work
    others = _other_models(spec, source, modules, client)
    timings["load"] = time.perf_counter() - t
    spec_text = dump_toml(spec, params)
    other_stores = [o.store for o in others]
    if reused and all(o.reused for o in others) and not force and _report_is_current(
            out_dir, _run_key(store, spec_text, modules, other_stores)):
        log.info("report %s is up to date (same spec, store, analyses and code)", out_dir)
        timings["total"] = time.perf_counter() - t_start
        return RunResult(report_dir=out_dir, store=store, timings=timings, reused_store=True,
                         reused_report=True)
    if client is not None:
        from .distributed import data_recipe, model_recipe

        recipes = (model_recipe(spec.model.spec, spec.seed, **model_opts),
                   data_recipe(spec.data.source, spec.data.n, where=spec.data.where,
                               selection=spec.data.selection, stratify=spec.data.stratify,
                               **spec.data.options))
    t = time.perf_counter()
    if not reused:
        log.info("extracting %d images from %s into %s", len(source), loaded.name, store.path)
        if client is None:
            extract(loaded, source, store=store, progress=None if not quiet else False,
                    **settings)
        else:
            from .distributed import extract_on_dask

            extract_on_dask(client, *recipes, loaded, source, store, job)
    for other in others:
        if not other.reused:
            log.info("extracting %d images from %s into %s", len(source), other.loaded.name,
                     other.store.path)
            extract(other.loaded, source, store=other.store,
                    progress=None if not quiet else False, **other.settings)
    timings["extract"] = time.perf_counter() - t
    if skipped := store.skipped():  # (an extraction in this run has warned of its own)
        (log.warning if reused else log.info)(
            "%d of %d images were skipped as unreadable; the report lists them in %s "
            "(data.skipped)", len(skipped), len(source), out_dir / "provenance.json")
    run_key = _run_key(store, spec_text, modules, other_stores)  # of the complete stores
    store_content = _content_key(store, other_stores)

    ctx = RunContext(model=loaded, source=source, store=store, seed=spec.seed,
                     batch_size=spec.capture.batch_size, quiet=quiet,
                     selection=spec.data.selection, stratify=spec.data.stratify)
    _attach_models(ctx, primary.name, others)
    report = Report(title=spec.title, subtitle=(
        f"Model {loaded.name} ({loaded.depth} blocks, width {loaded.embed_dim}, grid "
        f"{loaded.layout.rows}x{loaded.layout.cols}); data {source.name} ({len(source)} images); "
        f"seed {spec.seed}." + "".join(f" Compared with {o.name} ({o.loaded.name})."
                                       for o in others)))
    render = render_settings(spec.formats, spec.style)
    # the figure settings too: a cached section may hold its figures' files only (drawn in a
    # worker), which are right only for the same formats and resolution
    context = {"seed": spec.seed, "style": spec.style, "device": spec.model.device,
               "batch_size": spec.capture.batch_size, "selection": spec.data.selection,
               "stratify": spec.data.stratify, "figures": settings_key(render)}
    t = time.perf_counter()
    card, card_entry = _card(ctx, store_content, context, force)
    report.add(card)  # the first section of every report
    timings["card"] = time.perf_counter() - t
    keys = {m.name: section_key(store_content, m.name, params[m.name], m.path, context)
            for m in modules}
    cached: dict[str, tuple[Section, float]] = {}
    for m in [] if force else modules:
        t = time.perf_counter()
        if (hit := load_section(store, keys[m.name])) is not None:
            cached[m.name] = (hit, time.perf_counter() - t)
    todo = [m for m in modules if m.name not in cached]
    if client is not None and todo:
        from .distributed import run_analyses_on_dask

        log.info("analyses %s on Dask ...", ", ".join(m.name for m in todo))
        done = dict(zip([m.name for m in todo],
                        run_analyses_on_dask(client, *recipes, store, spec.seed,
                                             spec.capture.batch_size, todo, params, spec.style)))
    analyses: dict[str, dict] = {}
    n_procs = analysis_processes(processes, len(todo), n_threads == 1) if client is None else 1
    # workers draw their figures with the report's settings and cache their sections
    with AnalysisPool(ctx, todo, params, spec.style, n_procs,
                      render=render, keys=keys) as pool:
        for m in modules:
            t = time.perf_counter()
            saved = False
            if m.name in cached:
                section, seconds = cached[m.name]
                t -= seconds
            elif m.name in pool:  # run in a worker process
                section, seconds, saved, drawn = pool.result(m.name)
                t = time.perf_counter() - seconds  # its own seconds, not the wait for it
                timings["figures_in_workers"] = timings.get("figures_in_workers", 0.0) + drawn
            elif client is None:
                log.info("analysis %s ...", m.name)
                section = run_analysis(m.run, ctx, params[m.name], spec.style, name=m.name)
            else:
                section, seconds = done[m.name]
                t -= seconds
            if not isinstance(section, Section):
                raise AnalysisError(f"analysis {m.name!r} returned {type(section).__name__}, "
                                    "not a Section; return probing.sections.Section.")
            section.name = section.name or m.name
            if m.name not in cached:
                section.check_numbers()  # an invalid section fails now, and is never cached
                if not saved:  # (a worker caches what it ran)
                    save_section(store, keys[m.name], section)
            report.add(section)
            timings[f"analysis:{m.name}"] = time.perf_counter() - t
            analyses[m.name] = {"cached": m.name in cached, "cache_key": keys[m.name]}

    t = time.perf_counter()
    provenance = {
        "versions": _versions(),
        "git_revision": _git_revision(),
        "platform": platform.platform(),
        "model": {"name": loaded.name, "arch": loaded.arch, "fingerprint": loaded.fingerprint,
                  "data_config": loaded.data_config},
        "data": {"describe": source.describe(), "fingerprint": source.fingerprint(),
                 "n_images": len(source), "skipped": store.skipped()},
        "models": {m.name: {"name": m.loaded.name, "arch": m.loaded.arch,
                            "fingerprint": m.loaded.fingerprint, "store": str(m.store.path),
                            "reused": m.reused, "key": manifest_key(m.store.manifest)}
                   for m in [primary, *others]},
        "seed": spec.seed,
        "store": {"path": str(store.path), "reused": reused, "capture": capture,
                  "key": manifest_key(store.manifest), "content_key": store_content},
        "analyses": analyses,
        "analysis_processes": n_procs,
        "card": card_entry,
        "spec_path": spec.source_path,
        "timings_s": timings,
        "run_key": run_key,
    }

    def final_provenance() -> dict:  # called by the writer once figures and tables are written
        timings["report"] = time.perf_counter() - t
        timings["report_figures"] = report.figure_seconds  # of "report", apart from tables
        timings["total"] = time.perf_counter() - t_start
        return provenance

    report.write(out_dir, spec_text=spec_text, provenance=final_provenance,
                 style=spec.style, protect=output_guard(spec), formats=tuple(spec.formats))
    return RunResult(report_dir=out_dir, store=store, timings=timings, reused_store=reused)


def _attach_models(ctx: RunContext, name: str, others: list[_ModelStore]) -> None:
    """Fill ``ctx.models`` (name -> RunContext, the primary ``ctx`` first); every model's
    context shares the same dict, data, seed and batch size."""
    ctx.name = name
    ctx.models = {name: ctx}
    for other in others:
        ctx.models[other.name] = RunContext(
            model=other.loaded, source=ctx.source, store=other.store, seed=ctx.seed,
            batch_size=ctx.batch_size, quiet=ctx.quiet, selection=ctx.selection,
            stratify=ctx.stratify, name=other.name, models=ctx.models)
