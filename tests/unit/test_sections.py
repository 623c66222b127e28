"""probing.sections.slug: any value gives a file-safe name, distinct values distinct names."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure as MplFigure

from probing.errors import SchemaError
from probing.sections import Figure, Table, slug

TRICKY = ["IMG_01", "img_01", "img-01", "../../x", "x", "a/b", "a\\b", "a b", "a|b", "a-b",
          "a--b", "_hidden", "hidden", "$\\frac{a}$", "$\\undefinedmacro$", "", ".", "..",
          "-", "Ä", "ä", "1.0", "1", "CON", "x" * 300, "x" * 301, "a\x00b", "日本"]


def test_short_slugs_are_kept():
    for value, expected in [(0, "0"), (17, "17"), ("label", "label"), ("a_b-c", "a_b-c")]:
        assert slug(value) == expected


def test_any_value_gives_a_file_safe_name_that_the_name_check_accepts():
    for value in TRICKY:
        name = slug(value)
        assert "/" not in name and "\\" not in name and "." not in name and len(name) <= 54
        Figure(f"fig_{name}", MplFigure(), "", pd.DataFrame())
        Table(name, pd.DataFrame())


def test_distinct_values_never_share_a_slug():
    names = [slug(v) for v in TRICKY]
    assert len(set(names)) == len(TRICKY)
    assert slug("IMG_01") == slug("IMG_01")  # deterministic
    assert slug("IMG_01").startswith("img_01--")
    # a plain slug that looks like a hashed one is hashed too, so it cannot collide with it
    assert slug(slug("IMG_01")) != slug("IMG_01")


def test_the_name_check_still_refuses_unsafe_names():
    with pytest.raises(SchemaError, match="slug"):
        Figure("attention_maps_imageIMG_01", MplFigure(), "", pd.DataFrame())
    with pytest.raises(SchemaError):
        Table("../x", pd.DataFrame())


# --- findings: sentences written from key numbers --------------------------------------------

from probing.findings import Finding, human_label  # noqa: E402
from probing.sections import Section  # noqa: E402


def test_a_finding_is_filled_from_the_key_numbers_and_follows_them():
    finding = Finding("Which layer?", "Best at layer {best_layer} ({best_acc:.1%}).")
    section = Section("Probes", numbers={"best_layer": 3.0, "best_acc": 0.8123},
                      findings=[finding])
    assert finding.keys() == ["best_layer", "best_acc"]
    assert section.sentences() == [("Which layer?", "Best at layer 3 (81.2%).")]
    section.numbers["best_acc"] = 0.5  # another result, another sentence
    assert section.sentences()[0][1] == "Best at layer 3 (50.0%)."


def test_a_finding_naming_no_key_number_or_a_bad_spec_is_refused():
    with pytest.raises(SchemaError, match="best_acc"):
        Finding("q", "{best_acc:.2f}").render({"acc": 1.0}, "Probes")
    with pytest.raises(SchemaError, match="format spec"):
        Finding("q", "{acc:.2q}").render({"acc": 1.0})
    with pytest.raises(SchemaError, match="key number"):
        Finding("q", "{} positional").render({"acc": 1.0})


def test_key_numbers_get_names_for_people():
    assert human_label("layer1_mean_px_raw") == "Layer 1 mean px (raw)"
    assert human_label("cka_cls_vs_random_init_last") == "CKA CLS vs random init last"
    assert human_label("n_images") == "Number of images"
    section = Section("x", numbers={"a_b": 1.0, "c": 2.0}, labels={"a_b": "the A of B"})
    assert section.label("a_b") == "the A of B" and section.label("c") == "C"


def _analysis_findings(name: str):
    from probing.run.registry import get_analysis

    return get_analysis(name).run.__globals__["_findings"]


LAYER_PROBES = {"cls_best_layer": 3.0, "cls_best_accuracy": 0.95, "cls_last_accuracy": 0.9,
                "cls_last_control_accuracy": 0.3, "cls_last_random_init_accuracy": 0.4,
                "cls_last_selectivity": 0.6}


def test_layer_probe_findings_quote_the_sections_numbers_and_change_with_them():
    make = _analysis_findings("layer_probes")
    section = Section("Probes", numbers=dict(LAYER_PROBES), findings=make(LAYER_PROBES, "label"))
    (q1, layers), (q2, probe) = section.sentences()
    assert "layer 3" in layers and "95.0%" in layers and "90.0%" in layers
    assert "30.0%" in probe and "40.0%" in probe and "trained features" in probe
    # the random-init model nearly as good as the trained one: the probe does the work
    numbers = {**LAYER_PROBES, "cls_last_random_init_accuracy": 0.88}
    changed = Section("Probes", numbers=numbers, findings=make(numbers, "label")).sentences()
    assert "88.0%" in changed[1][1] and "the probe itself" in changed[1][1]
    assert changed[1][1] != probe


def test_attribution_finding_names_the_most_faithful_method_or_says_none_is():
    make = _analysis_findings("attribution")
    numbers = {"rollout_deletion_auc": 0.2, "occlusion_deletion_auc": 0.25,
               "random_deletion_auc": 0.43, "sanity_flagged": 0.0}
    text = Section("A", numbers=numbers, findings=make(numbers)).sentences()[0][1]
    assert "rollout" in text and "0.20" in text and "0.43" in text and "beats random" in text
    worse = {**numbers, "rollout_deletion_auc": 0.5, "occlusion_deletion_auc": 0.6}
    text = Section("A", numbers=worse, findings=make(worse)).sentences()[0][1]
    assert "not faithful" in text and "0.50" in text
