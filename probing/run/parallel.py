"""The analyses of an in-process run in parallel worker processes, when that helps.

A run on a tiny model uses one torch / BLAS thread (:func:`probing.threads.threads_for_model`),
so on a machine with several cores all but one idle while the analyses run one after another.
:func:`analysis_processes` decides how many processes run them: more than one only when it
cannot slow the run down (two or more analyses to run, two or more CPUs this process may use
and other work leaves free, the run limited to one thread, and Linux's ``fork`` start method
available), unless the caller
or ``$PROBING_PROCESSES`` asks for a number. :class:`AnalysisPool` then forks that many workers,
which inherit the run's context (model, data, store) as it is, run one analysis each at a time
with ``cpus // processes`` torch and BLAS threads (one in the tiny-model case) and no progress
bars. A worker draws its analysis's figures to their files' bytes with the report's settings
(:meth:`probing.sections.Figure.render`), caches the section (figures and files, as the run
would: :mod:`probing.run.cache`) and sends back the section with the bytes in place of the
matplotlib figures, pickled by :func:`probing.figpickle.dumps`, with the analysis's own
seconds; the report then writes those bytes. No matplotlib figure crosses to the run's
process (one that does, when it could not be drawn in the worker, pickles with working
transforms: matplotlib's own pickles keep a transform's parents keyed by their ids in the
worker, and a figure so unpickled was now and then drawn a few pixels off).

Results are those of the serial run, byte for byte (figures, tables, ``results.json``):
analyses derive every random step from the spec's seed (none reads a global random state an
earlier analysis left), a figure's bytes depend only on the figure and the settings, and the
parent checks and adds the sections in spec order. An analysis that raises in a worker raises
the same error as serially; a worker that dies (killed, out of memory) is one
:class:`AnalysisError` naming the analyses it may have been running. The random-init control
stores that analyses write under the run's store
(:meth:`probing.run.context.RunContext.extract_store`) are built under the store's lock, which
a second worker waits for and then finds the store complete.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from ..errors import AnalysisError, ConfigError, ProbingError
from ..figpickle import dumps
from ..sections import Section
from .cache import save_section
from .context import RunContext, run_analysis

__all__ = ["PROCESSES_ENV", "AnalysisPool", "WorkerResult", "analysis_processes", "available_cpus",
           "fork_available", "free_cpus", "requested_processes"]

log = logging.getLogger("probing")

PROCESSES_ENV = "PROBING_PROCESSES"
"""Environment variable: processes for the analyses of an in-process run (``auto`` or unset:
decided by :func:`analysis_processes`; ``1``: serial)."""

#: Seconds of each package analysis in the demo run (2 cores), for submitting the longest first
#: so that the workers finish together; an analysis not listed is submitted first.
_EXPECTED_SECONDS = {
    "attribution": 4.6, "embedding_map": 4.4, "layer_probes": 4.0, "cka": 2.1,
    "position_probes": 1.0, "head_ablation": 0.9, "attention_distance": 0.6,
    "attention_maps": 0.4, "logit_lens": 0.3, "pe_similarity": 0.3, "rollout": 0.3,
    "pe_decay": 0.2, "pe_subspace": 0.2,
}

# what the forked workers inherit: set by AnalysisPool in the parent before the first fork
_JOB: dict[str, Any] = {}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def free_cpus() -> int:
    """CPUs not busy with other work: :func:`available_cpus` less the one-minute load average
    beyond this process's own share (at least 1).

    On a machine shared with other work a second process gains nothing: on the project's
    2-core machine at load average 3, the demo's analyses took 48-61 s in two processes
    against 45 s in one, with 10-17% more CPU time."""
    cpus = available_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average here
        return cpus
    return max(1, min(cpus, int(cpus - load + 1.5)))  # + 1: this process is in the load


def fork_available() -> bool:
    """Whether analysis worker processes are forked here: on Linux (macOS can fork, but its
    system libraries are not safe to use in a forked child)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def requested_processes(processes: int | None = None) -> int | None:
    """The number of analysis processes asked for: ``processes``, else ``$PROBING_PROCESSES``
    (``auto`` or unset: None, decided per run by :func:`analysis_processes`).

    A run's outputs are the same byte for byte for any number (figures, tables,
    ``results.json``): a worker draws its figures to their files' bytes itself, and figures
    that do cross a process boundary pickle with working transforms
    (:mod:`probing.figpickle`).

    Raises
    ------
    ConfigError
        When either is not a whole number of at least 1 (or ``auto``).
    """
    where = "processes"
    if processes is None:
        text = os.environ.get(PROCESSES_ENV, "").strip().lower()
        if text in ("", "auto"):
            return None
        where, processes = f"${PROCESSES_ENV}", text
    whole = isinstance(processes, int) and not isinstance(processes, bool) \
        or isinstance(processes, str) and processes.isdigit()
    if not whole or int(processes) < 1:
        raise ConfigError(f"{where} = {processes!r} is not a whole number of at least 1; give "
                          "the number of analysis processes (1: serial) or 'auto'.")
    return int(processes)


def analysis_processes(requested: int | None, n_analyses: int, single_threaded: bool) -> int:
    """How many processes run ``n_analyses`` analyses (1: serially in this process).

    Parameters
    ----------
    requested : int, optional
        An explicit number (:func:`requested_processes`); None decides: ``min(free CPUs,
        n_analyses)`` (:func:`free_cpus`) when the run is limited to one thread (a tiny model)
        and both are at least 2, else 1.
    n_analyses : int
        Analyses left to run (those not taken from the cache).
    single_threaded : bool
        Whether the run is limited to one torch / BLAS thread.
    """
    if n_analyses < 2 or not fork_available():
        return 1
    if requested is not None:
        return max(1, min(int(requested), n_analyses))
    if not single_threaded:
        return 1
    return max(1, min(free_cpus(), n_analyses))


def _order(names: Sequence[str]) -> list[str]:
    """``names`` longest-expected first (unknown ones first, in the order given)."""
    return sorted(names, key=lambda n: -_EXPECTED_SECONDS.get(n, float("inf")))


def _init_worker(threads: int) -> None:
    """In each new worker: ``threads`` torch and BLAS threads, no progress bars."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    torch.set_num_threads(threads)
    ctx: RunContext = _JOB["ctx"]
    for c in {id(c): c for c in [ctx, *ctx.models.values()]}.values():
        c.quiet = True  # a bar per worker would garble the terminal


def _terminate(executor: ProcessPoolExecutor) -> None:
    """Stop the workers of ``executor`` now (Python 3.14's ``terminate_workers``, or each
    worker process before that)."""
    if hasattr(executor, "terminate_workers"):
        executor.terminate_workers()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()


def _picklable(exc: BaseException, name: str) -> BaseException:
    """``exc`` when it survives pickling (to the parent) unchanged, else an AnalysisError with
    its type and message."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any failure to pickle means: send a plain error
        pass
    return AnalysisError(str(exc) if isinstance(exc, ProbingError) else
                         f"analysis {name!r} failed ({type(exc).__name__}: {exc}); fix the "
                         "analysis or its parameters.")


def _run_one(name: str) -> tuple[bytes | None, float, bool, float]:
    """Run analysis ``name`` in a worker: ``(pickled section, seconds, cached, figure
    seconds)``; the section is None when it does not pickle (the parent then runs the
    analysis itself).

    The section goes back as bytes (:func:`_package`), unpickled by
    :meth:`AnalysisPool.result` in the run's own thread: the executor's result thread would
    otherwise build the figures while the run's thread draws or pickles others, and
    matplotlib is not thread-safe (the PNG of a figure built so came out different now and
    then)."""
    modules, params, style, started = (_JOB["modules"], _JOB["params"], _JOB["style"],
                                       _JOB["started"])
    slot = list(modules).index(name)
    started[slot] = 1
    t, cpu = time.perf_counter(), time.process_time()
    try:
        section = run_analysis(modules[name].run, _JOB["ctx"], params[name], style, name=name)
    except BaseException as exc:
        started[slot] = 2
        raise _picklable(exc, name) from None
    started[slot] = 2
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    data, cached, drawn = _package(name, section)
    log.debug("analysis %s: %.2f s, figures drawn in %.2f s, section cached and sent in "
              "%.2f s, %.2f s CPU in all, in process %d", name, seconds, drawn,
              time.perf_counter() - t - drawn, time.process_time() - cpu, os.getpid())
    return data, seconds, cached, drawn


def _package(name: str, section: Any) -> tuple[bytes | None, bool, float]:
    """What a worker sends back of ``section``, whether it cached it, and the seconds it spent
    drawing the figures' files.

    With the report's figure settings (``_JOB["render"]``), every figure is drawn here to its
    files' bytes (:meth:`probing.sections.Figure.render`), so only bytes go to the run's
    process, which writes them (a figure that fails to draw goes as it is: the report then
    raises its error, as serially). With cache keys (``_JOB["keys"]``), a section with valid
    key numbers is cached here (:func:`probing.run.cache.save_section`) with its figures'
    files in place of the matplotlib figures: pickling a drawn figure cost as much as a
    quarter of drawing it (0.8 s of the demo's workers). Pickled by
    :func:`probing.figpickle.dumps`."""
    settings, keys = _JOB.get("render"), _JOB.get("keys") or {}
    drawn = 0.0
    if isinstance(section, Section):
        section.name = section.name or name
        if settings is not None:
            t = time.perf_counter()
            try:
                for figure in section.figures:
                    figure.render(settings)
            except Exception as exc:  # noqa: BLE001 - the report raises it, as serially
                log.debug("analysis %s: a figure did not draw here (%s)", name, exc)
                for figure in section.figures:
                    figure.files, figure.files_key = None, ""
            drawn = time.perf_counter() - t
        for figure in section.figures:
            if figure.files is not None:
                # the bytes are what the report writes, and what the cache keeps: the run's
                # cache keys hold the figure settings, so no later hit needs the figure again
                figure.figure = None
        cached = False
        if name in keys:
            try:
                section.check_numbers()
            except ProbingError:  # the run's process raises it, as serially; never cached
                pass
            else:
                cached = save_section(_JOB["ctx"].store, keys[name], section)
    else:
        cached = False  # not a Section: the run's process says so
    try:
        return dumps(section), cached, drawn  # figures unpickle with working transforms
    except Exception:  # noqa: BLE001 - e.g. a class the parent cannot import: rerun there
        log.debug("analysis %s: its section does not pickle; the run's process reruns it", name)
        return None, cached, drawn


class WorkerResult(NamedTuple):
    """What an analysis gave in a worker process (:meth:`AnalysisPool.result`)."""

    section: Any
    #: the analysis's own seconds in the worker
    seconds: float
    #: whether the worker cached the section (with ``keys``)
    cached: bool
    #: seconds the worker then spent drawing the figures' files (not caching or pickling the
    #: section)
    figure_seconds: float


class AnalysisPool:
    """The analyses ``modules`` of ``ctx`` running in ``processes`` forked workers.

    Use as a context manager; :meth:`result` waits for one analysis. With ``processes`` below 2
    (or no analysis) nothing is started and no name is ``in`` the pool.

    Parameters
    ----------
    ctx : RunContext
        The run's context, inherited by the workers as it is when they fork.
    modules : sequence of AnalysisModule
        The analyses to run (``.name``, ``.run``).
    params : dict
        Checked parameters per analysis name.
    style : dict, optional
        The spec's figure style.
    processes : int
        Worker processes (:func:`analysis_processes`).
    render : dict, optional
        The report's figure settings (:func:`probing.figfiles.render_settings`): each worker
        then draws its analyses' figures to their files' bytes.
    keys : dict, optional
        Cache key per analysis name (:func:`probing.run.cache.section_key`): each worker then
        caches its sections in ``ctx.store``.
    """

    def __init__(self, ctx: RunContext, modules: Sequence[Any], params: dict,
                 style: dict | None, processes: int, render: dict | None = None,
                 keys: dict[str, str] | None = None) -> None:
        self._ctx, self._params, self._style = ctx, params, style
        self._render, self._keys = render, keys
        self._modules = {m.name: m for m in modules} if processes > 1 and modules else {}
        self._processes = min(processes, len(self._modules))
        self._futures: dict[str, Future] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._done: dict[str, tuple | BaseException] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._futures

    def __enter__(self) -> AnalysisPool:
        if not self._modules:
            return self
        mp = multiprocessing.get_context("fork")
        _JOB.update(ctx=self._ctx, modules=self._modules, params=self._params,
                    style=self._style, render=self._render, keys=self._keys,
                    started=mp.RawArray("b", len(self._modules)))
        threads = max(1, available_cpus() // self._processes)
        log.info("analyses %s in %d processes ...", ", ".join(self._modules), self._processes)
        self._executor = ProcessPoolExecutor(self._processes, mp_context=mp,
                                             initializer=_init_worker, initargs=(threads,))
        for name in _order(list(self._modules)):
            self._futures[name] = self._executor.submit(_run_one, name)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(stop=exc_type is not None)

    def _close(self, stop: bool) -> None:
        """Shut the workers down (``stop``: at once, dropping their work)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            if stop:
                _terminate(executor)
            executor.shutdown(wait=True, cancel_futures=True)
        _JOB.clear()

    def _collect(self) -> dict[str, tuple | BaseException]:
        """Every analysis's pickled section (or error), in spec order up to the first error;
        the workers are shut down before any section is unpickled (by :meth:`result`)."""
        if self._done is None:
            done: dict[str, tuple | BaseException] = {}
            for name in self._modules:  # spec order: the first error is the serial run's
                try:
                    done[name] = self._futures[name].result()
                except BrokenProcessPool:
                    done[name] = self._died(name)
                except BaseException as exc:  # noqa: BLE001 - raised again by result()
                    done[name] = exc
                if isinstance(done[name], BaseException):
                    break
            self._done = done
            self._close(stop=any(isinstance(v, BaseException) for v in done.values()))
        return self._done

    def result(self, name: str) -> WorkerResult:
        """What analysis ``name`` gave in its worker (:class:`WorkerResult`).

        The first call waits for every analysis (or the first, in spec order, that fails).

        Raises
        ------
        ProbingError
            What the analysis raised (as in a serial run).
        AnalysisError
            When a worker process died.
        """
        got = self._collect().get(name)
        if got is None:  # after an earlier analysis failed (the run stops there)
            raise AnalysisError(f"analysis {name!r} did not run: an earlier analysis failed.")
        if isinstance(got, BaseException):
            raise got
        data, seconds, cached, drawn = got
        if data is None:  # the section did not pickle: run it here, as a serial run would
            t = time.perf_counter()
            section = run_analysis(self._modules[name].run, self._ctx, self._params[name],
                                   self._style, name=name)
            return WorkerResult(section, time.perf_counter() - t, False, 0.0)
        return WorkerResult(pickle.loads(data), seconds, cached, drawn)

    def _died(self, name: str) -> AnalysisError:
        """The error of a dead worker: the analyses that were running then."""
        started = _JOB["started"]
        running = [n for i, n in enumerate(self._modules) if started[i] == 1] or [name]
        which = (f"analysis {running[0]!r} did not finish: its worker process" if len(running)
                 == 1 else "analyses " + ", ".join(map(repr, running)) + " did not finish: "
                 "the worker process of one of them")
        return AnalysisError(f"{which} died (killed, or out of memory); rerun with "
                             f"{PROCESSES_ENV}=1 (or --processes 1) to run the analyses one "
                             "after another in the run's process.")
