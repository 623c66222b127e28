"""``[model] preprocessing`` in a spec and ``--preprocessing`` on the command line: the store
is extracted with it, and a store made with other preprocessing is never reused."""

from __future__ import annotations

from click.testing import CliRunner

from probing.cli import main

# run_spec_text fills {store}; the spec's own braces are doubled
SPEC = '''store = "{store}"
[model]
spec = "demo"
PRE
[data]
source = "shapes:n=8"
[analyses.pe_similarity]
'''

TWO = '''store = "STORE"
[[model]]
spec = "demo"
name = "plain"
[[model]]
spec = "demo"
name = "custom"
preprocessing = { mean = [0.2, 0.4, 0.6], std = 0.25, interpolation = "bicubic" }
[data]
source = "shapes:n=8"
[analyses.pe_similarity]
'''

CUSTOM = "preprocessing = {{ mean = [0.1307], std = [0.3081] }}"


def test_a_spec_s_preprocessing_is_the_store_s_and_changes_its_key(tmp_path, run_spec_text):
    plain, _ = run_spec_text(tmp_path, SPEC.replace("PRE", ""), "plain")
    custom, _ = run_spec_text(tmp_path, SPEC.replace("PRE", CUSTOM), "custom")
    got = custom.store.manifest["preprocessing"]
    assert got["mean"] == [0.1307] * 3 and got["std"] == [0.3081] * 3
    assert plain.store.manifest["preprocessing"]["mean"] == [0.5] * 3
    assert custom.store.path != plain.store.path and not custom.reused_store
    again, _ = run_spec_text(tmp_path, SPEC.replace("PRE", CUSTOM), "again")
    assert again.reused_store and again.store.path == custom.store.path


def test_model_entries_each_have_their_own_preprocessing(tmp_path):
    from probing.run.runner import run_spec
    from probing.store import EmbeddingStore

    spec = tmp_path / "two.toml"
    spec.write_text(TWO.replace("STORE", (tmp_path / "stores").as_posix()))
    run_spec(spec, out=tmp_path / "r", quiet=True)
    stores = [EmbeddingStore(p) for p in sorted((tmp_path / "stores").iterdir())]
    means = sorted(tuple(s.manifest["preprocessing"]["mean"]) for s in stores)
    assert means == [(0.2, 0.4, 0.6), (0.5, 0.5, 0.5)]


def test_the_cli_takes_preprocessing_and_refuses_an_unknown_key():
    runner = CliRunner()
    res = runner.invoke(main, ["info", "demo", "--preprocessing", "mean=0.25",
                               "--preprocessing", "std=0.1,0.2,0.3"])
    assert res.exit_code == 0, res.output
    assert "mean (0.25, 0.25, 0.25)" in res.output and "std (0.1, 0.2, 0.3)" in res.output
    res = runner.invoke(main, ["info", "demo", "--preprocessing", "size=64"])
    assert res.exit_code == 2 and "preprocessing key 'size' is not one that can be set" in \
        res.output
