"""The model and data card: accuracy against an independent forward pass, the mapping rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from timm.data import create_transform

from probing import extract, load_model
from probing.card import model_card
from probing.data import ArraySource, ShapesSource
from probing.targets import label_map


def _independent(loaded, source, truth: np.ndarray) -> tuple[float, float]:
    """top-1 and top-5 of ``model(x)`` with timm's own eval transform, image by image."""
    cfg = loaded.data_config
    tf = create_transform(input_size=cfg["input_size"], interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"],
                          crop_mode=cfg.get("crop_mode", "center"), is_training=False)
    mode = "L" if cfg["input_size"][0] == 1 else "RGB"
    x = torch.stack([tf(source.image(i).convert(mode)) for i in range(len(source))])
    with torch.no_grad():
        logits = loaded.model.eval()(x)
    top1 = (logits.argmax(1).numpy() == truth).mean()
    top5 = (logits.topk(min(5, logits.shape[1]), 1).indices.numpy() == truth[:, None]).any(1)
    return float(top1), float(top5.mean())


def test_card_top1_equals_model_argmax_on_demo_shapes(tmp_path, demo_model):
    # harder shapes than the demo was trained on, so the accuracy is neither 0 nor 1
    source = ShapesSource(n=48, seed=3, backgrounds=("noise",), rotation=True)
    store = extract(demo_model, source, store=tmp_path / "s", kinds=["cls"], layers=[4])
    card = model_card(demo_model, source, store, batch_size=16, progress=False)
    top1, _ = _independent(demo_model, source, source.labels()["shape_id"].to_numpy())
    assert 0.0 < top1 < 1.0
    assert card.numbers["top1"] == pytest.approx(top1, abs=1e-12)
    assert card.numbers["n_scored"] == 48 and "top5" not in card.numbers  # only 4 classes
    assert "class names" in card.text and "bilinear" in card.text
    classes = next(t.frame for t in card.tables if t.name == "card_classes")
    assert classes["n_images"].sum() == 48
    assert set(classes["class"]) == set(source.labels()["label"])


def test_card_top5_with_integer_labels_on_a_ten_class_head(tmp_path):
    torch.manual_seed(0)
    loaded = load_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4,
                        depth=1, embed_dim=32, num_heads=2, num_classes=10)
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    source = ArraySource(rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8),
                         pd.DataFrame({"label": labels}))
    store = extract(loaded, source, store=tmp_path / "s", kinds=["cls"], layers=[1])
    card = model_card(loaded, source, store, progress=False)
    top1, top5 = _independent(loaded, source, labels)
    assert card.numbers["top1"] == pytest.approx(top1, abs=1e-12)
    assert card.numbers["top5"] == pytest.approx(top5, abs=1e-12)
    assert top5 > top1 and "integer class index" in card.text


def test_labels_that_do_not_map_say_why():
    def rule(values, n, names=()):
        return label_map(pd.DataFrame({"label": values}), "label", n, names)

    assert rule([0, 3, 1], 4).rule == "integer class index"
    out = rule([0, 12], 4)
    assert not out.maps and "outside 0..3" in out.rule
    out = rule(["cat", "dog"], 4)
    assert not out.maps and "class names are unknown" in out.rule
    named = rule(["b", None, "a"], 2, [["a", "b"]])
    assert named.target.tolist() == [1, -1, 0]
    assert not rule([0, 1], 0).maps
