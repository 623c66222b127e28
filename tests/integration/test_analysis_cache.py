"""Per-analysis cache: changing one analysis's parameter reruns only that analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probing.run.cache import CACHE_DIR
from probing.run.runner import run_spec

# a test analysis that logs each run to runs.log beside its file and draws a figure
COUNTING = '''
from pathlib import Path

from probing import embedding_matrix
from probing.plots import new_figure
from probing.sections import Figure, Section, Table

NEEDS = {"kinds": ["cls"]}

def run(ctx, scale: float = 1.0):
    with open(Path(__file__).parent / "runs.log", "a") as log:
        log.write(f"{Path(__file__).stem} {scale}\\n")
    frame = ctx.tokens("cls", [1])
    x = embedding_matrix(frame) * scale
    data = frame[["image_id"]].assign(first=x[:, 0], norm=(x ** 2).sum(axis=1) ** 0.5)
    fig, ax = new_figure()
    ax.plot(data["image_id"], data["norm"], marker="o")
    ax.set_xlabel("image")
    name = Path(__file__).stem
    return Section(title=name, text=f"scale {scale}",
                   figures=[Figure(f"{name}_norms", fig, "CLS norms per image.", data)],
                   tables=[Table(f"{name}_first", data[["image_id", "first"]])],
                   numbers={"mean_norm": float(data["norm"].mean()),
                            "mean_first": float(data["first"].mean())})
'''


def _spec(tmp: Path, root: str, scale_b: float) -> Path:
    path = tmp / f"spec-{root}-{scale_b}.toml"
    path.write_text(
        f'store = "{(tmp / root).as_posix()}"\n[model]\nspec = "demo"\n[data]\n'
        'source = "shapes"\nn = 12\n[capture]\nlayers = [1]\nkinds = ["cls"]\n'
        'shard_size = 8\nbatch_size = 8\n'
        f'[analyses.count_a]\nscale = 1.0\n[analyses.count_b]\nscale = {scale_b}\n')
    return path


@pytest.fixture
def analyses(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "an"
    folder.mkdir()
    for name in ("count_a", "count_b"):
        (folder / f"{name}.py").write_text(COUNTING)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(folder))
    return folder


def _runs(folder: Path) -> list[str]:
    log = folder / "runs.log"
    runs = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return runs


def _outputs(report: Path) -> dict[str, bytes]:
    files = [report / "results.json", *sorted((report / "tables").glob("*.csv")),
             *sorted((report / "figures").glob("*.png"))]
    return {p.name: p.read_bytes() for p in files}


def _cached(report: Path) -> dict[str, bool]:
    prov = json.loads((report / "provenance.json").read_text())
    return {name: entry["cached"] for name, entry in prov["analyses"].items()}


def test_changing_one_parameter_reruns_only_that_analysis(tmp_path, analyses):
    first = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r1", quiet=True)
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 1.0"]
    assert _cached(first.report_dir) == {"count_a": False, "count_b": False}

    second = run_spec(_spec(tmp_path, "stores", 2.0), out=tmp_path / "r2", quiet=True)
    assert second.reused_store and _runs(analyses) == ["count_b 2.0"]
    assert _cached(second.report_dir) == {"count_a": True, "count_b": False}

    # a fresh run (new store root, empty cache) gives the same numbers, tables and figures
    fresh = run_spec(_spec(tmp_path, "fresh", 2.0), out=tmp_path / "r3", quiet=True)
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 2.0"]
    assert _outputs(second.report_dir) == _outputs(fresh.report_dir)
    # the cache lives in the store, never in the report folder
    # (count_a, count_b at 1.0 and at 2.0, and the model card)
    assert len(list((second.store.path / CACHE_DIR).glob("*.pkl"))) == 4
    assert not any(CACHE_DIR in str(p) for p in tmp_path.joinpath("r2").rglob("*"))

    # force recomputes everything
    run_spec(_spec(tmp_path, "stores", 2.0), out=tmp_path / "r4", quiet=True, force=True)
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 2.0"]


def test_editing_an_analysis_file_reruns_it(tmp_path, analyses):
    run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r1", quiet=True)
    _runs(analyses)
    path = analyses / "count_a.py"
    path.write_text(path.read_text() + "\n# edited\n")
    run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r2", quiet=True)
    assert _runs(analyses) == ["count_a 1.0"]


def _analysis_entries(result) -> list[Path]:
    """The analyses' cache entries of a run (the model card's left out)."""
    card = json.loads((result.report_dir / "provenance.json").read_text())["card"]["cache_key"]
    return sorted(p for p in (result.store.path / CACHE_DIR).glob("*.pkl") if p.stem != card)


def test_corrupt_cache_entry_is_recomputed(tmp_path, analyses):
    first = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r1", quiet=True)
    _runs(analyses)
    entries = _analysis_entries(first)
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # truncated pickle
    entries[1].write_bytes(b"not a pickle at all")
    again = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r2", quiet=True)
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 1.0"]
    assert _cached(again.report_dir) == {"count_a": False, "count_b": False}
    assert _outputs(again.report_dir) == _outputs(first.report_dir)
    third = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r3", quiet=True)
    assert _runs(analyses) == [] and all(_cached(third.report_dir).values())


class _Exploit:
    """Unpickling this runs code (what a malicious cache entry would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("ran",))


def test_a_cache_entry_not_signed_by_this_user_is_never_unpickled(tmp_path, analyses,
                                                                  monkeypatch):
    import pickle

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    first = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r1", quiet=True)
    _runs(analyses)
    key = (tmp_path / "config" / "probing" / "cache-key")
    assert key.stat().st_mode & 0o777 == 0o600
    marker = tmp_path / "exploited"
    entries = _analysis_entries(first)
    forged = pickle.dumps({"key": entries[0].stem, "section": _Exploit(str(marker))})
    entries[0].write_bytes(b"\0" * 32 + forged)  # a folder from someone else: no valid tag
    again = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r2", quiet=True)
    assert not marker.exists()
    assert sorted(_cached(again.report_dir).values()) == [False, True]
    # another user (another key) does not trust this user's entries either
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other"))
    third = run_spec(_spec(tmp_path, "stores", 1.0), out=tmp_path / "r3", quiet=True)
    assert not any(_cached(third.report_dir).values())


def test_a_worker_caches_figure_files_and_other_figure_settings_rerun(tmp_path, analyses,
                                                                      monkeypatch):
    from probing.run.cache import load_section

    monkeypatch.setenv("PROBING_PROCESSES", "2")  # the analyses run (and draw) in workers
    spec = _spec(tmp_path, "stores", 1.0)
    first = run_spec(spec, out=tmp_path / "r1", quiet=True)
    assert json.loads((first.report_dir / "provenance.json").read_text())[
        "analysis_processes"] == 2
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 1.0"]
    keys = {e["cache_key"] for e in json.loads(
        (first.report_dir / "provenance.json").read_text())["analyses"].values()}
    for key in keys:  # the drawn files, not the matplotlib figure, are what the cache keeps
        figure = load_section(first.store, key).figures[0]
        assert figure.figure is None and set(figure.files) == {"png", "svg"}

    again = run_spec(spec, out=tmp_path / "r2", quiet=True)
    assert _runs(analyses) == [] and _cached(again.report_dir) == {"count_a": True,
                                                                   "count_b": True}
    assert _outputs(again.report_dir) == _outputs(first.report_dir)

    # other figure settings are other cache keys: the analyses rerun and draw the PDF too
    pdf = tmp_path / "pdf.toml"
    pdf.write_text('formats = ["png", "svg", "pdf"]\n' + spec.read_text())
    third = run_spec(pdf, out=tmp_path / "r3", quiet=True)
    assert sorted(_runs(analyses)) == ["count_a 1.0", "count_b 1.0"]
    assert (third.report_dir / "figures" / "count_a_norms.pdf").read_bytes()[:4] == b"%PDF"
