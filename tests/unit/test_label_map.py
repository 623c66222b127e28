"""One rule maps a label column onto the head's classes (probing.targets.label_map); the card,
the figures' predicted-class names and the logit lens use it alike. And the spec path's
attention keeps the mask of real query rows (CaiT class attention: distance NaN, not 0)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from probing import extract, load_model
from probing.card import model_card
from probing.data import ArraySource, ShapesSource
from probing.errors import ConfigError
from probing.run.context import RunContext, run_analysis
from probing.run.registry import get_analysis
from probing.shapes import SHAPES
from probing.targets import label_classes, label_map


def test_rules_apply_in_order_and_say_which():
    # every rule could apply to "label"/"code" below; the first that does wins
    names = [["a", "b", "c", "d"]]
    ints = pd.DataFrame({"image_id": [0, 1, 2], "label": [3, 0, 1], "code": [0, 1, 2]})
    one = label_map(ints, "label", 4, names)
    assert one.rule == "integer class index" and one.target.tolist() == [3, 0, 1]
    # the class names say b=1, a=0; the code column would say the opposite
    named = pd.DataFrame({"label": ["b", None, "a"], "code": [0, 5, 1]})
    two = label_map(named, "label", 4, names)
    assert two.rule == "class names" and two.target.tolist() == [1, -1, 0]
    assert two.names == dict(enumerate(names[0]))
    shapes = pd.DataFrame({"image_id": [10, 11, 12, 13], "label": ["x", "o", "x", "s"],
                           "n": [1, 1, 2, 1], "shape_id": [3, 0, 3, 1]})
    three = label_map(shapes, "label", 4, names)  # not names of the model: rule 3
    assert three.rule == "the class index of column 'shape_id'"
    assert three.target.tolist() == [3, 0, 3, 1] and three.names == {3: "x", 0: "o", 1: "s"}
    none = label_map(shapes.drop(columns="shape_id"), "label", 4)
    assert not none.maps and none.names == {} and none.target is None
    assert "'x'" in none.rule and "class names are unknown" in none.rule
    assert "no integer column in 0..3 corresponds one to one" in none.rule


def test_integer_rule_reads_digit_strings_and_integral_floats_not_booleans():
    def rule(values):
        return label_map(pd.DataFrame({"label": values}), "label", 4).rule

    assert rule(["0", "3"]) == rule([1.0, 2.0, None]) == "integer class index"
    assert not label_map(pd.DataFrame({"label": [True, False]}), "label", 4).maps
    assert not label_map(pd.DataFrame({"label": [0.5, 1.0]}), "label", 4).maps


def test_label_classes_names_the_option_and_the_reason():
    frame = pd.DataFrame({"image_id": [5, 6], "label": ["cat", "dog"]})
    with pytest.raises(ConfigError, match=r"logit_lens.target='label' .*class names are unknown"):
        label_classes(frame, "label", 4, "logit_lens.target")
    y = label_classes(frame, "label", 4, "o", [["dog", "cat", "x", "y"]], image_ids=[6, 5])
    assert y.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="no label for 1"):
        label_classes(frame.assign(label=["cat", None]), "label", 4, "o",
                      [["dog", "cat", "x", "y"]])


def test_card_shown_labels_and_logit_lens_agree_on_the_demo(tmp_path, demo_model):
    source = ShapesSource(n=24, seed=3, backgrounds=("noise",), rotation=True)
    store = extract(demo_model, source, store=tmp_path / "s", kinds=["cls"])
    ctx = RunContext(model=demo_model, source=source, store=store, quiet=True)
    card = model_card(demo_model, source, store, progress=False)
    assert "read as class names" in card.text
    images, ids = ctx.images()
    with torch.no_grad():
        top = demo_model.model.eval()(images).argmax(1).numpy()
    truth, pred = ctx.shown_labels(ids, images)
    assert pred == [SHAPES[k] for k in top]  # named by the model's class names
    shape_id = source.labels().set_index("image_id")["shape_id"].reindex(ids).to_numpy()
    assert card.numbers["top1"] == pytest.approx(float((top == shape_id).mean()))
    assert card.numbers["top1"] == pytest.approx(np.mean(np.array(truth) == np.array(pred)))
    lens = get_analysis("logit_lens").run
    by_label = run_analysis(lens, ctx, {"target": "label", "probe": False})
    by_code = run_analysis(lens, ctx, {"target": "shape_id", "probe": False})
    last = f"layer{demo_model.depth}_lens_accuracy"
    assert by_label.numbers == by_code.numbers
    assert by_label.numbers[last] == pytest.approx(card.numbers["top1"])


def test_spec_path_attention_distance_of_cait_class_blocks_is_nan_as_in_memory(tmp_path):
    from probing.attention import mean_attention_distance
    from probing.attention_hooks import capture_attention

    torch.manual_seed(0)
    loaded = load_model("cait_xxs24_224", pretrained=False, img_size=32, depth=2,
                        embed_dim=32, num_heads=2, num_classes=5)
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    store = extract(loaded, source, store=tmp_path / "s", kinds=["patch"], layers=[1],
                    attention=True)
    ctx = RunContext(model=loaded, source=source, store=store, quiet=True)
    section = run_analysis(get_analysis("attention_distance").run, ctx,
                           {"max_images": 4, "n_boot": 5})
    table = section.tables[0].frame
    dense = ctx.dense_attention(max_images=4)
    class_blocks = [k for i, k in enumerate(dense.layers) if dense.present[i].sum() == 1]
    assert class_blocks == [3, 4]  # CaiT's two class-attention blocks after 2 patch blocks
    images, _ = ctx.images(image_ids=dense.image_ids)
    with torch.no_grad(), capture_attention(loaded.model) as memory:
        loaded.model.eval()(images)
    for r, suffix in ((False, "_raw"), (True, "_renorm")):
        want = mean_attention_distance(dict(memory), ctx.layout, renormalize=r)
        got = table[["layer", "head", f"distance_px{suffix}"]]
        merged = want.merge(got, on=["layer", "head"])
        assert len(merged) == len(want) == len(table)
        np.testing.assert_allclose(merged[f"distance_px{suffix}"], merged["distance_px"],
                                   rtol=1e-4)  # NaN where memory has NaN
        is_class = merged["layer"].isin(class_blocks)
        assert merged.loc[is_class, "distance_px"].isna().all()
        assert merged.loc[~is_class, "distance_px"].notna().all()
    assert "layer3_mean_px_raw" not in section.numbers and "layer2_mean_px_raw" in section.numbers
