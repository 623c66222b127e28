"""The `probing` command end to end: extract, info, list, errors without tracebacks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probing import EmbeddingStore

ROOT = Path(__file__).resolve().parents[2]


def probing(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probing.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_extract_writes_store(tmp_path):
    res = probing("--quiet", "extract", "--model", "demo", "--data", "shapes:n=12", "--out",
                  str(tmp_path / "s"), "--layers", "0,-1", "--kinds", "cls,pooled",
                  "--attention", "--batch-size", "5")
    assert res.returncode == 0, res.stderr
    store = EmbeddingStore(tmp_path / "s")
    assert store.kinds() == ["cls", "pooled"] and store.layers() == [0, 4]
    assert len(store.read(kind="cls", layer=4)) == 12
    arr, _, layers = store.attention()
    assert arr.shape[:2] == (12, 4)


def invoke(*args: str):
    from click.testing import CliRunner

    from probing.cli import main

    return CliRunner().invoke(main, list(args))


def test_info_prints_layout():
    res = invoke("info", "demo")
    assert res.exit_code == 0, res.output
    assert "8 x 8 = 64 patches" in res.stdout and "CLS position      0" in res.stdout


def test_list_shows_analyses():
    res = invoke("list")
    assert res.exit_code == 0, res.output
    assert "embedding_map" in res.stdout and "shapes" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["info", "vit_nope_patch16"], "neither a timm model name"),
    (["extract", "--model", "demo", "--data", "nowhere/", "--out", "x"], "data source"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--batch-size", "0"], "--batch-size 0 is invalid"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--kinds", "reg"], "token kind 'reg' does not exist"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--layers", "9"], "layer 9 is out of range"),
    (["extract", "--model", "demo", "--data", "shapes:n=3", "--out", "{tmp}/s",
      "--device", "cuda:9"], "device"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, needle):
    res = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "_shards").exists()


def test_debug_shows_traceback():
    res = probing("--debug", "info", "vit_nope_patch16")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_info_and_extract_take_a_foreign_mapping(shared_fixtures, tmp_path):
    weights = str(shared_fixtures / "mnist_vit" / "vit_mnist_gpu.pt")
    flags = ["--mapping", "lucidrains", "--mapping-option", "act=relu",
             "--mapping-option", "mean=0.1307", "--mapping-option", "std=0.3081"]
    res = invoke("info", weights, *flags)
    assert res.exit_code == 0, res.output
    assert "mean (0.1307,), std (0.3081,)" in res.output and "6 blocks x 64, 4 heads" in res.output
    res = invoke("info", weights, "--mapping", "lucidrains")  # no preprocessing: refused
    assert res.exit_code == 2 and "mapping_options = {mean, std}" in res.output
    assert "Traceback" not in res.output
    res = invoke("info", weights, "--mapping", "lucidrains", "--mapping-option", "mean")
    assert res.exit_code == 2 and "is not KEY=VALUE" in res.output
    out = tmp_path / "s"
    res = invoke("--quiet", "extract", "--model", weights, *flags, "--data", "digits",
                 "--n-images", "6", "--layers", "-1", "--kinds", "cls", "--out", str(out))
    assert res.exit_code == 0, res.output
    manifest = EmbeddingStore(out).manifest
    assert manifest["preprocessing"]["mean"] == [0.1307]
    assert len(EmbeddingStore(out).read(kind="cls", layer=6)) == 6


def test_mapping_option_values_parse_to_numbers_and_tuples():
    from probing.cli import _key_values

    assert _key_values("--mapping-option", ("mean=0.5,0.4,0.3", "heads=4", "eps=1e-6",
                                            "act=gelu")) == {
        "mean": (0.5, 0.4, 0.3), "heads": 4, "eps": 1e-6, "act": "gelu"}


def test_extract_names_the_layers_it_wrote(tmp_path):
    # names (embed, norm) and block numbers, never the internal labels of the special sites
    res = invoke("extract", "--model", "demo", "--data", "shapes:n=4", "--out",
                 str(tmp_path / "s"), "--layers", "0,-1,embed,norm")
    assert res.exit_code == 0, res.output
    assert res.stdout.rstrip().endswith("; layers embed, 0, 4, norm)"), res.stdout


def _folder_with_a_broken_image(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    for i in range(3):
        (root / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / "a" / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png")
    return root


def test_unreadable_images_are_reported_in_the_callers_spelling(tmp_path, run_spec_text,
                                                                 caplog):
    from probing import DataError, ImageFolderSource, extract

    images = str(_folder_with_a_broken_image(tmp_path / "images"))
    res = invoke("extract", "--model", "demo", "--data", images, "--out", str(tmp_path / "s"))
    assert res.exit_code == 2 and "skip unreadable images with --on-error skip." in res.stderr
    assert "on_error" not in res.stderr
    with pytest.raises(DataError, match="with on_error='skip'"):  # the API's spelling
        extract("demo", ImageFolderSource(images), layers=[0])
    with pytest.raises(DataError, match=r'with \[data.options\] on_error = "skip"'):
        run_spec_text(tmp_path, f'store = "{{store}}"\n[model]\nspec = "demo"\n[data]\n'
                      f'source = "{Path(images).as_posix()}"\n[analyses.pe_similarity]\n', "r")
    res = invoke("extract", "--model", "demo", "--data", images, "--out", str(tmp_path / "k"),
                 "--on-error", "skip", "--kinds", "cls")
    assert res.exit_code == 0, res.output
    assert res.stderr.count("skipped as unreadable") == 1  # one warning, naming the first
    assert "warning: 1 of 4 images were skipped as unreadable (the first: " in res.stderr
    assert "EmbeddingStore(" in res.stderr and ".skipped() lists them" in res.stderr
    assert len(EmbeddingStore(tmp_path / "k").skipped()) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="probing"):
        result, _ = run_spec_text(
            tmp_path, f'store = "{{store}}"\n[model]\nspec = "demo"\n[data]\nsource = '
            f'"{Path(images).as_posix()}"\noptions = {{{{ on_error = "skip" }}}}\n'
            '[analyses.pe_similarity]\n', "skip")
    assert f"1 of 4 images were skipped as unreadable; the report lists them in " \
           f"{result.report_dir / 'provenance.json'}" in caplog.text
    # the extraction's warning, once; the report's line is news only for a reused store
    assert [r.levelno for r in caplog.records if "skipped as unreadable" in r.message] == \
        [logging.WARNING, logging.INFO]


def test_info_without_weights_offers_no_pretrained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = invoke("info", "vit_tiny_patch16_224")
    if res.exit_code == 0:
        pytest.skip("vit_tiny_patch16_224 weights are in this machine's cache")
    assert res.exit_code == 2
    assert "--no-pretrained" in res.stderr and "--arch vit_tiny_patch16_224" in res.stderr
    assert "pretrained=False" not in res.stderr and "load_model(" not in res.stderr


def test_help_and_list_import_no_heavy_library():
    # a property, not a timing: --help and list load neither torch nor the other heavy stacks
    script = ("import sys\nfrom probing.cli import main\n"
              "for args in (['--help'], ['list']):\n"
              "    try:\n        main(args)\n    except SystemExit as e:\n"
              "        assert not e.code, e.code\n"
              "heavy = {'torch', 'timm', 'captum', 'sklearn', 'matplotlib', 'pandas'}\n"
              "print(sorted(heavy & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "layer_probes" in done.stdout  # list found the analyses without importing them


def test_the_command_exits_quickly_yet_runs_exit_handlers_and_flushes_its_output(tmp_path):
    # `probing` ends with os._exit after the atexit handlers and a flush (probing.cli.entry)
    mark = tmp_path / "atexit.txt"
    script = ("import atexit, sys\nfrom probing import cli\n"
              "atexit.register(lambda path=sys.argv[1]: open(path, 'w').write('ran'))\n"
              "sys.argv = ['probing'] + sys.argv[2:]\ncli.entry()\n")
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script, str(mark), *args], capture_output=True, text=True,
        cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = run("list")
    assert done.returncode == 0 and done.stdout == invoke("list").output
    assert mark.read_text() == "ran"
    mark.unlink()
    bad = run("run", str(tmp_path / "missing.toml"))  # an error keeps its status and message
    assert bad.returncode == 2 and "does not exist" in bad.stderr and mark.read_text() == "ran"


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    # `probing list | head -1`: status 128 + SIGPIPE, no "unexpected BrokenPipeError"
    proc = subprocess.Popen([sys.executable, "-m", "probing.cli", "list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, bufsize=0)
    proc.stdout.read(1)
    proc.stdout.close()
    assert proc.wait(timeout=300) in (0, 141)  # 0 only if all of it fitted the pipe at once
    assert proc.stderr.read() == b""
