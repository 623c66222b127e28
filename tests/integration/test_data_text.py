"""Text from data is drawn literally, and ids never break figure or file names.

- every figure function of :mod:`probing.plots`, drawn with labels such as ``$\\frac{a}$``
  (bad mathtext), ``$\\undefinedmacro$``, ``_hidden`` (matplotlib hides legend labels starting
  with ``_``) and ``a|b``: the drawn texts equal the literal strings, the SVG holds them as text,
  and saving to PNG and SVG does not raise;
- the demo analyses end to end on a manifest whose label values and image ids are such strings
  (ids ``IMG_01``, ``../../x``, ``a/b``): the report is written and every figure file stays in
  the report's ``figures/`` folder.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from probing import plots
from probing.style import paper_style

NASTY = ["$\\frac{a}$", "$\\undefinedmacro$", "_hidden", "a|b"]


def _maps(ids: list, methods: list | None = None, heads: int = 2) -> pd.DataFrame:
    """Tidy 2 x 2 maps: ``image_id, layer, head, row, col, value`` (+ ``method``)."""
    rows = []
    for image_id in ids:
        for m in methods or [None]:
            for head in range(heads):
                for r in range(2):
                    for c in range(2):
                        rows.append({"image_id": image_id, "method": m, "layer": 1, "head": head,
                                     "row": r, "col": c, "value": 0.1 * (r + 2 * c + head + 1)})
    return pd.DataFrame(rows)


def _attention_distance():
    frame = pd.DataFrame({"model": np.repeat(NASTY, 4), "layer": np.tile([1, 1, 2, 2], 4),
                          "head": np.tile([0, 1, 0, 1], 4), "distance_px": np.arange(16.0) + 1})
    # 7 entries in 4 columns, placed row by row (matplotlib fills column by column)
    legend = [NASTY[0], "head 0", NASTY[1], "head 1", NASTY[2], "uniform (5.0 px)",
              NASTY[3]]
    return plots.plot_attention_distance(frame, jitter=0.3, uniform_px=5.0), NASTY, legend


def _attention_grid():
    frame = _maps([NASTY[0], NASTY[2]])
    (fig,) = plots.plot_attention_grid(frame, image_id=NASTY[2], label=NASTY[3],
                                       prediction=NASTY[0])
    return fig, ["head 0", "layer 1", f"image {NASTY[2]}: label {NASTY[3]}, pred {NASTY[0]}"], None


def _multihead():
    frame = _maps([NASTY[1]])
    image = np.random.default_rng(0).random((8, 8, 3))
    fig = plots.plot_multihead(frame, image=image, image_id=NASTY[1], label=NASTY[0],
                               prediction=NASTY[3])
    return fig, ["layer 1", f"label {NASTY[0]}, pred {NASTY[3]}"], None


def _method_maps():
    frame = _maps(NASTY[:2], methods=NASTY, heads=1)
    (fig,) = plots.plot_method_maps(frame, images={NASTY[0]: np.ones((8, 8))},
                                    labels={NASTY[0]: NASTY[2]}, predictions=[NASTY[1]])
    return fig, [*NASTY, f"image {NASTY[0]}", f"image {NASTY[1]}",
                 f"label {NASTY[2]}, pred {NASTY[1]}"], None


def _faithfulness():
    fraction = np.linspace(0, 1, 5)
    curves = pd.concat([pd.DataFrame({"method": m, "mode": mode, "fraction": fraction,
                                      "prob": fraction[::-1] * (k + 1) / 6})
                        for mode in ("deletion", NASTY[3])
                        for k, m in enumerate([*NASTY, "random"])], ignore_index=True)
    return plots.plot_faithfulness(curves), [*NASTY, "deletion"], [*NASTY, "random"]


def _sanity():
    summary = pd.concat([pd.DataFrame({"method": m, "step": range(4), "randomized": NASTY,
                                       "spearman_mean": np.linspace(1, 0, 4) / (k + 1),
                                       "spearman_std": 0.05})
                         for k, m in enumerate(NASTY)], ignore_index=True)
    # the legend places its 4 entries row by row in 2 columns
    return plots.plot_sanity(summary), NASTY, [NASTY[0], NASTY[2], NASTY[1], NASTY[3]]


def _embedding_categories():
    rng = np.random.default_rng(0)
    n = 24
    coords = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n),
                           "panel": np.repeat([NASTY[0], NASTY[3]], n // 2),
                           "layer": np.tile([0, 4], n // 2),
                           # "_hidden" never appears in the first panel: still one legend entry
                           NASTY[1]: [NASTY[i % 2] if i < n // 2 else NASTY[2 + i % 2]
                                      for i in range(n)]})
    fig = plots.plot_embedding_maps(coords, color=NASTY[1])
    return fig, [NASTY[0], NASTY[3], NASTY[1]], sorted(NASTY)


def _embedding_numeric():
    rng = np.random.default_rng(1)
    coords = pd.DataFrame({"x": rng.normal(size=40), "y": rng.normal(size=40), "panel": "p",
                           "layer": 0, NASTY[0]: np.arange(40.0)})
    return plots.plot_embedding_maps(coords, color=NASTY[0], width="single"), [NASTY[0]], None


def _explained_variance():
    frame = pd.DataFrame([{"layer": layer, "kind": kind, "component": c,
                           "cumulative": min(1.0, 0.3 * c)}
                          for kind in NASTY[:2] for layer in (0, 2) for c in range(1, 5)])
    return plots.plot_explained_variance(frame), NASTY[:2], ["layer 0", "layer 2"]


def _decay_1d():
    frame = pd.DataFrame([{"p": p, "k": k, NASTY[0]: np.cos(k / 3)}
                          for p in (0, 4) for k in range(8)])
    fig = plots.plot_decay_1d(frame, value=NASTY[0])
    return fig, [f"{NASTY[0]} PE(p)·PE(p+k)", "start position"], ["p = 0", "p = 4"]


def _decay_2d():
    frame = pd.DataFrame([{"source": s, "distance": d, "cosine_mean": 1 / (d + 1),
                           "cosine_std": 0.1} for s in NASTY for d in range(5)])
    fig = plots.plot_decay_2d(frame, halving={NASTY[0]: 1.5, NASTY[2]: 2.0})
    return fig, NASTY, NASTY


def _similarity_grid():
    rows = [{"query_row": qr, "query_col": qc, "row": r, "col": c, "metric": NASTY[3],
             "value": float(qr == r) - 0.5 * float(qc != c)}
            for qr in range(2) for qc in range(3) for r in range(2) for c in range(3)]
    fig = plots.plot_similarity_grid(pd.DataFrame(rows), title=NASTY[0])
    return fig, [NASTY[0], NASTY[3]], None


def _subspace_angles():
    comp = [{"metric": "angle_deg", "component": float(c), "value": 20.0 * c, "null_mean": 80.0,
             "null_low": 75.0, "null_high": 85.0} for c in (1, 2, 3)]
    frac = [{"metric": m, "component": np.nan, "value": 0.2, "null_mean": 0.1, "null_low": 0.05,
             "null_high": 0.15} for m in ("pe_variance_in_content", "content_variance_in_pe")]
    # no text of this figure comes from data; it must still draw and save
    return plots.plot_subspace_angles(pd.DataFrame(comp + frac)), ["random mean"], None


def _probe_layers():
    result = pd.DataFrame([{"layer": layer, "kind": kind, "probe": probe, "metric": NASTY[1],
                            "value": 0.5 + 0.1 * layer, "ci_low": 0.4, "ci_high": 0.9}
                           for probe in NASTY for kind in ("cls", "pooled") for layer in range(3)])
    fig = plots.plot_probe_layers(result, metric=NASTY[1], probes=tuple(NASTY), title=NASTY[3])
    return fig, [NASTY[1], NASTY[3]], [*NASTY, "cls", "pooled"]


def _cka_heatmap():
    result = pd.DataFrame([{"layer_a": a, "layer_b": b, "metric": "cka",
                            "value": 1.0 if a == b else 0.5}
                           for a in NASTY for b in NASTY])
    fig = plots.plot_cka_heatmap(result, label_a=NASTY[0], label_b=NASTY[2], title=NASTY[1])
    return fig, NASTY, None


def _similarity_vs_layer():
    result = pd.DataFrame([{"layer": layer, "value": 0.1 * layer, "ci_low": 0.0, "ci_high": 0.5,
                            "measure": m} for m in NASTY for layer in range(4)])
    fig = plots.plot_similarity_vs_layer(result, group="measure", ylabel=NASTY[0],
                                         title=NASTY[2])
    return fig, NASTY, NASTY


def _logit_lens():
    scores = pd.DataFrame([{"layer": layer, "metric": m, "value": v, "ci_low": np.nan,
                            "ci_high": np.nan}
                           for layer in range(3) for m, v in (("accuracy", 0.3 * layer),
                                                              ("mean_rank", 3.0 - layer))])
    probe = pd.DataFrame({"layer": range(3), "value": [0.5, 0.6, 0.9], "ci_low": 0.4,
                          "ci_high": 1.0})
    # no text of this figure comes from data; it must still draw and save
    fig = plots.plot_logit_lens(scores, probe, chance=0.25)
    return fig, ["logit lens (model's head)", "linear probe (held out)"], None


def _head_ablation():
    rows = [{"layer": layer, "head": head, "mode": mode, "metric": "logit_drop",
             "value": 0.1 * head - 0.05 * layer}
            for mode in ("zero", "mean") for layer in (1, 2) for head in (-1, 0, 1)]
    # no text of this figure comes from data (modes and heads are the toolkit's own)
    return plots.plot_head_ablation(pd.DataFrame(rows)), ["zero ablation", "mean ablation"], None


CASES: dict[str, Callable] = {
    "plot_attention_distance": _attention_distance,
    "plot_attention_grid": _attention_grid,
    "plot_multihead": _multihead,
    "plot_method_maps": _method_maps,
    "plot_faithfulness": _faithfulness,
    "plot_sanity": _sanity,
    "plot_embedding_maps": _embedding_categories,
    "plot_embedding_maps_numeric": _embedding_numeric,
    "plot_explained_variance": _explained_variance,
    "plot_decay_1d": _decay_1d,
    "plot_decay_2d": _decay_2d,
    "plot_similarity_grid": _similarity_grid,
    "plot_subspace_angles": _subspace_angles,
    "plot_probe_layers": _probe_layers,
    "plot_cka_heatmap": _cka_heatmap,
    "plot_similarity_vs_layer": _similarity_vs_layer,
    "plot_logit_lens": _logit_lens,
    "plot_head_ablation": _head_ablation,
}


def test_every_figure_function_is_covered():
    drawn = {name.removesuffix("_numeric") for name in CASES}
    assert drawn == {name for name in plots.__all__ if name.startswith("plot_")}


def _legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()]


@pytest.mark.parametrize("case", list(CASES))
def test_data_text_is_drawn_literally(case):
    fig, expected, legend = CASES[case]()
    with paper_style():
        png, svg = io.BytesIO(), io.StringIO()
        fig.savefig(png, format="png", dpi=40)  # raised ValueError (mathtext) before
        fig.savefig(svg, format="svg")
    assert png.getvalue().startswith(b"\x89PNG")
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    drawn = {t.get_text() for t in texts}
    for s in expected:
        assert s in drawn, (case, s)
    for t in texts:
        if t.get_text() in NASTY or any(s in t.get_text() for s in NASTY):
            assert not t.get_parse_math() and not t.get_usetex(), (case, t.get_text())
    # svg.fonttype "none" keeps text as text: the literal characters reach the file
    for s in expected:
        assert s in svg.getvalue(), (case, s)
    if legend is not None:
        assert _legend_texts(fig) == legend


def test_data_legend_keeps_underscore_labels_and_title():
    from matplotlib.lines import Line2D

    fig, ax = plots.new_figure()
    handles = [Line2D([], []) for _ in NASTY]
    leg = plots.data_legend(ax, handles, NASTY, title=NASTY[0])
    assert [t.get_text() for t in leg.get_texts()] == NASTY
    assert leg.get_title().get_text() == NASTY[0]
    assert not leg.get_title().get_parse_math()
    fig.savefig(io.BytesIO(), format="png", dpi=30)
    # matplotlib's own legend drops the '_hidden' label
    fig2, ax2 = plots.new_figure()
    for s in NASTY:
        ax2.plot([0, 1], [0, 1], label=s)
    assert "_hidden" not in [t.get_text() for t in ax2.legend().get_texts()]


# ------------------------------------------------------------------ the demo analyses end to end
IDS = ["IMG_01", "img_01", "../../x", "a/b", *NASTY]  # "IMG_01" and "img_01": distinct ids
STUDIES = """
title = "data text"
seed = 0
store = "{store}"

[model]
spec = "demo"

[data]
source = "MANIFEST"
options = {{ id_column = "id" }}
selection = "first"  # rollout's 8 images are the first 8 ids, IDS among them

[capture]
kinds = ["cls", "patch"]
pooled = "mean"
attention = true

[analyses.embedding_map]
layers = [4]
methods = ["pca"]
color = "label"

[analyses.layer_probes]
target = '$\\undefinedmacro$'
kinds = ["cls"]
cv = 3
solver = "ridge"
random_init = false

[analyses.cka]
kinds = ["cls"]
k = 3
random_init = false

[analyses.pe_similarity]
metrics = ["cosine"]

[analyses.pe_decay]
n_positions = 16
positions = [0, 4]

[analyses.pe_subspace]
k = 4
n_null = 10
max_images = 16

[analyses.position_probes]
max_images = 8
patches_per_image = 8
cv = 3
random_init = false

[analyses.attention_maps]
images = ["IMG_01", "img_01", "../../x", "a/b"]

[analyses.attention_distance]
max_images = 8

[analyses.rollout]
n_images = 8

[analyses.attribution]
n_images = 4
methods = ["rollout", "occlusion"]
n_random = 1
step = 8
sanity_images = 2
"""


@pytest.fixture(scope="module")
def data_text_run(tmp_path_factory, run_spec_text):
    """The demo analyses on 24 shapes images listed in a manifest whose ids and labels are
    strings from :data:`IDS` / :data:`NASTY`; a second label column is named
    ``$\\undefinedmacro$``."""
    from probing import ShapesSource, demo

    if not demo.WEIGHTS.exists():
        pytest.skip("the demo weights are not built yet")
    tmp = tmp_path_factory.mktemp("data_text")
    source = ShapesSource(n=24, seed=0)
    (tmp / "images").mkdir()
    shapes = source.labels()["label"].astype(str)
    names = {s: NASTY[i % len(NASTY)] for i, s in enumerate(sorted(shapes.unique()))}
    ids = IDS + [f"IMG_{i:03d}" for i in range(len(source) - len(IDS))]
    for i in range(len(source)):
        source.image(i).save(tmp / "images" / f"{i}.png")
    pd.DataFrame({"path": [f"images/{i}.png" for i in range(len(source))], "id": ids,
                  "label": shapes.map(names),
                  "$\\undefinedmacro$": [NASTY[(i + 1) % 4] for i in range(len(source))]}
                 ).to_csv(tmp / "manifest.csv", index=False)
    text = STUDIES.replace("MANIFEST", (tmp / "manifest.csv").as_posix())
    return run_spec_text(tmp, text, "report")


def test_demo_analyses_take_any_id_and_label(data_text_run):
    result, numbers = data_text_run
    report = result.report_dir
    assert (report / "index.html").is_file()
    figures = (report / "figures").resolve()
    # every file the report wrote lies inside its own folder; figures only in figures/
    for path in report.rglob("*"):
        assert path.resolve().is_relative_to(report.resolve()), path
    for ext in ("png", "svg"):
        assert list(figures.glob(f"*.{ext}"))
        for path in figures.glob(f"*.{ext}"):
            assert path.resolve().parent == figures
    assert not (report.parent / "x.png").exists() and not (report / "a").exists()
    stems = {p.stem for p in figures.glob("*.png")}
    # one attention-map figure per distinct id (IMG_01 and img_01 do not collide)
    from probing.sections import slug

    shown = {s for s in stems if s.startswith("attention_maps_image")}
    assert shown == {f"attention_maps_image{slug(i)}" for i in IDS[:4]}
    assert f"layer_probes_{slug(chr(36) + chr(92) + 'undefinedmacro' + chr(36))}" in stems
    for name in ("rollout_maps", "attribution_maps", "embedding_map_overview", "cka_heatmap_cls",
                 "pe_similarity_cosine", "position_probes_r2", "attention_distance"):
        assert name in stems, name
    # the literal label text reaches the vector figure (text kept as text)
    svg = (figures / "embedding_map_overview.svg").read_text()
    for label in NASTY:
        assert label in svg, label
    # 8 images make two pages of rollout maps, each with the table of its own maps
    pages = sorted((report / "tables").glob("rollout_maps*.csv"))
    assert [p.stem for p in pages] == ["rollout_maps", "rollout_maps_page2"]
    maps = pd.concat([pd.read_csv(p, keep_default_na=False) for p in pages])
    assert set(IDS) <= set(maps["image_id"].astype(str))
