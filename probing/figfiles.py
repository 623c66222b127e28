"""Figure files: each figure laid out once and saved in every format, in worker processes.

Saving a figure with ``bbox_inches="tight"`` draws it twice (once to measure, once to render),
for every format. :func:`save_figures` lays each figure out once (its layout engine, without
drawing the artists: a draw costs as much as writing a format), measures it once, then renders
every format into the same fixed bounding box; figures are shared among worker
processes (forked, so nothing is pickled) when more than one core is available. The bytes are
the same as a serial save: same figure, same style, same fixed metadata.

The layout pass measures each Axes once per layout state (constrained layout would measure a
colour bar shared by n Axes n times a pass) and shares one renderer, and so its cache of
text extents, with the tight-bbox measure after it; neither changes a byte of the files.
Every text is laid out once for all of it (:func:`probing.textlayout.text_layouts_once`).

Conventions of the files:

- the layout and the tight bounding box are computed at the PNG's resolution, as
  matplotlib's own ``savefig(dpi=...)`` computes them, so the PNG has the pixels that
  ``savefig`` gives; the vector formats share that layout;
- PNGs are written by :func:`probing.pngfile.png_bytes` (no row filter: the same pixels as
  PIL's file in 40% of the time);
- in the vector formats, an image that the PNG shows pixel by pixel (``"nearest"``, or
  matplotlib's ``"auto"`` rule choosing nearest for an image shown over 3 times its size) is
  embedded at its own resolution and drawn pixelated (``"none"``), each image on its own (not
  composited into one raster); other images and rasterized artists are rasterized at the
  PNG's resolution;
- every format's draw places and labels an axis's ticks once (:func:`_ticks_once`): the same
  bytes.

On the demo's 29 figures (one process, 2026-12-02) all of this took the drawing of PNG + SVG
from 4.8 to 3.3 CPU s (about 0.5 s the text layouts, 0.25 s the PNG writer, 0.35 s the vector
images, 0.1 s the ticks, the rest the layout at the PNG's dpi sharing its text layouts with
the PNG's draw).
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .errors import ReportError
from .pngfile import png_bytes
from .style import paper_style
from .textlayout import text_layouts_once

log = logging.getLogger("probing")

__all__ = ["DEFAULT_FORMATS", "FORMATS", "PNG_DPI", "figure_formats", "render_figure",
           "render_settings", "save_figure", "save_figures", "settings_key"]

#: Formats a report can write. PNG is what index.html and README.md show; SVG keeps text as
#: text for editing; PDF (for LaTeX) is the slowest to write (fonts are embedded) and opt-in.
FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMATS = ("png", "svg")
#: PNG resolution: a 6.8 in (two-column) figure is 1360 px wide, sharp at the HTML page's
#: 60 rem column on a 2x screen; vector formats carry full resolution.
PNG_DPI = 200
#: More workers than this gain nothing on a report's two dozen figures.
MAX_WORKERS = 4

#: Figures to save, set in the parent just before the workers fork (inherited, not pickled).
_JOBS: list[tuple[Figure, Path]] = []
_SETTINGS: dict = {}


def _metadata(ext: str) -> dict | None:
    # fixed metadata so that the same figure gives the same bytes on every run
    if ext == "png":
        return {"Software": None}
    if ext == "svg":
        return {"Date": None}
    if ext == "pdf":
        return {"CreationDate": None, "ModDate": None}
    return None


def figure_formats(formats: Sequence[str] = DEFAULT_FORMATS) -> tuple[str, ...]:
    """The formats a report writes for ``formats``: PNG first (the page shows it), then the
    others asked for, in :data:`FORMATS` order.

    Raises
    ------
    ReportError
        When a format is not one of :data:`FORMATS`.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ReportError(
            f"figure format {bad[0]!r} is not one of {', '.join(FORMATS)}; choose from those.")
    return ("png", *[f for f in FORMATS[1:] if f in formats])


def render_settings(formats: Sequence[str] = DEFAULT_FORMATS,
                    style: Mapping[str, object] | None = None) -> dict:
    """The settings a report draws its figures with: ``{"formats", "dpi", "style"}`` (the
    formats of :func:`figure_formats`, the PNG resolution ``style["savefig.dpi"]`` or
    :data:`PNG_DPI`, the rc overrides), as :func:`render_figure` and :func:`save_figures`
    take them."""
    style = dict(style or {})
    return {"formats": figure_formats(formats),
            "dpi": float(style.get("savefig.dpi", PNG_DPI)), "style": style}


def settings_key(settings: Mapping[str, object]) -> str:
    """A string that tells :func:`render_settings` apart (figures drawn with equal keys have
    equal bytes)."""
    return json.dumps({k: settings[k] for k in ("formats", "dpi", "style")}, sort_keys=True,
                      default=repr)


class _Canvas(FigureCanvasAgg):
    """An Agg canvas whose PNGs are written by :func:`probing.pngfile.png_bytes`."""

    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, **_) -> None:
        # savefig passes a third party's print method all its options; those it applied
        # itself (dpi, facecolor, bbox_inches_restore) Agg's print_png drops too. The file has
        # no text chunks (metadata), and PIL is not involved (pil_kwargs).
        FigureCanvasAgg.draw(self)
        data = png_bytes(np.asarray(self.buffer_rgba()), self.figure.dpi)
        if isinstance(filename_or_obj, (str, os.PathLike)):
            Path(filename_or_obj).write_bytes(data)
        else:
            filename_or_obj.write(data)


@contextmanager
def _agg_canvas(figure: Figure) -> Iterator[None]:
    """``figure`` on an Agg canvas while it is drawn, its own canvas again afterwards.

    A figure made outside pyplot has a bare canvas, which makes a new renderer each time one
    is asked for: the layout pass and the tight-bbox measure then each measure every text
    afresh. An Agg canvas keeps its renderer (per size and dpi), and with it matplotlib's
    cache of text extents, so the measure after the layout reuses the layout's extents."""
    canvas = figure.canvas
    _Canvas(figure)
    try:
        yield
    finally:
        figure.set_canvas(canvas)


@contextmanager
def _at_dpi(figure: Figure, dpi: float) -> Iterator[None]:
    """``figure`` at ``dpi`` while inside (as ``savefig(dpi=...)`` sets it), its own after."""
    own = figure.dpi
    figure.dpi = dpi
    try:
        yield
    finally:
        figure.dpi = own


def _drawn_nearest(image: AxesImage) -> bool:
    """Whether the PNG (drawn at the figure's current dpi) shows ``image`` pixel by pixel:
    ``"nearest"``, or matplotlib's ``"auto"`` (``"antialiased"``) rule choosing nearest
    because the image is shown more than 3 times its size in both directions."""
    how = image.get_interpolation()
    if how == "nearest":
        return True
    if how not in ("auto", "antialiased") or image.get_array() is None:
        return False
    rows, cols = image.get_array().shape[:2]
    shown = image.get_window_extent()
    return shown.width > 3 * cols and shown.height > 3 * rows


@contextmanager
def _vector_images(figure: Figure) -> Iterator[None]:
    """While inside, ``figure``'s images that the PNG shows pixel by pixel (:func:`_drawn_nearest`)
    draw unsampled (``"none"``: a vector file embeds the image's own pixels, shown pixelated),
    and no images are composited into one raster (an overlay stays an image above an image)."""
    pixelwise = [(im, im.get_interpolation()) for im in figure.findobj(AxesImage)
                 if _drawn_nearest(im)]
    for im, _ in pixelwise:
        im.set_interpolation("none")
    try:
        with matplotlib.rc_context({"image.composite_image": False}):
            yield
    finally:
        for im, how in pixelwise:
            im.set_interpolation(how)


@contextmanager
def _ticks_once(figure: Figure) -> Iterator[None]:
    """While inside, each axis of ``figure`` places and labels its ticks once per state (its
    view interval, its Axes' position and the figure's size in inches), however many formats
    are drawn: a PNG and an SVG of one layout have the same ticks, since a locator counts
    ticks by the axis's length in points, which the dpi does not change."""
    axes = [axis for ax in figure.axes for axis in ax._axis_map.values()
            if "_update_ticks" not in vars(axis)]

    def once(axis) -> Callable:
        update, last = axis._update_ticks, [None, None]  # key, ticks

        def _update_ticks():
            key = (tuple(axis.get_view_interval()), axis.axes.get_position().bounds,
                   tuple(figure.get_size_inches()))
            if last[0] != key:
                last[:] = [key, update()]
            return list(last[1])

        return _update_ticks

    for axis in axes:
        axis._update_ticks = once(axis)
    try:
        yield
    finally:
        for axis in axes:
            del axis._update_ticks


def _box(ax: Axes) -> tuple:
    """An Axes' position and box settings, as a layout pass changes them."""
    return (ax.get_position(original=True).bounds, ax.get_anchor(), ax.get_box_aspect(),
            ax.get_aspect())


def _related(ax: Axes, axes: Sequence[Axes]) -> list[Axes]:
    """The Axes whose boxes ``ax``'s tight bbox depends on: itself, the Axes it shares an
    axis with (ticks follow the shared locator's axis length; twins share one), its inset
    Axes; every Axes of the figure when labels are aligned across Axes."""
    if any(len(list(group)) for group in getattr(ax.figure,
                                                  "_align_label_groups", {}).values()):
        return list(axes)
    related = {ax, *ax.get_shared_x_axes().get_siblings(ax),
               *ax.get_shared_y_axes().get_siblings(ax), *ax.child_axes}
    return [a for a in axes if a in related]


@contextmanager
def _tight_bboxes_once(figure: Figure) -> Iterator[None]:
    """Measure each Axes of ``figure`` once per layout state while inside.

    Constrained layout measures a colour bar once for every Axes it belongs to (a bar beside
    a 4 x 4 grid of maps: 16 times a pass, at one position), and once more when it places
    it, each measure as costly as the Axes' own; inside, a measure repeated while none of
    the boxes it depends on (:func:`_related`) has moved returns the first one's bbox.
    """
    axes = list(figure.axes)
    wrapped = [ax for ax in axes if "get_tightbbox" not in vars(ax)]

    def once(ax: Axes, measure: Callable) -> Callable:
        related = _related(ax, axes)
        last: list = [None, None]  # key, bbox

        def get_tightbbox(renderer=None, *args, **kwargs):
            key = (renderer, args, tuple(sorted(kwargs.items())), [_box(a) for a in related])
            if last[0] != key:
                last[:] = [key, measure(renderer, *args, **kwargs)]
            return None if last[1] is None else last[1].frozen()

        return get_tightbbox

    for ax in wrapped:
        ax.get_tightbbox = once(ax, ax.get_tightbbox)
    try:
        yield
    finally:
        for ax in wrapped:
            del ax.get_tightbbox


def _draw(figure: Figure, targets: Mapping[str, object], dpi: float,
          style: Mapping[str, object] | None) -> None:
    """Lay ``figure`` out and measure it once, at ``dpi``, then save it to ``targets[ext]`` (a
    path or a binary file) for each format ``ext``."""
    with paper_style(style), _agg_canvas(figure), _at_dpi(figure, dpi), text_layouts_once():
        engine = figure.get_layout_engine()
        bbox = None
        if engine is not None and figure.axes:
            # the one layout pass (what a draw starts with, without drawing the artists);
            # savefig would repeat it, and the "tight" measure's draw, per format
            try:
                with _tight_bboxes_once(figure):
                    engine.execute(figure)
            except ValueError:  # as Figure.draw: a layout that cannot be done is skipped
                pass
        if matplotlib.rcParams["savefig.bbox"] == "tight":
            bbox = figure.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
        if engine is not None:  # laid out above: no engine while saving, as savefig does
            with matplotlib.rc_context({"figure.autolayout": False,
                                        "figure.constrained_layout.use": False}):
                figure.set_layout_engine(None)
        try:
            with _ticks_once(figure):  # one state for every format's draw
                for ext, target in targets.items():
                    with nullcontext() if ext == "png" else _vector_images(figure):
                        figure.savefig(target, format=ext, dpi=dpi, metadata=_metadata(ext),
                                       bbox_inches=bbox)
        finally:
            if engine is not None:
                figure.set_layout_engine(engine)


def save_figure(figure: Figure, stem: Path, formats: Sequence[str] = DEFAULT_FORMATS,
                dpi: float = PNG_DPI, style: Mapping[str, object] | None = None) -> None:
    """Save ``figure`` as ``stem.EXT`` for each format, laid out (and measured) only once.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The drawn figure (left open).
    stem : pathlib.Path
        Output path without suffix.
    formats : sequence of str
        Out of :data:`FORMATS`.
    dpi : float
        Resolution of the PNG, in dots per inch.
    style : mapping, optional
        matplotlib rc overrides (see :func:`probing.style.paper_style`).
    """
    _draw(figure, {ext: stem.with_name(f"{stem.name}.{ext}") for ext in formats}, dpi, style)


def render_figure(figure: Figure, formats: Sequence[str] = DEFAULT_FORMATS,
                  dpi: float = PNG_DPI, style: Mapping[str, object] | None = None
                  ) -> dict[str, bytes]:
    """The files :func:`save_figure` writes, as bytes: ``{ext: bytes}`` per format.

    An analysis worker process draws its own figures with this, so that only bytes go back
    to the run's process (:mod:`probing.run.parallel`); the bytes are those
    :func:`save_figure` writes for the same figure and settings.
    """
    buffers = {ext: io.BytesIO() for ext in formats}
    _draw(figure, buffers, dpi, style)
    return {ext: b.getvalue() for ext, b in buffers.items()}


def _save_job(index: int) -> int:
    figure, stem = _JOBS[index]
    save_figure(figure, stem, **_SETTINGS)
    return index


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cost(figure: Figure) -> float:
    width, height = figure.get_size_inches()
    return float(width * height) * (1 + len(figure.axes))


def save_figures(jobs: Sequence[tuple[Figure, Path]], formats: Sequence[str] = DEFAULT_FORMATS,
                 dpi: float = PNG_DPI, style: Mapping[str, object] | None = None,
                 workers: int | None = None, meanwhile: Callable[[], None] | None = None
                 ) -> None:
    """Save many figures (see :func:`save_figure`), in ``workers`` forked processes.

    Parameters
    ----------
    jobs : sequence of (Figure, pathlib.Path)
        Each figure and its output stem.
    formats, dpi, style
        As for :func:`save_figure`.
    workers : int, optional
        Worker processes; by default one per available core (at most 4). 1, a platform
        without ``fork``, or fewer than 3 figures save in this process.
    meanwhile : callable, optional
        Other work of the caller (tables, pages), called once in this process while the
        workers save the figures (before saving them when there are no workers).
    """
    settings = {"formats": tuple(formats), "dpi": dpi, "style": dict(style or {})}
    n = min(workers or _cores(), MAX_WORKERS, len(jobs))
    if n > 1 and len(jobs) >= 3 and "fork" in multiprocessing.get_all_start_methods():
        global _JOBS, _SETTINGS
        # largest first, so that no worker is left alone with the biggest figure at the end
        order = sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i][0]))
        _JOBS, _SETTINGS = list(jobs), settings
        try:
            try:
                pool = multiprocessing.get_context("fork").Pool(n)
            except OSError as exc:  # no semaphores here (no /dev/shm): save in this process
                log.debug("saving figures in one process: %s", exc)
            else:
                with pool:
                    saved = pool.imap_unordered(_save_job, order)
                    if meanwhile is not None:
                        meanwhile()
                    for _ in saved:
                        pass
                return
        finally:
            _JOBS, _SETTINGS = [], {}
    if meanwhile is not None:
        meanwhile()
    for figure, stem in jobs:
        save_figure(figure, stem, **settings)
