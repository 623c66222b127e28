"""Progress bars of the toolkit's long loops: one place decides when a bar is shown.

A bar is shown when ``progress`` is True, hidden when it is False, and shown only when stderr is
a terminal when it is None (the default everywhere), so logs and tests stay clean. Analyses pass
``progress=False`` under ``--quiet`` (``RunContext.quiet``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress_bar", "show_progress"]

T = TypeVar("T")


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a bar: ``progress`` itself, or (None) whether stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)


def progress_bar(items: Iterable[T], desc: str, total: int | None = None,
                 progress: bool | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``items`` under a tqdm bar named ``desc`` (see :func:`show_progress`).

    Parameters
    ----------
    items : iterable
        What the loop runs over.
    desc : str
        The bar's label (e.g. ``"head ablation"``).
    total : int, optional
        Number of items when ``items`` has no ``len``.
    progress : bool or None
        True / False / None = only on a terminal.
    unit : str
        What one item is called.
    """
    yield from tqdm(items, desc=desc, total=total, disable=not show_progress(progress),
                    unit=unit, leave=False)
