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


def _sentence(name: str, numbers: dict) -> str:
    (_, text), = Section("S", numbers=numbers,
                         findings=_analysis_findings(name)(numbers)).sentences()
    return text


def test_embedding_map_finding_compares_the_last_mapped_layer_with_the_first():
    # layer 0 (the constant CLS) has no variance to split, so it has no key number
    numbers = {"cls_layer3_pc1_2_variance": 0.42, "cls_layer6_pc1_2_variance": 0.38,
               "pooled_layer0_pc1_2_variance": 0.7, "pooled_layer6_pc1_2_variance": 0.5}
    text = _sentence("embedding_map", numbers)
    assert "38% of the variance of CLS" in text and "layer 6" in text
    assert "42%" in text and "layer 3" in text and "less" in text
    assert "more" in _sentence("embedding_map", {**numbers, "cls_layer6_pc1_2_variance": 0.6})


def test_rollout_finding_quotes_the_agreement_and_reads_it():
    numbers = {"n_images": 4.0, "spearman_rollout_vs_gradient": 0.57}
    text = _sentence("rollout", numbers)
    assert "0.57" in text and "4 images" in text and "partly" in text
    low = _sentence("rollout", {**numbers, "spearman_rollout_vs_gradient": 0.1})
    assert "0.10" in low and "different patches" in low
    assert _analysis_findings("rollout")({"n_images": 4.0}) == []


def test_pe_decay_finding_follows_the_null_test():
    numbers = {"learned_decay_slope": -0.0048, "random_null_decay_slope": -0.0006,
               "learned_decay_null_p": 0.15}
    text = _sentence("pe_decay", numbers)
    assert "-0.0048" in text and "-0.0006" in text and "p = 0.150" in text
    assert "indistinguishable from a random table" in text
    learned = _sentence("pe_decay", {**numbers, "learned_decay_slope": -0.05,
                                     "learned_decay_null_p": 0.01})
    assert "-0.0500" in learned and "more than a random table" in learned
    assert "no learned" in _sentence("pe_decay", {"sincos_2d_decay_slope": -0.051})


def test_pe_subspace_finding_reads_the_angle_against_the_null():
    numbers = {"mean_angle_deg": 75.8, "mean_angle_deg_null": 72.1}
    text = _sentence("pe_subspace", numbers)
    assert "75.8" in text and "72.1" in text and "as apart as random" in text
    assert "own" in _sentence("pe_subspace", {**numbers, "mean_angle_deg": 85.0})
    assert "shares" in _sentence("pe_subspace", {**numbers, "mean_angle_deg": 40.0})


def test_logit_lens_finding_names_the_last_layer_and_where_the_answer_appears():
    numbers = {"layer0_lens_accuracy": 0.089, "layer2_lens_accuracy": 0.798,
               "layer3_lens_accuracy": 0.907, "layer6_lens_accuracy": 0.965, "n_images": 1000.0}
    text = _sentence("logit_lens", numbers)
    assert "layer 6" in text and "96.5%" in text and "layer 3" in text and "90.7%" in text
    late = _sentence("logit_lens", {**numbers, "layer3_lens_accuracy": 0.5})
    assert "layer 3" not in late and "layer 6" in late


def test_head_ablation_finding_names_the_costliest_head_and_reads_the_drop():
    numbers = {"intact_accuracy": 0.96, "intact_target_logit": 10.2, "mean_max_logit_drop": 0.70,
               "mean_max_logit_drop_block": 2.0, "mean_max_logit_drop_head": 1.0,
               "mean_max_accuracy_drop": 0.03, "zero_max_logit_drop": 0.64}
    text = _sentence("head_ablation", numbers)
    assert text.startswith("Mean-ablating head 1 of block 2") and "0.70" in text
    assert "10.20" in text and "3.0%" in text and "96.0%" in text and "no single head" in text
    big = _sentence("head_ablation", {**numbers, "mean_max_accuracy_drop": 0.4})
    assert "40.0%" in big and "some heads are essential" in big
    zero = {k: v for k, v in numbers.items() if not k.startswith("mean")}
    zero |= {"zero_max_logit_drop_block": 1.0, "zero_max_logit_drop_head": 0.0}
    assert _sentence("head_ablation", zero).startswith("Zero-ablating head 0 of block 1")
