"""`probing list` reads analysis metadata from the files' source: the same names, titles and
descriptions as importing them, without importing them."""

from __future__ import annotations

import sys

from probing.run.registry import catalog, discover

GOOD = '''"""A study. Second line."""
import not_installed_anywhere  # never imported by the catalog
TITLE = "A title"
def run(ctx, k: int = 1):
    return None
'''

COMPUTED = '''"""Computed metadata."""
DESCRIPTION = "made " + "at import"
def run(ctx, k: int = 1):
    return None
'''

BOUND = '''"""Run bound by assignment."""
def _impl(ctx, k: int = 1):
    return None
run = _impl
'''


def test_catalog_matches_discover_for_the_installed_analyses():
    listed, found = catalog(), discover()
    assert sorted(listed) == sorted(found)
    for name, mod in found.items():
        assert (listed[name].title, listed[name].description, listed[name].path) == \
            (mod.title, mod.description, mod.path), name


def test_catalog_reads_literals_and_imports_only_when_it_must(tmp_path, monkeypatch):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "computed.py").write_text(COMPUTED)
    (tmp_path / "bound.py").write_text(BOUND)
    (tmp_path / "helper.py").write_text("X = 1\n")
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(tmp_path))
    listed = catalog()
    assert "not_installed_anywhere" not in sys.modules
    assert (listed["good"].title, listed["good"].description) == \
        ("A title", "A study. Second line.")
    assert listed["computed"].description == "made at import"  # imported: not a literal
    assert listed["bound"].title == "Bound" and "helper" not in listed
