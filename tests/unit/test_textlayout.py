"""Text laid out once per draw (probing.textlayout): the same files, fewer layouts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import io  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from probing import textlayout  # noqa: E402
from probing.textlayout import text_layouts_once  # noqa: E402


def _figure() -> Figure:
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax, other = fig.subplots(1, 2)
    ax.plot(np.arange(10), np.arange(10) ** 2, label="squares")
    ax.set_title("a title $R^2$")
    ax.set_xlabel("rotated", rotation=30)
    ax.legend()
    other.set_xticks([0, 1], ["left", "right"], rotation=90)
    other.text(0.5, 0.5, "wrapped " * 20, wrap=True)
    fig.suptitle("two\nlines", ha="left")
    return fig


def _files(fig: Figure) -> dict[str, bytes]:
    out = {}
    for ext in ("png", "svg"):  # (a fixed salt: the same SVG ids in both)
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "fixed"}):
                fig.savefig(buf, format=ext, dpi=150, metadata={"png": {"Software": None},
                                                             "svg": {"Date": None}}[ext])
        out[ext] = buf.getvalue()
    return out


def test_the_files_are_the_same_and_texts_are_laid_out_fewer_times(monkeypatch):
    calls = []
    original = textlayout._ORIGINAL

    def counted(text, renderer):
        calls.append(1)
        return original(text, renderer)

    monkeypatch.setattr(Text, "_get_layout", counted)
    monkeypatch.setattr(textlayout, "_ORIGINAL", counted)
    reference = _files(_figure())
    plain = len(calls)
    calls.clear()
    with text_layouts_once():
        ours = _files(_figure())
    assert ours == reference
    assert 0 < len(calls) < plain / 2  # measured about 5 times as often without
    assert Text._get_layout is counted


def test_a_layout_depends_on_what_it_is_keyed_by():
    fig = Figure(dpi=100)
    renderer = FigureCanvasAgg(fig).get_renderer()
    text = fig.text(0.1, 0.1, "abc")
    with text_layouts_once():
        first = text._get_layout(renderer)[0].bounds
        text._get_layout(renderer)[0].x1 = 1e6  # a copy: the cached layout stays
        assert text._get_layout(renderer)[0].bounds == first
        text.set_fontsize(20)
        bigger = text._get_layout(renderer)[0].bounds
        text.set_rotation(90)
        turned = text._get_layout(renderer)[0].bounds
        text.set_text("abcd")
        longer = text._get_layout(renderer)[0].bounds
    assert bigger[2] > first[2] and turned[3] > turned[2] and longer[3] > bigger[2]


def test_nested_blocks_share_one_cache_and_the_method_is_restored():
    own = Text._get_layout
    with text_layouts_once():
        outer = textlayout._local.cache
        with text_layouts_once():
            assert textlayout._local.cache is outer
        assert textlayout._local.cache is outer and Text._get_layout is textlayout._layout
    assert Text._get_layout is own and textlayout._local.cache is None


def test_threads_keep_their_own_caches_and_the_last_one_out_restores_the_method():
    own, inside, leave = Text._get_layout, threading.Barrier(2), threading.Event()
    caches = []

    def draw() -> None:
        with text_layouts_once():
            caches.append(textlayout._local.cache)
            inside.wait()
            leave.wait()

    worker = threading.Thread(target=draw)
    worker.start()
    with text_layouts_once():
        inside.wait()
        assert caches[0] is not textlayout._local.cache
    # this thread left first: the worker is still inside, so the method stays replaced
    assert Text._get_layout is textlayout._layout
    leave.set()
    worker.join()
    assert Text._get_layout is own
