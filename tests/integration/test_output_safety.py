"""Nothing the toolkit did not write is ever removed, renamed or overwritten.

Every command that writes a report or a store is pointed at a folder of the user's own files;
the files must survive byte for byte and the command must refuse with one clear sentence.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from click.testing import CliRunner

from probing import ArraySource, EmbeddingStore, ProbingError, ReportError, StoreError, extract
from probing.cli import main
from probing.ownership import REPORT_MARKER, check_report_target
from probing.report import Figure, Report, Section, Table
from probing.run.runner import run_spec

SPEC = """title = "safety"
seed = 0
output = "{out}"
store = "{store}"
[model]
spec = "demo"
[data]
source = "shapes"
n = 8
[capture]
batch_size = 8
kinds = ["cls"]
[analyses.embedding_map]
methods = ["pca"]
"""


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's own files; returns what it holds."""
    (path / "chapter").mkdir(parents=True)
    (path / "thesis.txt").write_text("three years of work\n")
    (path / "chapter" / "fig.png").write_bytes(b"\x89PNG user figure")
    return snapshot(path)


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def tiny_report(title: str = "t") -> Report:
    fig = plt.figure(figsize=(1, 1))
    return Report(title=title, sections=[Section(
        title="s", figures=[Figure("f", fig, "c", pd.DataFrame({"a": [1]}))],
        tables=[Table("t", pd.DataFrame({"b": [2]}))])])


def write_spec(tmp: Path, out: Path, store: Path | None = None) -> Path:
    spec = tmp / "spec.toml"
    spec.write_text(SPEC.format(out=out.as_posix(), store=(store or tmp / "stores").as_posix()))
    return spec


def cli(*args: str):
    return CliRunner().invoke(main, ["--quiet", *args])


# ------------------------------------------------------------------------------ report folders
def test_report_refuses_a_folder_of_user_files(tmp_path):
    mine = user_folder(tmp_path / "mywork")
    with pytest.raises(ReportError, match="probing did not write.*thesis.txt"):
        tiny_report().write(tmp_path / "mywork")
    assert snapshot(tmp_path / "mywork") == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mywork"]  # no temporaries left


def test_report_replaces_its_own_folder_and_an_empty_one(tmp_path):
    (tmp_path / "empty").mkdir()
    tiny_report("first").write(tmp_path / "empty")
    tiny_report("second").write(tmp_path / "empty")
    assert "second" in (tmp_path / "empty" / "index.html").read_text()
    marker = json.loads((tmp_path / "empty" / REPORT_MARKER).read_text())
    assert "figures/f.png" in marker["files"] and "index.html" in marker["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_report_refuses_its_own_folder_once_a_user_added_a_file(tmp_path):
    out = tmp_path / "r"
    tiny_report().write(out)
    (out / "figures" / "my_notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(ReportError, match="figures/my_notes.txt"):
        tiny_report().write(out)
    assert snapshot(out) == before


def test_a_forged_or_foreign_marker_does_not_make_a_folder_ours(tmp_path):
    mine = user_folder(tmp_path / "mywork")
    (tmp_path / "mywork" / REPORT_MARKER).write_text('{"made_by": "probing", "files": []}')
    with pytest.raises(ReportError, match="thesis.txt"):
        tiny_report().write(tmp_path / "mywork")
    assert snapshot(tmp_path / "mywork")["thesis.txt"] == mine["thesis.txt"]


@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home", "root", "store", "store_parent",
                                   "inside_store", "analyses"])
def test_protected_folders_are_never_report_folders(tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    store = tmp_path / "elsewhere" / "stores"  # not above the working directory
    target = {"cwd": work, "parent_of_cwd": tmp_path, "home": tmp_path / "home",
              "root": Path("/"), "store": store, "store_parent": store.parent,
              "inside_store": store / "x", "analyses": tmp_path / "an"}[where]
    with pytest.raises(ReportError, match="choose an empty or new folder"):
        check_report_target(target, {store: "the store", tmp_path / "an": "an analyses folder"})


def test_run_refuses_user_folder_even_with_force(tmp_path):
    mine = user_folder(tmp_path / "mywork")
    spec = write_spec(tmp_path, tmp_path / "unused")
    result = cli("run", str(spec), "--out", str(tmp_path / "mywork"), "--force")
    assert result.exit_code == 2, result.output
    assert "probing did not write" in result.output and "Traceback" not in result.output
    assert snapshot(tmp_path / "mywork") == mine
    assert not (tmp_path / "stores").exists()  # refused before any extraction


def test_spec_output_over_user_files_and_store_overlap_are_refused(tmp_path):
    mine = user_folder(tmp_path / "mywork")
    with pytest.raises(ReportError, match="thesis.txt"):
        run_spec(write_spec(tmp_path, tmp_path / "mywork"), quiet=True)
    assert snapshot(tmp_path / "mywork") == mine
    # a store inside the output folder would be deleted by every report write
    spec = write_spec(tmp_path, tmp_path / "results", store=tmp_path / "results" / ".stores")
    with pytest.raises(ReportError, match="store folder"):
        run_spec(spec, quiet=True)
    assert not (tmp_path / "results").exists()


def test_out_dot_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, tmp_path / "unused")
    result = cli("run", str(spec), "--out", ".")
    assert result.exit_code == 2
    assert "working directory" in result.output and "disk space" not in result.output
    assert (tmp_path / "spec.toml").exists()


def test_output_under_a_file_is_refused_before_extraction(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ProbingError, match="afile is a file"):
        run_spec(write_spec(tmp_path, tmp_path / "afile" / "report"), quiet=True)
    assert not (tmp_path / "stores").exists()


def test_run_writes_and_rewrites_its_own_report(tmp_path):
    spec = write_spec(tmp_path, tmp_path / "report")
    run_spec(spec, quiet=True)
    first = json.loads((tmp_path / "report" / "provenance.json").read_text())
    timings = first["timings_s"]
    assert timings["report"] > 0  # the report stage is timed inside the write
    assert 0 <= timings["report_figures"] <= timings["report"]  # its figures, tables apart
    run_spec(spec, quiet=True, force=True)
    assert (tmp_path / "report" / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
    assert not list((tmp_path / "report").rglob("*.tmp"))


# ----------------------------------------------------------------------- stale temporaries
def test_stale_cleanup_removes_only_marked_temporaries_of_dead_writers(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: never a live process
    ours = tmp_path / f".r.tmp-{dead}-0123abcd"
    ours.mkdir()
    (ours / REPORT_MARKER).write_text(json.dumps({"made_by": "probing", "pid": dead,
                                                  "files": []}))
    (ours / "half.png").write_bytes(b"partial")
    theirs = [tmp_path / ".r.old-1", tmp_path / f".r.tmp-{dead}-notours", tmp_path / ".r.tmp-x",
              tmp_path / f".r.old-{dead}-0123abce"]  # the last: right name, but no marker
    for folder in theirs:
        user_folder(folder)
    tiny_report().write(tmp_path / "r")
    assert not ours.exists()
    for folder in theirs:
        assert (folder / "thesis.txt").read_text() == "three years of work\n"


def test_two_writers_of_one_report_folder(tmp_path):
    errors: list[BaseException] = []

    def write(title: str) -> None:
        try:
            tiny_report(title).write(tmp_path / "r")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (tmp_path / "r" / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


# ------------------------------------------------------------------------------------ stores
def test_extract_refuses_a_folder_of_user_files(tmp_path, demo_model):
    from probing import ShapesSource

    mine = user_folder(tmp_path / "mywork")
    with pytest.raises(StoreError, match="not a probing store.*choose an empty or new folder"):
        extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"],
                store=tmp_path / "mywork")
    assert snapshot(tmp_path / "mywork") == mine
    result = cli("extract", "--model", "demo", "--data", "shapes:n=4", "--out",
                 str(tmp_path / "mywork"))
    assert result.exit_code == 2 and "not a probing store" in result.output
    assert snapshot(tmp_path / "mywork") == mine


def test_failed_first_extraction_leaves_no_store_folder(tmp_path, demo_model):
    from probing import ImageFolderSource

    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    (images / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ProbingError):
        extract(demo_model, ImageFolderSource(tmp_path / "images"),
                layers=[1], kinds=["cls"], store=tmp_path / "store")
    assert not (tmp_path / "store").exists()
    # an empty folder the user made is kept (empty), never removed
    (tmp_path / "mine").mkdir()
    with pytest.raises(ProbingError):
        extract(demo_model, ImageFolderSource(tmp_path / "images"),
                layers=[1], kinds=["cls"], store=tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_store_clean_up_removes_only_its_own_dead_temporaries(tmp_path, demo_model):
    import numpy as np

    source = ArraySource(np.zeros((4, 32, 32, 3), dtype=np.uint8),
                         pd.DataFrame({"label": [0, 1, 0, 1]}))
    store = extract(demo_model, source, layers=[1], kinds=["cls"], store=tmp_path / "s")
    dead = 2**22 + 12345
    ours = store.path / "kind=cls" / "layer=1" / f".part-00001.parquet.{dead}.tmp"
    ours.write_bytes(b"half")
    users = [store.path / ".notes.tmp", store.path / "kind=cls" / f".x.{os.getpid()}.tmp",
             store.path / "mine" / f".y.{dead}.tmp",
             store.path / "labels" / f".part-00002.parquet.h0badc0de-{dead}.tmp"]  # other host
    for f in users:
        f.parent.mkdir(exist_ok=True)
        f.write_text("keep")
    with store:
        pass
    assert not ours.exists()
    assert all(f.read_text() == "keep" for f in users)
    assert isinstance(EmbeddingStore(store.path).labels(), pd.DataFrame)


# ----------------------------------------------------------------------- text to other readers
def test_csv_cells_cannot_be_formulas_and_markdown_has_no_raw_html(tmp_path):
    frame = pd.DataFrame({"label": ["=cmd|' /C calc'!A0", "+1", "-x", "@SUM(A1)", "plain"],
                          "value": [-1.5, 2.0, -3.0, 4.0, 5.0]})
    report = Report(title="<script>alert(1)</script>", sections=[Section(
        title="<img src=x onerror=alert(1)>", text="a <b>bold</b> claim",
        tables=[Table("t", frame, caption="<i>cap</i>")])])
    report.write(tmp_path / "r")
    csv = pd.read_csv(tmp_path / "r" / "tables" / "t.csv")
    assert list(csv["label"]) == ["'=cmd|' /C calc'!A0", "'+1", "'-x", "'@SUM(A1)", "plain"]
    assert list(csv["value"]) == [-1.5, 2.0, -3.0, 4.0, 5.0]  # numbers stay numbers
    md = (tmp_path / "r" / "README.md").read_text()
    for raw in ("<script>", "<img", "<b>", "<i>"):
        assert raw not in md
    assert "&lt;script&gt;" in md and "&lt;img src=x onerror=alert(1)&gt;" in md


def test_train_demo_never_overwrites_shipped_or_user_weights(tmp_path):
    from probing.demo import WEIGHTS
    from probing.demo.train import check_train_output

    with pytest.raises(ProbingError, match="inside the probing package"):
        check_train_output(WEIGHTS.parent)
    (tmp_path / "demo_vit.json").write_text('{"my": "record"}')
    with pytest.raises(ProbingError, match="demo_vit.json that train-demo did not write"):
        check_train_output(tmp_path)
    (tmp_path / "demo_vit.json").write_text('{"made_by": "probing train-demo"}')
    check_train_output(tmp_path)  # its own earlier output may be replaced
    result = cli("train-demo", "--out", str(WEIGHTS.parent), "--epochs", "1")
    assert result.exit_code == 2 and "inside the probing package" in result.output


def test_cli_warnings_are_one_line_each():
    import warnings

    from probing import cli as cli_module

    @cli_module.main.command("warn-twice")
    def warn_twice() -> None:
        warnings.warn("first\nline", UserWarning, stacklevel=1)
        warnings.warn("second", RuntimeWarning, stacklevel=1)

    saved = warnings.showwarning
    try:
        result = CliRunner().invoke(main, ["warn-twice"])
    finally:
        cli_module.main.commands.pop("warn-twice")
        warnings.showwarning = saved
    lines = result.output.strip().splitlines()
    assert lines == ["warning: first line (UserWarning)", "warning: second (RuntimeWarning)"]


def test_an_analysis_that_raises_is_named_under_quiet(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "broken_study.py").write_text(
        'NEEDS = {"kinds": ["cls"]}\n'
        "def run(ctx, n: int = 1):\n"
        "    return {}['missing']\n")
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(folder))
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.format(out=(tmp_path / "r").as_posix(),
                                store=(tmp_path / "stores").as_posix())
                    + "[analyses.broken_study]\n")
    result = cli("run", str(spec))
    assert result.exit_code == 2, result.output
    assert "analysis 'broken_study' failed (KeyError" in result.output
    assert not (tmp_path / "r").exists()


def test_a_report_file_edited_since_probing_wrote_it_is_not_replaced(tmp_path):
    import time

    out = tmp_path / "r"
    tiny_report().write(out)
    time.sleep(0.01)
    (out / "README.md").write_text("my notes on this report\n")  # the user's edit
    with pytest.raises(ReportError, match=r"README.md \(changed since probing wrote it\)"):
        tiny_report().write(out)
    assert (out / "README.md").read_text() == "my notes on this report\n"


def test_no_report_inside_the_package(tmp_path):
    import probing

    inside = Path(probing.__file__).parent / "new-report"
    with pytest.raises(ReportError, match="lies inside the probing package"):
        check_report_target(inside)
    assert not inside.exists()


def test_a_live_writer_on_another_host_keeps_its_temporary(tmp_path):
    dead = 2**22 + 12345
    theirs = tmp_path / f".r.tmp-{dead}-0123abcd"
    theirs.mkdir()
    (theirs / REPORT_MARKER).write_text(json.dumps(
        {"made_by": "probing", "host": "another-node", "pid": dead, "files": {}}))
    tiny_report().write(tmp_path / "r")
    assert theirs.is_dir()  # its pid means nothing on this machine


def test_a_users_lock_named_file_is_not_taken_for_probings(tmp_path, demo_model):
    from probing import ShapesSource

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / ".lock").write_text("my own lock notes")
    with pytest.raises(StoreError, match="not a probing store"):
        extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"],
                store=tmp_path / "mine")
    assert (tmp_path / "mine" / ".lock").read_text() == "my own lock notes"


def test_an_interrupted_repair_never_discards_an_existing_store(tmp_path, demo_model,
                                                                 monkeypatch):
    import importlib

    from probing import ShapesSource

    extract_module = importlib.import_module("probing.extract")
    store = extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"],
                    store=tmp_path / "s", progress=False)
    part = next((store.path / "kind=cls" / "layer=1").glob("part-*.parquet"))
    part.unlink()  # damaged: the shard is re-extracted on the next run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "extract_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"], store=store,
                progress=False)
    monkeypatch.undo()
    assert (store.path / "manifest.json").is_file()
    again = extract(demo_model, ShapesSource(n=4), layers=[1], kinds=["cls"], store=store,
                    progress=False)
    assert len(again.read(kind="cls")) == 4


def test_every_image_skipped_is_an_error_and_leaves_no_store(tmp_path, demo_model):
    from probing import DataError, ImageFolderSource

    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="all 1 images were skipped"):
        extract(demo_model, ImageFolderSource(tmp_path / "images", on_error="skip"),
                layers=[1], kinds=["cls"], store=tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()


def test_demo_refuses_a_folder_of_user_files(tmp_path):
    mine = user_folder(tmp_path / "mywork")
    result = cli("demo", "--out", str(tmp_path / "mywork"), "--force")
    assert result.exit_code == 2 and "probing did not write" in result.output
    assert snapshot(tmp_path / "mywork") == mine
