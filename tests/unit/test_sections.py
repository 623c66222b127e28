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
