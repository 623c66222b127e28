"""Pickled figures (probing.figpickle): unpickled, every transform knows its parents under
their own ids, so a figure drawn after unpickling gives the bytes of the original."""

from __future__ import annotations

import gc
import hashlib
import pickle
import types
import weakref

import matplotlib

matplotlib.use("Agg")

from matplotlib.transforms import Affine2D, TransformNode  # noqa: E402

from probing.figfiles import render_figure  # noqa: E402
from probing.figpickle import dumps  # noqa: E402
from probing.sections import Figure, Section  # noqa: E402
from probing.style import new_figure  # noqa: E402

_SKIP = (type, weakref.ref, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
         types.CodeType)


def _transforms(root: object) -> list[TransformNode]:
    """Every transform reachable from ``root`` (not through classes, modules or functions)."""
    seen, out, todo = set(), [], [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, _SKIP):
            continue
        seen.add(id(obj))
        if isinstance(obj, TransformNode):
            out.append(obj)
        todo.extend(gc.get_referents(obj))
    return out


def _figure(i: int):
    fig, axes = new_figure("double", nrows=2, ncols=3)
    for j, ax in enumerate(axes.flat):
        ax.plot(range(10 + j), [x * (i + 1) for x in range(10 + j)])
        ax.set_xlabel(f"x {j}")
        ax.set_ylabel("value")
        ax.set_title(f"panel {j}")
    return fig


def _png(fig) -> str:
    return hashlib.sha256(render_figure(fig, ("png",))["png"]).hexdigest()


def test_every_unpickled_transform_keys_its_parents_by_their_ids():
    fig = _figure(0)
    entries = sum(len(t._parents) for t in _transforms(fig))
    back = pickle.loads(dumps(Section("s", figures=[Figure("f", fig, "c.", None)])))
    nodes = _transforms(back.figures[0].figure)
    parents = [(key, ref()) for t in nodes for key, ref in t._parents.items()]
    assert len(parents) == entries > 50
    assert all(p is not None and key == id(p) for key, p in parents)


def test_an_unpickled_parent_entry_goes_with_its_parent():
    child = Affine2D().scale(2.0)
    parent = child + Affine2D().translate(1.0, 0.0)
    child2, parent2 = pickle.loads(dumps([child, parent]))
    assert list(child2._parents) == [id(parent2)]
    assert parent2.get_matrix()[0, 2] == 1.0  # x -> 2 x + 1, computed and cached
    child2.translate(1.0, 1.0)  # x -> 2 x + 1 + 1: invalidates the parent, which recomputes
    assert parent2.get_matrix()[0, 2] == 2.0
    del parent2
    gc.collect()
    assert child2._parents == {}


def test_figures_unpickled_after_their_originals_are_freed_draw_the_same_bytes():
    # the originals' transforms are freed, so new transforms of a draw land at their old
    # addresses: with matplotlib's own pickles 2 of 60 PNGs of such figures came out a few
    # pixels off (tick and axis labels); a dumps() pickle knows nothing of old addresses
    reference = [_png(_figure(i)) for i in range(3)]
    blobs = [dumps(_figure(i)) for i in range(3)]
    gc.collect()
    for _ in range(3):
        figures = [pickle.loads(b) for b in blobs]
        assert [_png(f) for f in figures] == reference
        del figures
