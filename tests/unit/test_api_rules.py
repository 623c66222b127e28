"""API consistency rules: one return type per overload, the caller's model is never changed,
progress goes through logging, result frames share one column vocabulary."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import typing

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from probing import ConfigError, EmbeddingStore, extract, load_model
from probing.models import eval_mode


def _tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                             patch_size=8, depth=2, num_classes=0, **kw)


def _images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _flags(module: torch.nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


# ------------------------------------------------------------------ 1. return types by overload
@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads needs 3.11")
def test_extract_overloads_name_each_return_and_the_calls_agree(tmp_path):
    returns = {}  # the annotations are strings (postponed evaluation)
    for fn in typing.get_overloads(extract):
        sig = inspect.signature(fn)
        key = (sig.parameters["attention"].annotation, sig.parameters["store"].annotation)
        returns[key] = sig.return_annotation
    assert returns[("Literal[False]", "None")] == "pd.DataFrame"
    assert returns[("Literal[True]", "None")] == "tuple[pd.DataFrame, pd.DataFrame]"
    assert returns[("bool", "StoreTarget")] == "EmbeddingStore"
    # what each call returns at run time is what its overload says
    model = load_model(_tiny())
    frame = extract(model, _images(), layers=[1], progress=False)
    pair = extract(model, _images(), layers=[1], attention=True, progress=False)
    store = extract(model, "shapes:n=2", layers=[1], store=tmp_path / "s", progress=False)
    assert isinstance(frame, pd.DataFrame)
    assert isinstance(pair, tuple) and all(isinstance(p, pd.DataFrame) for p in pair)
    assert isinstance(store, EmbeddingStore)


# ------------------------------------------------------------------ 2. the caller's model
def test_load_model_leaves_a_training_module_as_it_was():
    model = _tiny()
    model.blocks[0].train(False)  # mixed flags: every one must come back as it was
    before = _flags(model)
    loaded = load_model(model, device="cpu")
    assert loaded.model is model and _flags(model) == before and model.training


def test_extract_runs_a_training_module_in_eval_mode_and_restores_its_flags():
    model = _tiny(drop_rate=0.5, proj_drop_rate=0.5)  # dropout: training mode is visible
    model.blocks[1].train(False)
    before = _flags(model)
    got = extract(model, _images(), layers=[2], kinds=("cls",), device="cpu", progress=False)
    assert _flags(model) == before
    reference = _tiny(drop_rate=0.5, proj_drop_rate=0.5).eval()
    want = extract(reference, _images(), layers=[2], kinds=("cls",), progress=False)
    pd.testing.assert_frame_equal(got, want)


def test_extract_never_calls_to_on_the_callers_module(monkeypatch):
    model = _tiny()
    calls = []
    monkeypatch.setattr(model, "to", lambda *a, **k: calls.append((a, k)) or model)
    extract(model, _images(), layers=[1], device="cpu", progress=False)
    extract(load_model(model), _images(), layers=[1], device="cpu", progress=False)
    assert calls == []


def test_another_device_for_the_callers_module_is_refused_with_the_fix():
    model = _tiny().to("meta")  # a module that is not where device= asks
    for call in (lambda: load_model(model, device="cpu"),
                 lambda: extract(model, _images(), device="cpu", progress=False)):
        with pytest.raises(ConfigError, match=r"model\.to\('cpu'\)"):
            call()
    assert next(model.parameters()).device.type == "meta"


def test_eval_mode_restores_flags_after_an_error():
    model = _tiny()
    model.blocks[0].train(False)
    before = _flags(model)
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(_flags(model))
        raise RuntimeError("boom")
    assert _flags(model) == before


# ------------------------------------------------------------------ 3. progress through logging
def test_library_logger_is_silent_by_default():
    logger = logging.getLogger("probing")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def _count_analysis(folder):
    (folder / "noop.py").write_text(
        "from probing.sections import Section\n"
        "NEEDS = {'kinds': ['cls']}\n"
        "def run(ctx):\n"
        "    return Section(title='noop', text='nothing', numbers={'n': 1.0})\n")


def _tiny_spec(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'store = "{(tmp_path / "stores").as_posix()}"\n[model]\nspec = "demo"\n[data]\n'
        'source = "shapes"\nn = 4\n[capture]\nlayers = [1]\nkinds = ["cls"]\n'
        '[analyses.noop]\n')
    return spec


@pytest.fixture
def noop_spec(tmp_path, monkeypatch):
    folder = tmp_path / "an"
    folder.mkdir()
    _count_analysis(folder)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(folder))
    return _tiny_spec(tmp_path)


def test_run_progress_goes_to_the_probing_logger(noop_spec, tmp_path, caplog, capsys):
    from probing.run import run_spec

    caplog.set_level(logging.INFO, logger="probing")
    run_spec(noop_spec, out=tmp_path / "r", quiet=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "probing"]
    assert any(m.startswith("extracting 4 images from demo") for m in messages), messages
    assert "analysis noop ..." in messages
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "probing")
    caplog.clear()
    run_spec(noop_spec, out=tmp_path / "r", quiet=True)
    assert any("is up to date" in r.getMessage() for r in caplog.records)
    assert capsys.readouterr().err == ""  # nothing printed: only log records


def test_cli_shows_progress_unless_quiet(noop_spec, tmp_path):
    from click.testing import CliRunner

    from probing.cli import main

    try:
        loud = CliRunner().invoke(main, ["run", str(noop_spec), "--out", str(tmp_path / "a")])
        assert loud.exit_code == 0, loud.output
        assert "extracting 4 images" in loud.stderr and "analysis noop ..." in loud.stderr
        quiet = CliRunner().invoke(main, ["--quiet", "run", str(noop_spec), "--force",
                                          "--out", str(tmp_path / "b")])
        assert quiet.exit_code == 0, quiet.output
        assert "analysis noop" not in quiet.stderr and "extracting" not in quiet.stderr
        assert quiet.stdout.startswith("report: ")
    finally:  # leave the library's logger as a library user would find it
        from probing.cli import _StderrHandler

        logger = logging.getLogger("probing")
        for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)


def test_cli_logging_levels():
    from probing.cli import _StderrHandler, configure_logging

    logger = logging.getLogger("probing")
    try:
        for kwargs, level in (({}, logging.INFO), ({"quiet": True}, logging.WARNING),
                              ({"debug": True}, logging.DEBUG)):
            configure_logging(**kwargs)
            mine = [h for h in logger.handlers if isinstance(h, _StderrHandler)]
            assert len(mine) == 1 and mine[0].level == level and logger.level == level
    finally:
        for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)


def test_no_print_in_the_library():
    from pathlib import Path

    import probing

    root = Path(probing.__file__).parent
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if line.lstrip().startswith("print(")]
    assert hits == []



# ------------------------------------------------------------------ 4. result-frame vocabulary
#: Words of a result frame (DESIGN: ``layer, metric, value, ci_low, ci_high, ...``): ``metric``
#: names what ``value`` holds; an interval of ``value`` is ``ci_low``/``ci_high``; a layer is
#: ``layer``, a pair of layers ``layer_a``/``layer_b``; ``n`` counts what ``value`` is over.
#: Synonyms of those words are not used.
SYNONYMS = {"mean", "score", "estimate", "lo", "hi", "low", "high", "lower", "upper",
            "ci_lo", "ci_hi", "cka", "mutual_knn", "layer1", "layer2", "layer_x", "layer_y"}


@functools.lru_cache(maxsize=1)
def _vocabulary_frames() -> dict[str, pd.DataFrame]:
    from probing.frames import to_frame
    from probing.layout import TokenLayout
    from probing.posenc import similarity_frame, sincos_1d, subspace_overlap, worked_example
    from probing.probes import probe_layers
    from probing.similarity import cls_patch_cosine, layer_mutual_knn, layer_similarity

    layout = TokenLayout(grid=(2, 3), patch_size=(4, 4))
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"label": rng.integers(0, 2, 40)})
    frame = pd.concat([to_frame(rng.normal(size=(40, layout.n_tokens, 6)).astype(np.float32),
                                layout, layer, np.arange(40), labels=labels)
                       for layer in (0, 1)], ignore_index=True)
    table = sincos_1d(6, 8)
    return {
        "probe_layers": probe_layers(frame, "label", kind="cls", cv=2, solver="ridge"),
        "layer_similarity": layer_similarity(frame, kind="cls"),
        "layer_mutual_knn": layer_mutual_knn(frame, kind="cls", k=3),
        "cls_patch_cosine": cls_patch_cosine(frame),
        "similarity_frame": similarity_frame(table, grid=(2, 3)),
        "subspace_overlap": subspace_overlap(table, rng.normal(size=(30, 8)), k=2, n_null=5),
        "worked_example": worked_example(),
    }



@pytest.mark.parametrize("name", ["probe_layers", "layer_similarity", "layer_mutual_knn",
                                  "cls_patch_cosine", "similarity_frame", "subspace_overlap",
                                  "worked_example"])
def test_result_frames_speak_one_vocabulary(name):
    frame = _vocabulary_frames()[name]
    columns = set(frame.columns)
    assert not columns & SYNONYMS, f"{name}: {sorted(columns & SYNONYMS)}"
    assert "value" in columns
    assert ("metric" in columns) or name == "worked_example"
    assert ({"ci_low", "ci_high"} <= columns) == bool(columns & {"ci_low", "ci_high"})
    if {"layer_a", "layer_b"} & columns:
        assert {"layer_a", "layer_b"} <= columns and "layer" not in columns


def test_attention_and_attribution_leave_the_callers_model_as_it_was():
    from probing.attention import gradient_rollout
    from probing.attribution import attribution_maps, faithfulness_curves

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=2, num_classes=3)
    model.train()
    model.blocks[0].eval()  # mixed flags: model.train(was_training) would not restore them
    before = _flags(model)
    x = _images(2)
    gradient_rollout(model, x, target=0)
    maps = attribution_maps(model, x, method="saliency", target=0)
    faithfulness_curves(model, x, maps={"saliency": maps.maps}, target=0, step=8)
    assert _flags(model) == before
    with pytest.raises(ConfigError, match=r"model\.to\("):
        attribution_maps(model.to("meta"), x, method="saliency", target=0, device="cpu")
