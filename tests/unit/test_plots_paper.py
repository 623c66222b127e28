"""Figures fit a paper: no page taller than MAX_HEIGHT, every panel present across pages, image
panels captioned with label and prediction, signed maps centred at 0, one colour per method and
per class."""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import TwoSlopeNorm, to_rgb

from probing import plots
from probing.errors import DataError
from probing.plots.attention import attention_grid_pages
from probing.plots.attribution import method_map_pages
from probing.style import MAX_HEIGHT, METHOD_COLOURS, class_colours, page_rows


def _attention_frame(n_layers: int, n_heads: int, grid: int = 3) -> pd.DataFrame:
    r, c = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    parts = [pd.DataFrame({"image_id": 7, "layer": layer, "head": head, "row": r.ravel(),
                           "col": c.ravel(), "value": (r.ravel() + layer + head) / 40.0})
             for layer in range(1, n_layers + 1) for head in range(n_heads)]
    return pd.concat(parts, ignore_index=True)


def _map_axes(fig) -> list:
    """Axes holding a patch map (an image artist) that are not colour bars."""
    return [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]


def test_page_rows_cover_every_row_once_within_the_height():
    pages = page_rows(25, 1.0, extra=0.5, max_height=9.0)
    assert [r for page in pages for r in page] == list(range(25))
    assert all(len(page) * 1.0 + 0.5 <= 9.0 for page in pages)
    assert len(pages) == 4  # 8 rows a page at most: 25 rows need 4 pages, spread 7/7/7/4
    assert page_rows(3, 1.0) == [range(0, 3)]


def test_large_attention_grid_is_split_into_pages_no_taller_than_a_page():
    frame = _attention_frame(n_layers=12, n_heads=6)
    figs = plots.plot_attention_grid(frame, label="cross", prediction="circle")
    assert len(figs) > 1  # one 12 x 6 grid at double width would be about 12 in tall
    for fig in figs:
        assert fig.get_figheight() <= MAX_HEIGHT + 1e-9
        fig.canvas.draw()  # constrained layout runs
    shown = {(ax.get_ylabel(), ax.get_title()) for fig in figs for ax in _map_axes(fig)}
    assert sum(len(_map_axes(fig)) for fig in figs) == 12 * 6
    layers = {ax.get_ylabel() for fig in figs for ax in _map_axes(fig)} - {""}
    assert layers == {f"layer {k}" for k in range(1, 13)}
    assert len(shown) >= 12  # every layer labels its first panel
    titles = [fig.get_suptitle() for fig in figs]
    assert all("label cross, pred circle" in t for t in titles)
    assert titles[-1].endswith(f"(page {len(figs)} of {len(figs)})")
    pages = attention_grid_pages(frame)
    assert [len(p) for p in pages] == [len(_map_axes(f)) // 6 for f in figs]
    assert sorted(layer for p in pages for layer in p) == list(range(1, 13))


def _method_frame(n_images: int, methods=("rollout", "integrated_gradients")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(n_images):
        for m in methods:
            r, c = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
            value = rng.random(16) if m == "rollout" else rng.standard_normal(16) - 0.3
            parts.append(pd.DataFrame({"image_id": i, "method": m, "row": r.ravel(),
                                       "col": c.ravel(), "value": value}))
    return pd.concat(parts, ignore_index=True)


def test_many_images_of_method_maps_are_paged_with_every_image_captioned():
    frame = _method_frame(20)
    images = {i: np.full((8, 8, 3), i / 20) for i in range(20)}
    labels = {i: f"L{i}" for i in range(20)}
    preds = [f"P{i}" for i in range(20)]
    figs = plots.plot_method_maps(frame, images, labels=labels, predictions=preds)
    assert len(figs) > 1
    assert all(fig.get_figheight() <= MAX_HEIGHT + 1e-9 for fig in figs)
    captions = [ax.get_xlabel() for fig in figs for ax in fig.axes if ax.get_xlabel()
                .startswith("label")]
    assert captions == [f"label L{i}, pred P{i}" for i in range(20)]
    rows = [ax.get_ylabel() for fig in figs for ax in fig.axes if ax.get_ylabel()]
    assert rows == [f"image {i}" for i in range(20)]
    # image column + 2 methods per image, all present across pages
    assert sum(len(_map_axes(fig)) for fig in figs) == 20 * 3
    pages = method_map_pages(range(20), 2)
    assert [i for p in pages for i in p] == list(range(20))


def test_signed_maps_are_centred_at_zero_with_a_colour_bar_per_method():
    frame = _method_frame(3)
    (fig,) = plots.plot_method_maps(frame)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    by_title = {}
    for ax in _map_axes(fig):
        by_title.setdefault(ax.get_title(), ax) if ax.get_title() else None
    ig = by_title["integrated gradients"].get_images()[-1]
    assert isinstance(ig.norm, TwoSlopeNorm) and ig.norm.vcenter == 0.0
    assert ig.norm.vmin == pytest.approx(-ig.norm.vmax)
    top = frame.loc[frame["method"] == "integrated_gradients", "value"].abs().max()
    assert ig.norm.vmax == pytest.approx(top)
    assert ig.get_cmap().name == plots.DIVERGING
    rollout = by_title["rollout"].get_images()[-1]
    assert not isinstance(rollout.norm, TwoSlopeNorm) and rollout.norm.vmin == 0.0


def test_a_method_has_one_colour_in_faithfulness_and_sanity_figures():
    fraction = np.linspace(0, 1, 4)
    curves = pd.concat([pd.DataFrame({"method": m, "mode": mode, "fraction": fraction,
                                      "prob": 1 - fraction})
                        for mode in ("deletion", "insertion")
                        for m in ("occlusion", "rollout", "random")], ignore_index=True)
    summary = pd.concat([pd.DataFrame({"method": m, "step": [0, 1], "randomized": ["head", "x"],
                                       "spearman_mean": [1.0, 0.2]})
                         for m in ("rollout", "integrated_gradients", "occlusion")])
    faith, sanity = plots.plot_faithfulness(curves), plots.plot_sanity(summary)

    def colours(fig) -> dict:
        return {line.get_label(): to_rgb(line.get_color()) for ax in fig.axes
                for line in ax.get_lines() if not line.get_label().startswith("_")} or {
            t.get_text(): to_rgb(h.get_color())
            for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg
            for t, h in zip(leg.get_texts(), leg.legend_handles)}

    f, s = colours(faith), colours(sanity)
    assert f["occlusion"] == s["occlusion"] == to_rgb(METHOD_COLOURS["occlusion"])
    assert f["rollout"] == s["rollout"] == to_rgb(METHOD_COLOURS["rollout"])
    assert f["random"] == to_rgb(METHOD_COLOURS["random"])


def test_ten_classes_get_ten_distinct_colours_and_the_first_two_differ_in_hue():
    for n in (4, 8, 10, 12, 20, 25):
        colours = [to_rgb(c) for c in class_colours(n)]
        assert len(set(colours)) == n, n
    ten = [colorsys.rgb_to_hsv(*to_rgb(c))[0] for c in class_colours(10)]
    assert abs(ten[0] - ten[1]) > 30 / 360  # tab20 made classes 0 and 1 two blues
    eleven = [colorsys.rgb_to_hsv(*to_rgb(c))[0] for c in class_colours(11)]
    assert abs(eleven[0] - eleven[1]) > 30 / 360
    coords = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40.0), "panel": "pca",
                           "layer": 1, "label": np.arange(40) % 10})
    fig = plots.plot_embedding_maps(coords, color="label")
    handles = fig.legends[0].legend_handles
    assert len({to_rgb(h.get_color()) for h in handles}) == 10


def test_attention_distance_lists_every_head_and_the_uniform_reference():
    frame = pd.DataFrame({"layer": np.repeat([1, 2, 3], 6), "head": np.tile(range(6), 3),
                          "distance_px": np.arange(18.0)})
    fig = plots.plot_attention_distance(frame, jitter=0.3, uniform_px=11.5)
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    # placed row by row in 4 columns: heads 0-3, then heads 4, 5 and the reference
    assert texts == ["head 0", "head 4", "head 1", "head 5", "head 2",
                     "uniform (11.5 px)", "head 3"]
    ax = fig.axes[0]
    markers = {tuple(map(tuple, c.get_paths()[0].vertices.round(3))) for c in ax.collections}
    assert len(ax.collections) == 6 and len(markers) == 6  # one marker shape per head
    faces = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(faces) == 6
    (line,) = ax.get_lines()
    assert line.get_ydata()[0] == 11.5 and line.get_linestyle() == "--"


def test_component_and_layer_axes_get_integer_ticks():
    frame = pd.DataFrame({"layer": 1, "kind": "cls", "component": [1, 2, 3],
                          "cumulative": [0.5, 0.8, 1.0]})
    fig = plots.plot_explained_variance(frame)
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    visible = ticks[(ticks >= 1) & (ticks <= 3)]
    assert np.allclose(visible, np.round(visible)) and len(visible) == 3


def test_a_layer_without_variance_has_no_line_and_its_legend_entry_says_why():
    nan = [np.nan] * 3
    frame = pd.DataFrame({"layer": [0] * 6 + [4] * 6, "kind": (["cls"] * 3 + ["pooled"] * 3) * 2,
                          "component": [1, 2, 3] * 4,
                          "cumulative": nan + [0.5, 0.8, 1.0] + [0.4, 0.7, 1.0] * 2})
    fig = plots.plot_explained_variance(frame)
    cls_lines = fig.axes[0].get_lines()
    assert np.isnan(cls_lines[0].get_ydata()).all()  # layer 0 of CLS: nothing drawn
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == ["layer 0 (CLS: all vectors equal)", "layer 4"]
    one = plots.plot_explained_variance(frame[frame["kind"] == "cls"])
    assert [t.get_text() for t in one.axes[-1].get_legend().get_texts()] == \
        ["layer 0 (all vectors equal)", "layer 4"]


def test_image_panels_of_the_multihead_figure_show_label_and_prediction():
    frame = _attention_frame(n_layers=1, n_heads=12)
    fig = plots.plot_multihead(frame, image=np.zeros((8, 8, 3)), label=3, prediction=5)
    assert fig.get_figheight() <= MAX_HEIGHT
    assert "label 3, pred 5" in [ax.get_xlabel() for ax in fig.axes]
    assert len(_map_axes(fig)) == 13  # image + 12 heads, wrapped onto two rows
    assert {ax.get_subplotspec().rowspan.start for ax in _map_axes(fig)} == {0, 1}


def test_predicted_classes_are_named_by_the_label_column_when_it_maps_onto_the_head():
    from probing.targets import label_map

    shapes = pd.DataFrame({"image_id": range(4), "label": ["cross", "circle", "cross", "square"],
                           "shape_id": [3, 0, 3, 1]})
    assert label_map(shapes, "label", 4).names == {3: "cross", 0: "circle", 1: "square"}
    digits = pd.DataFrame({"image_id": [0, 1], "label": [3, 7]})
    assert label_map(digits, "label", 10).names == {k: str(k) for k in range(10)}
    assert label_map(pd.DataFrame({"image_id": [0], "label": ["a"]}), "label", 4).names == {}


def test_probe_legend_entries_look_like_the_lines_they_name():
    result = pd.DataFrame({"layer": [0, 1, 0, 1], "kind": "patch",
                           "probe": ["task", "task", "majority", "majority"], "metric": "r2",
                           "value": [0.5, 0.4, 0.0, 0.0], "ci_low": 0.0, "ci_high": 0.6})
    fig = plots.plot_probe_layers(result)
    lines = {line.get_color(): line for line in fig.axes[0].get_lines()}
    legend = fig.axes[0].get_legend()
    for handle in legend.legend_handles:
        line = lines[handle.get_color()]
        assert handle.get_linestyle() == line.get_linestyle() == ":"
        assert handle.get_marker() == line.get_marker()


def test_a_tall_grid_of_embedding_maps_is_narrowed_to_fit_a_page():
    coords = pd.DataFrame({"x": np.arange(60.0), "y": np.arange(60.0),
                           "panel": np.repeat([f"p{i}" for i in range(6)], 10),
                           "layer": np.tile([1, 2], 30), "label": np.arange(60) % 3})
    fig = plots.plot_embedding_maps(coords, color="label")  # 6 x 2 panels at 6.8 in: 21 in
    assert fig.get_figheight() <= MAX_HEIGHT + 1e-9
    assert len([ax for ax in fig.axes if ax.collections]) == 12


def test_a_ten_class_grid_of_maps_saved_with_its_legend_fits_a_page_and_names_facets(tmp_path):
    from PIL import Image

    from probing.figfiles import save_figure

    # the MNIST study's overview: 4 rows (CLS and pooled, PCA and t-SNE) x 3 layers, 10 digits
    rows = [f"{k} {m}" for k in ("cls", "pooled") for m in ("PCA", "TSNE")]
    coords = pd.DataFrame({"x": np.arange(120.0), "y": np.arange(120.0) % 7,
                           "panel": np.repeat(rows, 30), "layer": np.tile([0, 3, 6], 40),
                           "label": np.arange(120) % 10})
    fig = plots.plot_embedding_maps(coords, color="label")
    save_figure(fig, tmp_path / "overview", formats=("png",))
    with Image.open(tmp_path / "overview.png") as im:
        dpi = im.info["dpi"][1]
        assert im.size[1] / dpi <= MAX_HEIGHT + 0.02  # titles and legend included
    names = {ax.get_ylabel() for ax in fig.axes} | {ax.get_title() for ax in fig.axes}
    assert {"CLS PCA", "CLS t-SNE", "pooled t-SNE", "layer 3"} <= names
    by_method = plots.plot_embedding_maps(coords.assign(kind="cls", method="tsne"), "label",
                                          rows="kind", cols="method")
    assert {ax.get_title() for ax in by_method.axes} >= {"t-SNE"}


def test_a_map_of_equal_vectors_says_so():
    coords = pd.DataFrame({"x": [1.0] * 4 + [0.0, 1, 2, 3], "y": [2.0] * 4 + [0.0, 1, 0, 1],
                           "panel": ["cls"] * 8, "layer": [0] * 4 + [1] * 4,
                           "label": [0, 1, 2, 3] * 2})
    fig = plots.plot_embedding_maps(coords, color="label")
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes if ax.collections]
    assert texts == [["all vectors equal"], []]


def test_panel_grids_equal_pivot_and_refuse_a_cell_given_twice():
    from probing.plots.attention import panel_grids

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_id": np.repeat([7, 3], 12), "method": "m",
                          "row": np.tile(np.repeat([2, 0, 1], 4), 2),
                          "col": np.tile([3, 1, 0, 2], 6), "value": rng.normal(size=24)})
    frame = frame.drop(index=[5]).sample(frac=1, random_state=1)  # a missing cell, any order
    grids = panel_grids(frame, ["image_id", "method"])
    for (image_id, method), grid in grids.items():
        g = frame[(frame["image_id"] == image_id) & (frame["method"] == method)]
        ref = g.pivot(index="row", columns="col", values="value").to_numpy()
        np.testing.assert_array_equal(grid, ref)
        assert grid.dtype == ref.dtype
    assert np.isnan(grids[7, "m"]).sum() == 1 and set(grids) == {(7, "m"), (3, "m")}
    with pytest.raises(DataError, match="no map for"):
        grids[5, "m"]
    with pytest.raises(DataError, match="two values"):
        panel_grids(pd.concat([frame, frame.iloc[:1]]), ["image_id"])


def test_map_panels_hide_only_the_axes_that_show_nothing():
    frame = _attention_frame(n_layers=2, n_heads=3)
    (fig,) = plots.plot_attention_grid(frame)
    maps = _map_axes(fig)
    # the first column names its layer: its y axis stays, the other y axes and all x axes
    # (no tick, no label) are hidden
    assert [ax.yaxis.get_visible() for ax in maps] == [True, False, False] * 2
    assert not any(ax.xaxis.get_visible() for ax in maps)
    assert [ax.get_ylabel() for ax in maps][::3] == ["layer 1", "layer 2"]
    bar = fig.axes[-1]
    assert bar.yaxis.get_visible() and bar.get_ylabel() == "attention weight"
    # method maps beside a captioned image column keep their blank x label (rows align)
    (maps_fig,) = plots.plot_method_maps(_method_frame(2), images={0: np.zeros((4, 4)),
                                                                   1: np.ones((4, 4))},
                                         labels=["a", "b"])
    assert all(ax.xaxis.get_visible() for ax in _map_axes(maps_fig))
    assert [ax.get_xlabel() for ax in _map_axes(maps_fig)][::3] == ["label a", "label b"]
