"""Bad input, through the Python API and the CLI: a ProbingError subclass whose one-sentence
message names the input and the fix, exit status 2 with no traceback at the CLI, no partial output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

import probing
from probing import (
    AnalysisError,
    ConfigError,
    DataError,
    LayoutError,
    ModelError,
    ProbingError,
    SchemaError,
    StoreError,
)
from probing.cli import main
from probing.run.runner import run_spec
from probing.run.spec import load_spec

TINY = {"img_size": 32, "patch_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every bad file the cases need, made once."""
    tmp = tmp_path_factory.mktemp("bad")
    out: dict[str, Path] = {}
    torch.manual_seed(0)
    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    out["ckpt"] = tmp / "tiny.safetensors"
    save_file(state, str(out["ckpt"]))
    out["truncated"] = tmp / "trunc.safetensors"
    out["truncated"].write_bytes(out["ckpt"].read_bytes()[:5000])
    folder = tmp / "folder"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    (folder / "a" / "1.png").write_bytes(b"\x89PNG broken")
    out["corrupt_folder"] = folder
    out["empty_folder"] = tmp / "empty"
    (out["empty_folder"] / "cls").mkdir(parents=True)
    pd.DataFrame({"file": ["x.png"]}).to_csv(tmp / "nopath.csv", index=False)
    out["manifest_nopath"] = tmp / "nopath.csv"
    pd.DataFrame({"path": ["missing.png"]}).to_csv(tmp / "missing.csv", index=False)
    out["manifest_missing"] = tmp / "missing.csv"
    pd.DataFrame({"path": ["folder/b/0.png", "folder/b/1.png"], "id": [7, 7]}).to_csv(
        tmp / "dup.csv", index=False)
    out["manifest_dup"] = tmp / "dup.csv"
    out["a_file"] = tmp / "a_file.txt"
    out["a_file"].write_text("not a folder")
    out["not_toml"] = tmp / "bad.toml"
    out["not_toml"].write_text("[model\nspec = ")
    out["typo_spec"] = tmp / "typo.toml"
    out["typo_spec"].write_text('[model]\nspce = "demo"\n[analyses.embedding_map]\n')
    out["no_analyses"] = tmp / "none.toml"
    out["no_analyses"].write_text('[model]\nspec = "demo"\n')
    out["unknown_analysis"] = tmp / "unknown.toml"
    out["unknown_analysis"].write_text("[analyses.rolout]\n")
    out["wrong_type"] = tmp / "type.toml"
    out["wrong_type"].write_text('seed = "zero"\n[analyses.embedding_map]\n')
    out["bad_param"] = tmp / "param.toml"
    out["bad_param"].write_text(f'output = "{tmp / "rep-param"}"\n[analyses.embedding_map]\n'
                                "max_point = 3\n")
    out["tmp"] = tmp
    return out


def _spec_file(tmp: Path, name: str, output: str, store: str, extra: str = "") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'output = "{output}"\nstore = "{store}"\n[model]\nspec = "demo"\n'
                    f'[data]\nsource = "shapes"\nn = 8\n{extra}'
                    '[analyses.embedding_map]\nmethods = ["pca"]\n')
    return path


# (id, python callable building the error, CLI args or None, error class, message fragment)
def cases(f: dict[str, Path]):
    tmp = f["tmp"]
    ckpt, store = str(f["ckpt"]), str(tmp / "store-{id}")
    demo_extract = ["extract", "--model", "demo", "--data", "shapes:n=4", "--out", store]
    return [
        ("unknown_model", lambda: probing.load_model("vit_tiny_patch16_22"),
         ["info", "vit_tiny_patch16_22"], ModelError, "Did you mean"),
        ("non_vit", lambda: probing.load_model(timm.create_model("resnet18")),
         ["info", "resnet18", "--no-pretrained"], ModelError, "not a Vision Transformer"),
        ("checkpoint_keys_do_not_fit",
         lambda: probing.load_model(ckpt, arch="vit_small_patch16_224", img_size=32,
                                    patch_size=8, depth=2),
         ["info", ckpt, "--arch", "vit_small_patch16_224"], ModelError, "does not fit"),
        ("checkpoint_without_arch", lambda: probing.load_model(ckpt),
         ["info", ckpt], ModelError, "arch="),
        ("truncated_safetensors",
         lambda: probing.load_model(f["truncated"], arch="vit_tiny_patch16_224"),
         ["info", str(f["truncated"]), "--arch", "vit_tiny_patch16_224"], ModelError,
         "truncated or corrupt"),
        ("missing_checkpoint",
         lambda: probing.load_model(tmp / "nope.safetensors", arch="vit_tiny_patch16_224"),
         ["info", str(tmp / "nope.safetensors"), "--arch", "vit_tiny_patch16_224"],
         ModelError, "does not exist"),
        ("corrupt_image", lambda: probing.extract("demo", f["corrupt_folder"]),
         ["extract", "--model", "demo", "--data", str(f["corrupt_folder"]), "--out", store],
         DataError, "1.png"),
        ("empty_folder", lambda: probing.open_source(f["empty_folder"]),
         [*demo_extract[:4], str(f["empty_folder"]), *demo_extract[5:]], DataError,
         "holds no images"),
        ("manifest_missing_path_column", lambda: probing.open_source(f["manifest_nopath"]),
         [*demo_extract[:4], str(f["manifest_nopath"]), *demo_extract[5:]], DataError,
         "no 'path' column"),
        ("manifest_missing_files", lambda: probing.open_source(f["manifest_missing"]),
         [*demo_extract[:4], str(f["manifest_missing"]), *demo_extract[5:]], DataError,
         "missing file"),
        ("manifest_duplicate_ids",
         lambda: probing.ManifestSource(f["manifest_dup"], id_column="id"), None, DataError,
         "duplicate image ids"),
        ("unknown_data_source", lambda: probing.open_source("shepes"),
         [*demo_extract[:4], "shepes", *demo_extract[5:]], DataError, "not 'shapes'"),
        ("unknown_data_option", lambda: probing.open_source("shapes:colour=red"),
         [*demo_extract[:4], "shapes:colour=red", *demo_extract[5:]], DataError,
         "unknown option"),
        ("layer_out_of_range", lambda: probing.extract("demo", "shapes:n=2", layers=5),
         [*demo_extract, "--layers", "5"], LayoutError, "out of range"),
        ("negative_layer_out_of_range", lambda: probing.extract("demo", "shapes:n=2",
                                                                layers=-6),
         [*demo_extract, "--layers", "-6"], LayoutError, "out of range"),
        ("kind_the_model_lacks", lambda: probing.extract("demo", "shapes:n=2", kinds="reg"),
         [*demo_extract, "--kinds", "cls,reg"], LayoutError, "'reg' does not exist"),
        ("unknown_kind", lambda: probing.extract("demo", "shapes:n=2", kinds="clss"),
         [*demo_extract, "--kinds", "clss"], LayoutError, "unknown"),
        ("batch_size_zero", lambda: probing.extract("demo", "shapes:n=2", batch_size=0),
         [*demo_extract, "--batch-size", "0"], ConfigError, "0 is invalid"),
        ("batch_size_negative", lambda: probing.extract("demo", "shapes:n=2", batch_size=-4),
         [*demo_extract, "--batch-size", "-4"], ConfigError, "-4 is invalid"),
        ("device_that_does_not_exist",
         lambda: probing.load_model("demo", device="cuda:3"),
         [*demo_extract, "--device", "cuda:3"], ModelError, "device"),
        ("device_nonsense", lambda: probing.load_model("demo", device="tpu9"),
         [*demo_extract, "--device", "tpu9"], ModelError, "device"),
        ("spec_not_toml", lambda: load_spec(f["not_toml"]), ["run", str(f["not_toml"])],
         ConfigError, "not valid TOML"),
        ("spec_mistyped_key", lambda: load_spec(f["typo_spec"]), ["run", str(f["typo_spec"])],
         ConfigError, "Did you mean 'spec'"),
        ("spec_wrong_type", lambda: load_spec(f["wrong_type"]), ["run", str(f["wrong_type"])],
         ConfigError, "must be an integer"),
        ("spec_without_analyses", lambda: load_spec(f["no_analyses"]),
         ["run", str(f["no_analyses"])], ConfigError, "no analyses"),
        ("unknown_analysis", lambda: run_spec(f["unknown_analysis"], quiet=True),
         ["run", str(f["unknown_analysis"])], AnalysisError, "Did you mean 'rollout'"),
        ("missing_spec_file", lambda: load_spec(tmp / "nope.toml"),
         ["run", str(tmp / "nope.toml")], ConfigError, "does not exist"),
        ("output_is_a_file",
         lambda: run_spec(_spec_file(tmp, "out_file", str(f["a_file"]), str(tmp / "st1")),
                          quiet=True),
         ["run", str(_spec_file(tmp, "out_file_cli", str(f["a_file"]), str(tmp / "st1")))],
         ProbingError, "is a file"),
        ("store_is_a_file", lambda: probing.EmbeddingStore(f["a_file"]),
         ["extract", "--model", "demo", "--data", "shapes:n=2", "--out", str(f["a_file"])],
         StoreError, "is a file"),
        ("bad_analysis_parameter", lambda: run_spec(f["bad_param"], quiet=True),
         ["run", str(f["bad_param"])], ConfigError, "Did you mean 'max_points'"),
    ]


def test_at_least_25_cases(files):
    assert len(cases(files)) >= 25


@pytest.mark.parametrize("index", range(30))
def test_python_api_raises_probing_error(files, index, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    all_cases = cases(files)
    if index >= len(all_cases):
        pytest.skip("no such case")
    name, call, _, error, fragment = all_cases[index]
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace("'", "'")) as info:
        call()
    message = str(info.value)
    assert message.count("\n") == 0, f"{name}: message is not one line"
    assert isinstance(info.value, ProbingError)


@pytest.mark.parametrize("index", range(30))
def test_cli_exit_2_without_traceback_or_output(files, index, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    all_cases = cases(files)
    if index >= len(all_cases) or all_cases[index][2] is None:
        pytest.skip("no CLI form for this case")
    name, _, args, _, fragment = all_cases[index]
    store = files["tmp"] / f"store-{name}"
    args = [a.replace("{id}", name) for a in args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, f"{name}: {res.output}"
    assert fragment in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (store / "_shards").exists(), "a failed extraction left shards behind"


def test_pretrained_weights_not_available_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not available offline"):
        probing.load_model("vit_tiny_patch16_224")
    res = CliRunner().invoke(main, ["info", "vit_tiny_patch16_224"])
    assert res.exit_code == 2 and "not available offline" in res.stderr


def test_one_class_label_and_absent_target():
    from probing.probes import probe_layers

    frame = probing.extract("demo", "shapes:n=20", kinds="cls", layers=-1, progress=False)
    frame["constant"] = "same"
    with pytest.raises(DataError, match="'constant' has 1 class"):
        probe_layers(frame, target="constant", kind="cls")
    with pytest.raises(ConfigError, match="target='colour_name' is not a label column; pick "
                                          "one of .*Did you mean 'colour'"):
        probe_layers(frame, target="colour_name", kind="cls")


def test_non_finite_vectors_in_a_store(tmp_path):
    import pyarrow.parquet as pq

    spec = _spec_file(tmp_path, "nan", str(tmp_path / "rep"), str(tmp_path / "stores"))
    run_spec(spec, quiet=True)
    part = next((tmp_path / "stores").rglob("kind=cls/layer=4/part-00000.parquet"))
    table = pq.read_table(part)
    frame = probing.frames.frame_from_table(table)
    emb = probing.embedding_matrix(frame).copy()
    emb[0, 0] = np.nan
    from probing.frames import vectors_to_arrow

    idx = table.column_names.index("emb")
    pq.write_table(table.set_column(idx, "emb", vectors_to_arrow(emb)), part)
    # as if extraction wrote the NaN: the shard marker records the file's new size
    store = part.parents[2]
    marker = store / "_shards" / "shard-00000.json"
    info = json.loads(marker.read_text())
    info["files"][part.relative_to(store).as_posix()] = part.stat().st_size
    marker.write_text(json.dumps(info))
    with pytest.raises(SchemaError, match="NaN or inf"):
        run_spec(spec, out=tmp_path / "rep2", quiet=True)
    assert not (tmp_path / "rep2").exists()


def test_disk_full_while_writing_leaves_no_complete_shard(tmp_path, monkeypatch):
    import errno

    import probing.store as store_module

    real = store_module.pq.write_table
    calls = {"n": 0}

    def full(table, where, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(store_module.pq, "write_table", full)
    with pytest.raises(StoreError, match="free disk space"):
        probing.extract("demo", "shapes:n=8", store=tmp_path / "s", shard_size=4,
                        progress=False)
    st = probing.EmbeddingStore(tmp_path / "s")
    assert st.done_shards() == [] or st.done_shards() == [0]
    assert not list((tmp_path / "s").rglob("*.tmp"))
    assert not (tmp_path / "s" / ".lock").exists()
    monkeypatch.setattr(store_module.pq, "write_table", real)
    probing.extract("demo", "shapes:n=8", store=st, shard_size=4, progress=False)
    assert st.done_shards() == [0, 1]


def test_store_made_by_another_model_and_newer_schema(tmp_path):
    probing.extract("demo", "shapes:n=4", store=tmp_path / "s", layers=-1, progress=False)
    other = probing.load_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    with pytest.raises(StoreError, match="different model"):
        probing.extract(other, "shapes:n=4", store=tmp_path / "s", layers=-1, progress=False)
    res = CliRunner().invoke(main, ["extract", "--model", "demo", "--data", "shapes:n=4",
                                    "--out", str(tmp_path / "s"), "--layers", "0"])
    assert res.exit_code == 2 and "other capture settings" in res.stderr
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, ["extract", "--model", "demo", "--data", "shapes:n=4",
                                    "--out", str(tmp_path / "s"), "--layers", "-1"])
    assert res.exit_code == 2 and "newer" in res.stderr


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "L"])
def test_unusual_image_modes_are_converted_not_rejected(tmp_path, mode):
    (tmp_path / "c").mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    img.save(tmp_path / "c" / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png"))
    frame = probing.extract("demo", tmp_path, kinds="cls", layers=-1, progress=False)
    assert len(frame) == 1
