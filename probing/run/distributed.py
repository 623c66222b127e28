"""Run extraction shards and analyses as Dask tasks (``probing run SPEC --workers N``).

The client process (the one running :func:`probing.run.runner.run_spec`) holds the store's lock,
writes the manifest and decides which shards are missing; each missing shard becomes one task.
A worker re-creates the model and the image source from *recipes* (plain dictionaries: a timm
name, checkpoint path or ``"demo"``, and a data spec string), keeps them in a per-process cache
so it loads the model once, and writes its shard's files and marker atomically into the shared
store with :func:`probing.extract.extract_shard`, the function the in-process runner calls. A
worker killed mid-shard leaves no marker, so Dask's retry (or a later rerun) redoes exactly that
shard and nothing is duplicated.

Analyses run one task per analysis: the worker builds a :class:`~probing.run.runner.RunContext` from
the same recipes and returns the analysis's :class:`~probing.sections.Section`; the client
assembles the report in spec order, so ``results.json`` is identical to an in-process run.

Dask is optional: install it with ``pip install 'probing[dask]'``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..constraints import MAX_COUNT, Interval, Name, check
from ..errors import ConfigError, ModelError, StoreError
from ..extract import ShardJob, extract_shard, open_store
from ..figpickle import dumps
from ..models import LoadedModel, load_model
from ..seeding import seeded
from ..store import EmbeddingStore

__all__ = ["SCHEDULER_TIMEOUT_S", "analysis_task", "dask_client", "data_recipe",
           "extract_on_dask", "model_recipe", "run_analyses_on_dask", "scheduler_timeout",
           "shard_task", "worker_model", "worker_source"]

log = logging.getLogger("probing")

_CACHE: dict[str, Any] = {}  # per worker process: recipe key -> LoadedModel / (source, labels)


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            "--workers/--scheduler need Dask, which is not installed; run "
            "pip install 'probing[dask]' (on the client and on every worker)."
        ) from exc
    return distributed


SCHEDULER_TIMEOUT_S = 20.0
"""Seconds to wait for a ``--scheduler`` to answer (``PROBING_SCHEDULER_TIMEOUT`` overrides)."""
WORKERS = Interval(int, 1, MAX_COUNT)


def scheduler_timeout(timeout: float | None = None) -> float:
    """``timeout``, else ``PROBING_SCHEDULER_TIMEOUT`` (seconds), else 20 s.

    Raises
    ------
    ConfigError
        When the value is not a number > 0.
    """
    if timeout is not None:
        return float(check(Name.arg("timeout"), timeout, _TIMEOUT, SCHEDULER_TIMEOUT_S))
    text = os.environ.get("PROBING_SCHEDULER_TIMEOUT", "").strip()
    if not text:
        return SCHEDULER_TIMEOUT_S
    try:
        value: Any = float(text)
    except ValueError:
        value = text
    check(Name.env("PROBING_SCHEDULER_TIMEOUT"), value, _TIMEOUT, SCHEDULER_TIMEOUT_S,
          shown=text)
    return float(value)


_TIMEOUT = Interval(float, 0, 3600, closed="right")


def _probe_scheduler(dist: Any, address: str, timeout: float) -> None:
    """Ask ``address`` for its identity within ``timeout`` seconds, or raise a ConfigError.

    ``distributed.Client`` bounds only the TCP connect by its timeout, not the handshake that
    follows: a port that accepts connections and never answers would hang it, and one that
    answers with something else than Dask's protocol can make it allocate exabytes. This
    probe runs in its own thread and event loop, so it is bounded even where a loop is running.
    """
    import asyncio
    import threading

    async def identity() -> Any:
        comm = await dist.comm.connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["reply"] = asyncio.run(asyncio.wait_for(identity(), timeout))
        except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="probing-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    exc = result.get("error")
    fix = ("check the address (tcp://HOST:PORT of a running `dask scheduler`, port 8786 by "
           "default)")
    if thread.is_alive() or isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        raise ConfigError(
            f"the Dask scheduler {address} did not answer within {timeout:g} s; {fix}, or wait "
            "longer with PROBING_SCHEDULER_TIMEOUT=SECONDS."
        ) from exc
    if isinstance(exc, OSError):
        raise ConfigError(
            f"cannot reach the Dask scheduler {address} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); {fix} and that the "
            "scheduler is running."
        ) from exc
    reply = result.get("reply")
    if exc is not None or not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        what = (f"reading its answer raised {type(exc).__name__}" if exc is not None
                else f"it answered {str(reply)[:40]!r}")
        raise ConfigError(
            f"{address} is not a Dask scheduler ({what}); {fix}."
        ) from exc


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                timeout: float | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: a new local cluster of ``workers`` processes, or ``scheduler``.

    Parameters
    ----------
    workers : int, optional
        Start a ``LocalCluster(n_workers=workers, processes=True, threads_per_worker=1)`` that
        lives as long as the context.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); its workers must have probing (and
        the analyses folder, the model weights and the data) at the same paths.
    timeout : float, optional
        Seconds to wait for ``scheduler`` to answer (connect and handshake) before giving up;
        default ``PROBING_SCHEDULER_TIMEOUT`` from the environment, else 20.

    Raises
    ------
    ConfigError
        Both or neither given, a worker count out of range, Dask missing, or a scheduler that
        cannot be reached, does not answer within ``timeout`` or does not speak Dask.
    """
    if (workers is None) == (scheduler is None):
        raise ConfigError("give either workers=N or scheduler=ADDRESS, not both or neither.")
    if workers is not None:
        check(Name.arg("workers"), workers, WORKERS, 4)
    if scheduler is not None and not isinstance(scheduler, str):
        raise ConfigError(f"scheduler={scheduler!r} is not an address; pass e.g. "
                          "'tcp://127.0.0.1:8786'.")
    seconds = scheduler_timeout(timeout) if scheduler is not None else None
    dist = _distributed()
    cluster = None
    try:
        if scheduler is not None:
            _probe_scheduler(dist, scheduler, seconds)
            client = dist.Client(scheduler, timeout=seconds)
        else:
            cluster = dist.LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            client = dist.Client(cluster)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - Dask raises OSError, TimeoutError, ValueError ...
        if cluster is not None:
            cluster.close()
        raise ConfigError(
            f"cannot reach the Dask scheduler {scheduler or 'of the local cluster'} "
            f"({type(exc).__name__}); check the address and that the scheduler is running."
        ) from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _absolute(text: str) -> str:
    """An existing relative path made absolute (workers may run elsewhere); names unchanged."""
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def model_recipe(spec: Any, seed: int = 0, **options: Any) -> dict:
    """A picklable description from which a worker re-creates the model.

    Parameters
    ----------
    spec : str or path
        A timm name, a checkpoint path or ``"demo"`` (anything :func:`probing.load_model`
        accepts except an in-memory module).
    seed : int
        Seeds torch's global RNG while loading (random-init weights are then the same
        everywhere); the worker's RNG state is restored afterwards.
    **options
        Other :func:`probing.load_model` keyword arguments (``pretrained``, ``arch``,
        ``mapping``, ``mapping_options``, ``preprocessing``, ``device`` and timm options).

    Raises
    ------
    ConfigError
        When ``spec`` is an ``nn.Module`` or LoadedModel, which workers cannot re-create.
    """
    if isinstance(spec, (torch.nn.Module, LoadedModel)):
        raise ConfigError(
            f"a model given as an in-memory {type(spec).__name__} cannot be re-created on Dask "
            "workers; save it (safetensors) and pass the checkpoint path, a timm name or 'demo'."
        )
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"model spec {spec!r} is not a timm name, checkpoint path or 'demo'.")
    return {"spec": _absolute(os.fspath(spec)), "seed": int(seed), "options": dict(options)}


def data_recipe(source: str | os.PathLike, n: int | None = None, where: Any = None,
                selection: str = "stratified", stratify: str | None = None,
                **options: Any) -> dict:
    """A picklable description from which a worker re-opens the image source.

    Parameters
    ----------
    source : str or path
        A spec of :func:`probing.data.open_source` (relative paths are made absolute).
    n : int, optional
        Use the first ``n`` images (after ``where``).
    where : str or list, optional
        The ``[data] where`` filter (:meth:`probing.data.ImageSource.where`).
    selection, stratify
        The ``[data]`` image selection of analyses (:class:`~probing.run.context.RunContext`).
    **options
        Options of the source.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"data source {type(source).__name__} cannot be re-opened on Dask workers; pass a "
            "spec string ('shapes:n=512', an image folder or a manifest path)."
        )
    return {"source": _absolute(os.fspath(source)), "n": n, "where": where,
            "select": {"selection": selection, "stratify": stratify}, "options": dict(options)}


def _key(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, default=str)


def worker_model(recipe: dict) -> LoadedModel:
    """The model of ``recipe``, loaded once per process (cached)."""
    key = "model:" + _key(recipe)
    if key not in _CACHE:
        with seeded(recipe["seed"]):  # leaves the worker's global torch RNG state as it was
            _CACHE[key] = load_model(recipe["spec"], **recipe["options"])
    return _CACHE[key]


def worker_source(recipe: dict):
    """``(source, labels)`` of ``recipe``, opened once per process (cached)."""
    from ..data import open_source, select_source

    key = "data:" + _key(recipe)
    if key not in _CACHE:
        source = select_source(open_source(recipe["source"], **recipe["options"]),
                               recipe.get("where"), recipe["n"])
        _CACHE[key] = (source, source.labels())
    return _CACHE[key]


def _checked_model(recipe: dict, fingerprint: str) -> LoadedModel:
    """The worker's model of ``recipe``, refused unless its weights have ``fingerprint`` (the
    client's): every task, extraction or analysis, runs on the model the store was made by."""
    loaded = worker_model(recipe)
    if loaded.fingerprint != fingerprint:
        raise ModelError(
            f"a Dask worker loaded {recipe['spec']!r} with other weights (fingerprint "
            f"{loaded.fingerprint}, client {fingerprint}); give workers the same checkpoint and "
            "cache as the client."
        )
    return loaded


def shard_task(model: dict, data: dict, fingerprint: str, store: str, shard: int,
               job: ShardJob) -> list[dict]:
    """Dask task: extract shard ``shard`` into the store at ``store`` (see the module doc).

    Returns
    -------
    list of dict
        The shard's skipped (unreadable) images.
    """
    loaded = _checked_model(model, fingerprint)
    source, labels = worker_source(data)
    return extract_shard(loaded, source, EmbeddingStore(store), shard, job, labels)


def extract_on_dask(client: Any, model: dict, data: dict, loaded: LoadedModel, source: Any,
                    store: EmbeddingStore, job: ShardJob, lock_timeout: float = 0.0
                    ) -> EmbeddingStore:
    """Extract the missing shards of ``store`` as Dask tasks (one task per shard).

    Parameters
    ----------
    client : distributed.Client
        From :func:`dask_client`.
    model, data : dict
        Recipes (:func:`model_recipe`, :func:`data_recipe`) of ``loaded`` and ``source``.
    loaded, source
        The model and source opened on the client (for the manifest and the fingerprint).
    store : EmbeddingStore
        On a file system every worker sees at the same path.
    job : ShardJob
        Resolved settings (:func:`probing.extract.shard_job`).

    Returns
    -------
    EmbeddingStore
        ``store``, complete.
    """
    path = str(store.path.resolve())
    with open_store(store, loaded, source, job, lock_timeout) as todo:
        futures = [client.submit(shard_task, model, data, loaded.fingerprint, path, shard, job,
                                 key=f"probing-shard-{store.path.name}-{shard:05d}", pure=False,
                                 retries=2)
                   for shard in todo]
        for skipped in client.gather(futures):
            if skipped and source.on_error == "skip":
                source.skipped.extend(skipped)
    return store


def analysis_task(model: dict, data: dict, store: str, seed: int, batch_size: int,
                  analysis: str | os.PathLike, params: dict,
                  style: dict | None = None, fingerprint: str | None = None
                  ) -> tuple[Any, float]:
    """Dask task: run the analysis defined in file ``analysis`` on a worker-built context.

    The worker's model must have the weight ``fingerprint`` of the client's model (by default
    the one in the store's manifest), as for :func:`shard_task`.

    Returns
    -------
    (bytes, float)
        What the analysis returned, pickled by :func:`probing.figpickle.dumps` (Dask's own
        pickles would keep matplotlib transforms keyed by ids of this worker, and figures
        unpickled so are now and then drawn a few pixels off), and its wall time in seconds.
    """
    from .context import RunContext, run_analysis
    from .registry import load_analysis

    store_ = EmbeddingStore(store)
    loaded = _checked_model(model, fingerprint or _store_fingerprint(store_))
    source, _ = worker_source(data)
    ctx = RunContext(model=loaded, source=source, store=store_, seed=seed,
                     batch_size=batch_size, quiet=True, **data.get("select", {}))
    t = time.perf_counter()
    section = run_analysis(load_analysis(Path(analysis)).run, ctx, params, style,
                           name=Path(analysis).stem)
    return dumps(section), time.perf_counter() - t


def _store_fingerprint(store: EmbeddingStore) -> str:
    """The model fingerprint recorded in ``store``'s manifest."""
    fingerprint = ((store.manifest or {}).get("model") or {}).get("fingerprint")
    if not fingerprint:
        raise StoreError(
            f"store {store.path} records no model fingerprint, so Dask workers cannot check "
            "their weights against it; re-extract into a new store path."
        )
    return str(fingerprint)


def run_analyses_on_dask(client: Any, model: dict, data: dict, store: EmbeddingStore,
                         seed: int, batch_size: int, modules: Sequence[Any], params: dict,
                         style: dict | None = None, fingerprint: str | None = None
                         ) -> list[tuple[Any, float]]:
    """Submit one :func:`analysis_task` per analysis module; ``(section, seconds)`` in
    ``modules`` order.

    ``fingerprint`` is the client's model fingerprint that every worker's model must match
    (default: the one in the store's manifest, which the client's model matched).
    """
    path = str(store.path.resolve())
    fingerprint = fingerprint or _store_fingerprint(store)
    futures = [client.submit(analysis_task, model, data, path, seed, batch_size, str(m.path),
                             params[m.name], style, fingerprint,
                             key=f"probing-analysis-{m.name}-{store.path.name}",
                             pure=False)
               for m in modules]
    return [(pickle.loads(data), seconds) for data, seconds in client.gather(futures)]
