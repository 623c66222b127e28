"""Text laid out once per draw of a figure's files, however often it is measured.

Saving one figure lays every tick label, title and legend entry out about ten times: in each of
constrained layout's two passes, for the tight bounding box, in the PNG draw, in the SVG draw,
and several times in each (a tick label is measured for its axis, its spine and the axis
label's place). matplotlib caches the font metrics of a string but not the layout built from
them, which costs four times the metrics (font lookup, line metrics, alignment, rotation).
Inside :func:`text_layouts_once` a text laid out again with the same inputs gets the first
layout back (the demo's 29 figures: 8,167 layouts asked for, 827 made): they drew in 4.05 CPU s
instead of 4.55, byte for byte the same files.

A layout is a function of the text, its font properties, the figure's dpi, the line spacing,
the alignments, the rotation (and its mode), the math and TeX settings, and the renderer's
kind and dpi (Agg measures hinted glyphs at its dpi, SVG unhinted outlines); the key holds all
of these (see :func:`_key`). Wrapped text (which depends on the text's position) is laid out
as before. The rc settings that also enter (fonts, hinting) are those of the draw: a cache
lives only inside one ``with`` block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from matplotlib.backends.backend_mixed import MixedModeRenderer
from matplotlib.text import Text

__all__ = ["text_layouts_once"]

_ORIGINAL = Text._get_layout
#: each thread's layouts while it is inside a ``with`` block (``.cache``, None outside one)
_local = threading.local()
#: threads inside a block, and the method that was in place when the first entered
_lock = threading.Lock()
_inside = 0
_saved = _ORIGINAL


def _key(text: Text, renderer: object) -> tuple:
    # a vector backend's mixed-mode renderer measures with whichever renderer is current
    inner = renderer._renderer if isinstance(renderer, MixedModeRenderer) else renderer
    return (type(inner), getattr(inner, "dpi", None), text.get_text(),
            text.get_fontproperties().copy(), text.get_usetex(), text.get_parse_math(),
            text.get_figure(root=True).dpi, text.get_linespacing(), text._get_multialignment(),
            text.get_rotation(), text.get_horizontalalignment(),
            text.get_verticalalignment(), text.get_rotation_mode())


def _layout(text: Text, renderer: object) -> tuple:
    """``Text._get_layout`` while a thread is inside :func:`text_layouts_once`: in such a
    thread, the first layout of equal keys, copied (a caller may change the bbox it gets);
    in any other thread, the plain layout."""
    cache = getattr(_local, "cache", None)
    if cache is None or renderer is None or text.get_wrap():
        return _ORIGINAL(text, renderer)
    key = _key(text, renderer)
    if (hit := cache.get(key)) is None:
        bbox, lines, corner = _ORIGINAL(text, renderer)
        cache[key] = (bbox.frozen(), tuple(lines), corner)
        return bbox, lines, corner
    bbox, lines, corner = hit
    return bbox.frozen(), list(lines), corner


@contextmanager
def text_layouts_once() -> Iterator[None]:
    """Lay each distinct text out once while inside (a nested block shares the outer one's
    cache).

    Each thread has its own cache (threads drawing figures side by side share nothing);
    ``Text._get_layout`` is replaced while any thread is inside, and restored when the last
    one leaves.
    """
    global _inside, _saved
    if getattr(_local, "cache", None) is not None:  # nested: the outer block's cache serves
        yield
        return
    with _lock:
        if _inside == 0:
            _saved = Text._get_layout
            Text._get_layout = _layout
        _inside += 1
    _local.cache = {}
    try:
        yield
    finally:
        _local.cache = None
        with _lock:
            _inside -= 1
            if _inside == 0:
                Text._get_layout = _saved
