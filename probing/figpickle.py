"""Pickles of matplotlib figures that unpickle with working transforms.

A matplotlib transform knows which transforms depend on it (its parents) so that a change
(a new dpi, new axis limits) invalidates their cached values; it keeps them in a dict
``_parents`` keyed by ``id(parent)``. Pickled, the dict keeps those keys, and matplotlib's
``TransformNode.__setstate__`` (3.x, up to at least 3.11) restores them as they were: in the
unpickled figure every entry is keyed by the id its parent had *in the process that pickled
it*. When a transform made later (a draw makes many: tick labels' offsets, text layouts) lands
at such an address and registers with the same child, it overwrites the entry of the live
parent that holds the stale key; that parent is then never invalidated again and keeps, say,
its offset at the figure's dpi of 100 while the PNG is drawn at 200 dpi. The symptom: tick
labels and axis labels of a figure unpickled in another process (a parallel analysis, a cached
section) drawn a few pixels off, now and then (in one process: 2 of 60 PNGs of figures
unpickled after their originals were freed, against none with :func:`dumps`).

:func:`dumps` pickles with a reducer for every transform class that keeps its state but, on
unpickling, registers each parent under its own new id (:func:`_restore_node`), as
``set_children`` would have. Everything else pickles as :func:`pickle.dumps` does; the
result is read by plain :func:`pickle.loads`.
"""

from __future__ import annotations

import copyreg
import pickle
import weakref
from typing import Any

from matplotlib.transforms import TransformNode

__all__ = ["dumps"]


def _classes(root: type) -> list[type]:
    """``root`` and all its subclasses (those defined when called)."""
    out, todo = [], [root]
    while todo:
        cls = todo.pop()
        if cls not in out:
            out.append(cls)
            todo.extend(cls.__subclasses__())
    return out


def _reduce_node(node: TransformNode) -> tuple:
    """How a transform pickles: its class and ``__getstate__`` (parents as plain references),
    restored by :func:`_restore_node`."""
    return (copyreg.__newobj__, (type(node),), node.__getstate__(), None, None, _restore_node)


def _restore_node(node: TransformNode, state: dict) -> None:
    """Set an unpickled transform's state, its parents keyed by their ids in this process.

    The entries are weak references that remove themselves when their parent is freed, as
    matplotlib's own ``TransformNode.set_children`` makes them."""
    node.__dict__.update(state)
    parents: dict[int, weakref.ref] = {}
    for parent in state["_parents"].values():
        if parent is not None:
            key = id(parent)
            parents[key] = weakref.ref(parent, lambda _, pop=parents.pop, k=key: pop(k, None))
    node._parents = parents


def dumps(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` (highest protocol), with every matplotlib transform in it pickled
    so that it unpickles with its parents keyed by their new ids (see the module docstring).

    Parameters
    ----------
    obj : object
        Anything picklable, e.g. a :class:`~probing.sections.Section` with figures.

    Returns
    -------
    bytes
        For :func:`pickle.loads`.
    """
    import io

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table,
                              **dict.fromkeys(_classes(TransformNode), _reduce_node)}
    pickler.dump(obj)
    return buffer.getvalue()
