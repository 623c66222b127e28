"""Image selection: stratified, shuffled, first, explicit id lists; the [data] where filter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probing.data import ArraySource
from probing.errors import ConfigError
from probing.imageselect import describe_images, pick_images, select_images

# a class-sorted folder: 30 images of class 0, then 30 of 1, then 30 of 2
IDS = np.arange(90)
SORTED = np.repeat(["a", "b", "c"], 30)


def test_stratified_covers_every_class_and_balances():
    for n in (3, 7, 20):
        chosen = select_images(IDS, SORTED, n, seed=0)
        counts = pd.Series(SORTED[chosen]).value_counts()
        assert len(chosen) == n and len(set(chosen)) == n
        assert set(counts.index) == {"a", "b", "c"}
        assert counts.max() - counts.min() <= 1
        # round-robin order: every prefix of length >= 3 covers all classes
        assert set(SORTED[chosen[:3]]) == {"a", "b", "c"}
    # the old default, the first n, is one class only
    assert set(SORTED[select_images(IDS, SORTED, 20, how="first")]) == {"a"}


def test_stratified_uneven_classes_take_all_of_the_small_one():
    labels = np.array(["x"] * 2 + ["y"] * 40)
    chosen = select_images(np.arange(42), labels, 10, seed=3)
    assert (labels[chosen] == "x").sum() == 2 and len(chosen) == 10


def test_selection_is_deterministic_per_seed_and_differs_across_seeds():
    for how in ("stratified", "shuffled"):
        a = select_images(IDS, SORTED, 12, seed=5, how=how)
        assert np.array_equal(a, select_images(IDS, SORTED, 12, seed=5, how=how))
        assert not np.array_equal(a, select_images(IDS, SORTED, 12, seed=6, how=how))


def test_no_labels_is_a_seeded_shuffle_and_n_none_is_all():
    a = select_images(IDS, None, 10, seed=1)
    assert np.array_equal(a, select_images(IDS, None, 10, seed=1, how="shuffled"))
    assert not np.array_equal(a, IDS[:10])
    assert sorted(select_images(IDS, SORTED, None, seed=1)) == list(IDS)


def test_bad_selection_arguments():
    with pytest.raises(ConfigError, match="how"):
        select_images(IDS, SORTED, 4, how="random")
    with pytest.raises(ConfigError, match="n"):
        select_images(IDS, SORTED, 0)


def test_pick_images_keeps_the_given_order_and_names_missing_ids():
    assert pick_images(IDS, [42, 3, "7"]).tolist() == [42, 3, 7]
    with pytest.raises(ConfigError, match="500"):
        pick_images(IDS, [3, 500])
    with pytest.raises(ConfigError, match="once"):
        pick_images(IDS, [3, 3])
    labels = pd.DataFrame({"image_id": IDS, "label": SORTED})
    assert describe_images([31, 0], labels, "label") == "31 (b), 0 (a)"


def _source() -> ArraySource:
    images = np.zeros((12, 8, 8), dtype=np.uint8)
    return ArraySource(images, pd.DataFrame({"label": np.arange(12) % 3,
                                             "split": ["test"] * 4 + ["train"] * 8}))


def test_where_query_and_id_list():
    src = _source()
    kept = src.where("label == 1 and split == 'train'")
    assert kept.labels()["image_id"].tolist() == [4, 7, 10]
    assert kept.describe()["where"] == "label == 1 and split == 'train'"
    assert kept.fingerprint() != src.fingerprint()
    assert src.where([9, "2"]).labels()["image_id"].tolist() == [2, 9]  # source order
    assert src.where(None) is src


@pytest.mark.parametrize("where, match", [
    ("label ==", "label =="),          # not an expression
    ("colour == 1", "colour == 1"),    # unknown column
    ("label", "true/false"),           # not a condition
    ("label == 7", "keeps none"),
    ([3, 99], "99"),
])
def test_where_errors_name_the_expression(where, match):
    with pytest.raises(ConfigError, match=match):
        _source().where(where)


def test_run_context_selects_across_a_class_sorted_source(tmp_path, demo_model):
    from probing import extract
    from probing.run.context import RunContext

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 6)  # class-sorted, as an image folder is
    source = ArraySource(rng.integers(0, 256, (18, 32, 32, 3), dtype=np.uint8),
                         pd.DataFrame({"label": labels}))
    store = extract(demo_model, source, store=tmp_path / "s", kinds=["cls"], layers=[1],
                    attention=True)
    ctx = RunContext(model=demo_model, source=source, store=store, seed=4)
    attn, ids, _ = ctx.attention(max_images=3)
    assert sorted(labels[ids]) == [0, 1, 2]  # the old first three were all class 0
    images, image_ids = ctx.images(3)
    assert np.array_equal(image_ids, ids) and len(images) == 3
    attn, ids, _ = ctx.attention(image_ids=ctx.select_images(images=[17, 2, 9]))
    assert ids.tolist() == [17, 2, 9]
    assert ctx.images(image_ids=ids)[1].tolist() == [17, 2, 9]
    first = RunContext(model=demo_model, source=source, store=store, selection="first")
    assert first.select_images(3).tolist() == [0, 1, 2]


def test_comparisons_choose_their_images_as_every_n_images_parameter(tmp_path):
    """``common_image_ids(models, n)`` is the run's stratified selection among the images every
    model holds (not the first n of a class-sorted source)."""
    from probing import extract, load_model
    from probing.data import open_source
    from probing.run.compare import common_image_ids
    from probing.run.context import RunContext

    model, source = load_model("demo"), open_source("shapes", n=40)
    store = extract(model, source, store=tmp_path / "s", kinds=("cls",), progress=False)
    ctx = RunContext(model=model, source=source, store=store, seed=0, batch_size=16, quiet=True)
    labels = ctx.labels().set_index("image_id")["label"]
    ids = common_image_ids({"a": ctx, "b": ctx}, 8)
    assert len(ids) == 8 and labels.loc[ids].value_counts().tolist() == [2, 2, 2, 2]
    assert np.array_equal(ids, ctx.select_images(8))  # the same images as the other analyses
    among = ctx.labels()["image_id"].to_numpy()[:20]
    assert set(ctx.select_images(6, among=among)) <= set(among)
