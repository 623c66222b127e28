"""Several models in one spec: [[model]] parsing, one store per model, comparison analyses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from probing.errors import ConfigError
from probing.run.runner import run_spec
from probing.run.spec import dump_toml, parse_spec, spec_models
from probing.similarity import linear_cka
from probing.store import EmbeddingStore

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib

ANALYSES = {"cka": {}}
# the demo architecture built by timm with fresh weights: a second model as small as the demo
SCRATCH = ('spec = "vit_tiny_patch16_224"\npretrained = false\noptions = { img_size = 32, '
           'patch_size = 4, num_classes = 4, embed_dim = 64, depth = 4, num_heads = 4 }\n')


# ----------------------------------------------------------------------------- spec
def test_model_entries_are_named_and_the_first_is_primary():
    spec = parse_spec({"model": [{"spec": "demo"}, {"spec": "vit_tiny_patch16_224",
                                                    "pretrained": False},
                                 {"spec": "ckpt/run3.safetensors", "name": "run 3"}],
                       "analyses": ANALYSES})
    assert [m.name for m in spec.models] == ["demo", "vit_tiny_patch16_224-random-init",
                                             "run 3"]
    assert spec.model == spec.models[0]
    # the resolved spec written back is a [[model]] array that reads as the same models
    again = parse_spec(tomllib.loads(dump_toml(spec)))
    assert again.models == spec.models


def test_single_model_table_still_means_one_model():
    spec = parse_spec({"model": {"spec": "demo", "device": "cpu"}, "analyses": ANALYSES})
    assert len(spec.models) == 1 and spec.model.spec == "demo" and spec.model.name == "demo"
    assert "[model]" in dump_toml(spec) and "[[model]]" not in dump_toml(spec)
    assert "name =" not in dump_toml(spec)  # the derived name is not written: same run key
    assert spec_models(parse_spec({"analyses": ANALYSES}))[0].name == "demo"


@pytest.mark.parametrize("models, key", [
    ([{"spec": "demo"}, {"spec": "demo"}], "model[1].name"),
    ([{"spec": "demo", "name": "a"}, {"spec": "x.pt", "name": "a"}], "model[1].name"),
    ([{"spec": "demo", "nme": "a"}], "model[0].nme"),
    ([{"spec": "demo"}, {"spec": 3}], "model[1].spec"),
    ([{"spec": "demo", "name": ""}], "model[0].name"),
    ([], "model"),
])
def test_bad_model_entries_name_the_key(models, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_spec({"model": models, "analyses": ANALYSES})


# ----------------------------------------------------------------------------- runs
DATA = '[data]\nsource = "shapes"\nn = 16\n'
OWN_PROBES = ('[analyses.layer_probes]\nkinds = ["cls"]\ncv = 2\nrandom_init = false\n'
              'raw_pixels = false\n')
SPEC = ("""
title = "three models"
store = "{store}"

[[model]]
name = "demo"
spec = "demo"

[[model]]
name = "demo again"
spec = "demo"

[[model]]
name = "scratch"
""" + SCRATCH + DATA + """
[analyses.compare_cka]
kinds = ["cls", "pooled"]

[analyses.compare_probes]
cv = 2

[analyses.compare_attention_distance]
max_images = 6
n_boot = 10

""" + OWN_PROBES)


def _write(tmp, name: str, text: str):
    path = tmp / f"{name}.toml"
    path.write_text(text.replace("{store}", (tmp / "stores").as_posix()))
    return path


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    result = run_spec(_write(tmp, "three", SPEC), out=tmp / "report", quiet=True)
    return tmp, result


def _table(result, name: str) -> pd.DataFrame:
    return pd.read_csv(result.report_dir / "tables" / f"{name}.csv")


def test_a_run_extracts_one_store_per_model_and_writes_three_sections(three):
    tmp, result = three
    numbers = json.loads((result.report_dir / "results.json").read_text())
    assert {"compare_cka", "compare_probes", "compare_attention_distance"} <= set(numbers)
    models = json.loads((result.report_dir / "provenance.json").read_text())["models"]
    assert list(models) == ["demo", "demo again", "scratch"]
    # the same model twice shares its store; the other model has its own
    assert models["demo"]["store"] == models["demo again"]["store"] == str(result.store.path)
    assert models["scratch"]["store"] != models["demo"]["store"]
    distance = _table(result, "compare_attention_distance_heads")
    assert set(distance["model"]) == set(models) and (distance["n_images"] == 6).all()
    # the single-model analyses ran on the primary model
    assert "layer_probes" in numbers
    again = run_spec(tmp / "three.toml", out=tmp / "report", quiet=True)
    assert again.reused_report  # every store complete and unchanged: nothing recomputed


def test_cross_model_cka_is_one_on_the_diagonal_and_matches_linear_cka(three):
    _, result = three
    cka = _table(result, "compare_cka")
    same = cka[(cka["model_a"] == "demo") & (cka["model_b"] == "demo again")
               & (cka["kind"] == "pooled") & (cka["layer_a"] == cka["layer_b"])]
    assert len(same) == 5 and np.allclose(same["value"], 1.0)
    stores = json.loads((result.report_dir / "provenance.json").read_text())["models"]
    a = EmbeddingStore(stores["demo"]["store"]).read(kind="pooled", layers=[3])
    b = EmbeddingStore(stores["scratch"]["store"]).read(kind="pooled", layers=[1])
    a, b = a.sort_values("image_id"), b.sort_values("image_id")
    assert a["image_id"].tolist() == b["image_id"].tolist()
    want = linear_cka(np.stack(a["emb"].to_numpy()), np.stack(b["emb"].to_numpy()))
    got = cka[(cka["model_a"] == "demo") & (cka["model_b"] == "scratch")
              & (cka["kind"] == "pooled") & (cka["layer_a"] == 3) & (cka["layer_b"] == 1)]
    assert got["value"].item() == pytest.approx(want, rel=1e-5)
    assert 0 < want < 0.99  # another pair: not the trivial identity


def test_side_by_side_probes_equal_each_models_own_layer_probes(three):
    tmp, result = three
    side = _table(result, "compare_probes_scores")
    side = side[side["probe"] == "task"]
    cols = ["layer", "value", "ci_low", "ci_high"]
    own = _table(result, "layer_probes")
    own = own[(own["probe"] == "task") & (own["kind"] == "cls")][cols].reset_index(drop=True)
    demo = side[side["model"] == "demo"][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(demo, own)
    # the scratch model in a single-model spec of its own (its store is reused)
    one = _write(tmp, "scratch", 'store = "{store}"\n[model]\n' + SCRATCH + DATA + OWN_PROBES)
    single = run_spec(one, out=tmp / "scratch", quiet=True)
    assert single.reused_store
    own = _table(single, "layer_probes")
    own = own[(own["probe"] == "task") & (own["kind"] == "cls")][cols].reset_index(drop=True)
    scratch = side[side["model"] == "scratch"][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(scratch, own)
    assert not np.allclose(scratch["value"], demo["value"])  # two models, two curves


def test_one_model_compares_with_its_random_init_copy_or_refuses(three):
    tmp, _ = three
    base = 'store = "{store}"\n[model]\nspec = "demo"\n' + DATA
    spec = _write(tmp, "one", base + '[analyses.compare_cka]\nkinds = ["pooled"]\n')
    result = run_spec(spec, out=tmp / "one", quiet=True)
    cka = _table(result, "compare_cka")
    assert set(cka["model_b"]) == {"random init"} and set(cka["model_a"]) == {"demo"}
    spec = _write(tmp, "one", base + "[analyses.compare_probes]\nrandom_init = false\n")
    with pytest.raises(ConfigError, match="random_init = true"):
        run_spec(spec, out=tmp / "one_refused", quiet=True)


def test_the_example_spec_compares_two_models():
    from probing.run.registry import PACKAGE_ANALYSES
    from probing.run.spec import load_spec

    spec = load_spec(PACKAGE_ANALYSES / "compare_demo.toml")
    assert [m.name for m in spec.models] == ["trained", "random init"]
    assert {"compare_cka", "compare_probes", "compare_attention_distance"} <= set(spec.analyses)
