"""Figure files: the one layout pass gives the files a full draw before saving gives."""

from __future__ import annotations

import base64
import io
import re
import time
from contextlib import nullcontext
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from probing import figfiles  # noqa: E402
from probing.errors import ReportError  # noqa: E402
from probing.figfiles import (  # noqa: E402
    PNG_DPI,
    _metadata,
    render_figure,
    render_settings,
    save_figure,
)
from probing.report import Report  # noqa: E402
from probing.sections import Figure, Section  # noqa: E402
from probing.style import paper_style  # noqa: E402


def _figure(layout: str | None):
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(1, 2, layout=layout, figsize=(5, 2.5))
    ax[0].plot(rng.normal(size=40), label="a line")
    ax[0].legend(loc="best")
    ax[0].set_title("a long title " * 2)
    image = ax[1].imshow(rng.normal(size=(6, 6)))
    fig.colorbar(image, ax=ax[1])
    fig.suptitle("suptitle")
    return fig


def _drawn_first(fig, stem) -> None:
    """The reference: a full draw (layout included) at the PNG's resolution before measuring
    and saving each format (the PNG by matplotlib's own writer, PIL; in the SVG the map the
    PNG shows pixel by pixel embedded as its own pixels)."""
    with paper_style(None), matplotlib.rc_context({"image.composite_image": False}):
        fig.set_dpi(PNG_DPI)
        fig.draw_without_rendering()
        bbox = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
        fig.set_layout_engine("none")
        for ext in ("png", "svg"):
            if ext == "svg":  # the 6 x 6 map, shown far above 3x its size: its own pixels
                fig.axes[1].images[0].set_interpolation("none")
            fig.savefig(stem.with_name(f"{stem.name}.{ext}"), format=ext, dpi=PNG_DPI,
                        metadata=_metadata(ext), bbox_inches=bbox)


def _pixels(path) -> tuple:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA")), im.info.get("dpi")


def _assert_same_files(ours, reference) -> None:
    """The same PNG pixels and resolution (the writers differ), the same SVG bytes."""
    (png, dpi), (ref_png, ref_dpi) = _pixels(f"{ours}.png"), _pixels(f"{reference}.png")
    assert png.shape == ref_png.shape and (png == ref_png).all() and dpi == ref_dpi
    assert Path(f"{ours}.svg").read_bytes() == Path(f"{reference}.svg").read_bytes()


@pytest.mark.parametrize("layout", ["constrained", "tight", None])
def test_layout_without_a_draw_writes_the_files_of_a_drawn_figure(tmp_path, layout):
    ours, reference = _figure(layout), _figure(layout)
    save_figure(ours, tmp_path / "ours")
    _drawn_first(reference, tmp_path / "reference")
    _assert_same_files(tmp_path / "ours", tmp_path / "reference")
    plt.close("all")


def test_the_png_has_the_pixels_of_matplotlibs_own_savefig(tmp_path):
    ours, reference = _figure("constrained"), _figure("constrained")
    save_figure(ours, tmp_path / "ours", formats=("png",))
    with paper_style(None):
        reference.savefig(tmp_path / "reference.png", dpi=PNG_DPI, bbox_inches="tight")
    (png, dpi), (ref_png, ref_dpi) = _pixels(tmp_path / "ours.png"), \
        _pixels(tmp_path / "reference.png")
    assert png.shape == ref_png.shape and (png == ref_png).all() and dpi == ref_dpi
    assert ours.dpi == reference.dpi == 100  # the figure's own dpi again afterwards
    plt.close("all")


def test_images_the_png_shows_pixel_by_pixel_are_embedded_at_their_own_size_in_the_svg(
        tmp_path):
    fig, (left, middle, right) = plt.subplots(1, 3, layout="constrained", figsize=(6, 2))
    grid = np.arange(35.0).reshape(5, 7)
    nearest = left.imshow(grid, interpolation="nearest")
    photo = middle.imshow(np.random.default_rng(0).random((400, 400)))  # shrunk: smoothed
    right.imshow(np.ones((30, 30)))  # "auto", shown over 3x its size: nearest in the PNG
    overlay = right.imshow(grid, interpolation="nearest", alpha=0.5, extent=(0, 30, 30, 0))
    save_figure(fig, tmp_path / "f")
    svg = (tmp_path / "f.svg").read_text()
    sizes = []
    for data in re.findall(r"data:image/png;base64,\s*([A-Za-z0-9+/=\s]+)", svg):
        with Image.open(io.BytesIO(base64.b64decode("".join(data.split())))) as im:
            sizes.append(im.size)
    # the nearest images as their 7 x 5 pixels, the upscaled one as its 30 x 30 (the overlay
    # not composited with it); the shrunk photo rasterized at the PNG's 200 dpi (about 1.7 in
    # wide: some 300-400 pixels)
    assert sorted(sizes)[:3] == [(7, 5), (7, 5), (30, 30)] and len(sizes) == 4
    assert 250 < max(sizes)[0] < 400
    assert svg.count("image-rendering:pixelated") == 3
    assert nearest.get_interpolation() == overlay.get_interpolation() == "nearest"
    assert photo.get_interpolation() == right.images[0].get_interpolation() == "auto"
    plt.close("all")


def test_render_figure_gives_the_bytes_save_figure_writes(tmp_path):
    files = render_figure(_figure("constrained"), ("png", "svg", "pdf"))
    save_figure(_figure("constrained"), tmp_path / "saved", formats=("png", "svg", "pdf"))
    assert set(files) == {"png", "svg", "pdf"}
    for ext, data in files.items():
        assert data == (tmp_path / f"saved.{ext}").read_bytes(), ext
    plt.close("all")


def _section(fig) -> Section:
    return Section("s", figures=[Figure("f", fig, "caption.", pd.DataFrame({"x": [1]}))])


def test_the_report_writes_the_files_a_worker_drew_with_its_settings(tmp_path):
    drawn = _section(_figure("constrained"))
    drawn.figures[0].render(render_settings(("png", "svg")))
    drawn.figures[0].figure = None
    drawn.figures[0].files["png"] = b"the drawn bytes"  # what the report writes, unchanged
    Report("r", [drawn]).write(tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "f.png").read_bytes() == b"the drawn bytes"
    assert (tmp_path / "r" / "figures" / "f.svg").read_bytes() == drawn.figures[0].files["svg"]
    # other settings: drawn again from the figure when it has one, else a clear error
    kept = _section(_figure("constrained"))
    kept.figures[0].render(render_settings(("png", "svg")))
    Report("r", [kept]).write(tmp_path / "pdf", formats=("png", "pdf"))
    assert (tmp_path / "pdf" / "figures" / "f.pdf").is_file()
    with pytest.raises(ReportError, match="drawn with other settings"):
        Report("r", [drawn]).write(tmp_path / "big", style={"savefig.dpi": 100})
    assert not (tmp_path / "big").exists()
    plt.close("all")


def _shared_bar_figure():
    """A 3 x 3 grid of titled, labelled maps with one colour bar beside all nine."""
    rng = np.random.default_rng(1)
    fig, axes = plt.subplots(3, 3, layout="constrained", figsize=(4, 3.6))
    for k, ax in enumerate(axes.ravel()):
        image = ax.imshow(rng.normal(size=(4, 4)))
        ax.set_title(f"panel {k}")
        ax.set_ylabel(f"row {k // 3}")
    fig.colorbar(image, ax=axes, shrink=0.8, label="value")
    return fig


def test_a_colour_bar_of_many_axes_is_measured_once_a_layout_pass_and_the_bytes_stay(
        tmp_path, monkeypatch):
    ours, reference = _shared_bar_figure(), _shared_bar_figure()
    bar = ours.axes[-1]
    calls = []
    measure = bar.yaxis.get_tightbbox
    bar.yaxis.get_tightbbox = lambda *a, **k: calls.append(1) or measure(*a, **k)
    canvas = ours.canvas
    save_figure(ours, tmp_path / "ours")
    # the reference: every measure made, each on a new renderer (as matplotlib does)
    monkeypatch.setattr(figfiles, "_tight_bboxes_once", lambda figure: nullcontext())
    monkeypatch.setattr(figfiles, "_agg_canvas", lambda figure: nullcontext())
    monkeypatch.setattr(figfiles, "text_layouts_once", nullcontext)
    monkeypatch.setattr(figfiles, "_ticks_once", lambda figure: nullcontext())
    save_figure(reference, tmp_path / "reference")
    _assert_same_files(tmp_path / "ours", tmp_path / "reference")
    # constrained layout asks for the bar once per parent Axes (9) and once to place it, in
    # each of its two passes; the tight bbox once more
    assert len(calls) <= 3
    # nothing left behind: the figure's own canvas, the Axes' and axes' own methods
    assert ours.canvas is canvas
    assert not any("get_tightbbox" in vars(ax) for ax in ours.axes)
    assert not any("_update_ticks" in vars(axis) for ax in ours.axes
                   for axis in ax._axis_map.values())
    plt.close("all")


def test_figure_seconds_count_the_figures_and_not_the_tables(tmp_path, monkeypatch):
    from probing import report as report_module

    tables = report_module.Report._tables

    def slow_tables(self, tmp):
        time.sleep(0.4)
        return tables(self, tmp)

    def slow_save(figure, stem, **settings):
        time.sleep(0.4)
        save_figure(figure, stem, **settings)

    monkeypatch.setattr(report_module.Report, "_tables", slow_tables)
    monkeypatch.setattr(figfiles, "save_figure", slow_save)
    drawn = _section(_figure("constrained"))  # drawn already (as by a worker): files written
    drawn.figures[0].render(render_settings(("png", "svg")))
    report = Report("r", [drawn])
    t = time.perf_counter()
    report.write(tmp_path / "drawn")
    assert time.perf_counter() - t >= 0.4 and 0 <= report.figure_seconds < 0.3
    report = Report("r", [_section(_figure("constrained"))])  # drawn here, in this process
    report.write(tmp_path / "here", workers=1)
    assert report.figure_seconds >= 0.4
    plt.close("all")
