"""CPU thread counts for small work: torch and BLAS/OpenMP pools limited to one thread.

Small matrices and tiny models gain nothing from a second thread and lose a lot when the cores
are shared: worker threads spin at every barrier, and a preempted one stalls the others. On the
project's 2-core machine under load, measured per call (CPU seconds, 2 threads vs 1): the SVD of
a ``(512, 64)`` matrix 0.85 vs 0.003; one forward of the demo model (64 wide, 4 blocks) on a
batch of 32 images 0.15-0.43 vs 0.02, on 128 images 0.39-0.51 vs 0.12. Hence:

- :func:`small_blas` limits BLAS to one thread around work below :data:`SMALL_FLOPS`;
- :func:`thread_scope` gives a run a place to limit torch and BLAS threads for a tiny model
  (:func:`threads_for_model`: fewer than :data:`TINY_PARAMS` parameters) and restores both on
  exit. Larger models and matrices keep the libraries' defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["SMALL_FLOPS", "TINY_PARAMS", "ThreadLimit", "small_blas", "thread_scope",
           "threads_for_model"]

SMALL_FLOPS = 5e8
"""Work (floating-point operations) below which one BLAS thread is used."""

TINY_PARAMS = 2_000_000
"""Models with fewer parameters run with one torch and one BLAS thread in a run."""


def small_blas(flops: float) -> contextlib.AbstractContextManager:
    """One BLAS/OpenMP thread when ``flops < SMALL_FLOPS``, else no change.

    Parameters
    ----------
    flops : float
        Estimated floating-point operations of the work inside (e.g. ``n * d * min(n, d)`` for
        an SVD of an ``(n, d)`` matrix).
    """
    if flops >= SMALL_FLOPS:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def threads_for_model(n_params: int) -> int | None:
    """Threads for a run on a model of ``n_params`` parameters: 1 when tiny, None (unchanged)
    otherwise."""
    return 1 if n_params < TINY_PARAMS else None


class ThreadLimit:
    """Torch and BLAS thread limits set inside a :func:`thread_scope`, undone when it ends."""

    def __init__(self) -> None:
        self._torch: int | None = None
        self._blas = None

    def limit(self, n_threads: int | None) -> None:
        """Use ``n_threads`` torch and BLAS threads until the scope ends (None: no change)."""
        if n_threads is None:
            return
        import torch
        from threadpoolctl import threadpool_limits

        if self._torch is None:  # before the OpenMP limit below, which torch reads back
            self._torch = torch.get_num_threads()
        if self._blas is None:
            self._blas = threadpool_limits(limits=int(n_threads))
        torch.set_num_threads(int(n_threads))

    def restore(self) -> None:
        """Restore the thread counts from before the first :meth:`limit`."""
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None
        if self._torch is not None:  # last: restoring OpenMP above may have changed it
            import torch

            torch.set_num_threads(self._torch)
            self._torch = None


@contextlib.contextmanager
def thread_scope() -> Iterator[ThreadLimit]:
    """A scope in which :meth:`ThreadLimit.limit` may be called; the limits end with it."""
    limit = ThreadLimit()
    try:
        yield limit
    finally:
        limit.restore()
