"""[data] where end to end, the model card as the first section, images = [...] in figures."""

from __future__ import annotations

import pytest

from probing.data import ShapesSource
from probing.errors import ConfigError
from probing.run.runner import run_spec

SPEC = """
title = "where"
seed = 0
store = "{{store}}"

[model]
spec = "demo"

[data]
source = "shapes"
options = {{{{ n = 40 }}}}
where = {where}

[capture]
kinds = ["cls"]
layers = [4]

[analyses.attention_maps]
layers = [4]
images = {images}
"""


def test_where_keeps_only_matching_images_and_figures_show_the_listed_ones(tmp_path,
                                                                          run_spec_text):
    labels = ShapesSource(n=40).labels()
    squares = labels.loc[labels["shape_id"] == 1, "image_id"].tolist()
    shown = [squares[-1], squares[0]]
    result, numbers = run_spec_text(
        tmp_path, SPEC.format(where='"shape_id == 1"', images=shown), "where")
    stored = result.store.labels()
    assert stored["image_id"].tolist() == squares
    assert set(stored["label"]) == {"square"}
    assert numbers["card"]["n_images"] == len(squares)
    assert numbers["card"]["top1"] == 1.0  # the demo model on its own kind of shapes
    html = (result.report_dir / "index.html").read_text()
    # the card's section comes before every analysis's (the findings above may link to them)
    assert html.index("<h2>Model and data</h2>") < html.index("<h2>Attention maps</h2>")
    assert "shape_id == 1" in html  # the card says what was left out
    figures = sorted(p.name for p in (result.report_dir / "figures").glob(
        "attention_maps_image*.png"))
    assert figures == sorted(f"attention_maps_image{i}.png" for i in shown)
    assert f"{shown[0]} (square), {shown[1]} (square)" in html  # in the listed order


def test_bad_where_is_a_config_error_naming_the_query(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(where='"colour = = 2"', images="[0]").format(
        store=(tmp_path / "stores").as_posix()))
    with pytest.raises(ConfigError, match="colour = = 2"):
        run_spec(spec, out=tmp_path / "bad", quiet=True)
