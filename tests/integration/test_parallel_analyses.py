"""Analyses in parallel worker processes (probing.run.parallel): the same report as serially,
the same errors, one control store built once, and serial when asked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from probing.errors import AnalysisError, ConfigError
from probing.run import parallel
from probing.run.parallel import analysis_processes, fork_available, requested_processes
from probing.run.runner import run_spec

needs_fork = pytest.mark.skipif(not fork_available(), reason="no fork start method here")

# an analysis that reads a random-init control store (the same one in every copy), logs its
# process id beside its file and returns the stored control vectors as a table and a figure
CONTROL = '''
import os
from pathlib import Path

from probing import embedding_matrix
from probing.plots import new_figure
from probing.sections import Figure, Section, Table

NEEDS = {"kinds": ["cls"]}

def run(ctx):
    name = Path(__file__).stem
    with open(Path(__file__).parent / "pids.log", "a") as log:
        log.write(f"{name} {os.getpid()}\\n")
    store = ctx.extract_store(ctx.random_init_model(), kinds=("cls",), layers=[1])
    frame = store.read(kind="cls", layers=[1])
    x = embedding_matrix(frame)
    data = frame[["image_id"]].assign(first=x[:, 0], second=x[:, 1])
    fig, ax = new_figure()
    ax.plot(data["image_id"], data["first"], marker="o")
    return Section(title=name, figures=[Figure(f"{name}_first", fig, "control.", data)],
                   tables=[Table(f"{name}_vectors", data)],
                   numbers={"mean_first": float(data["first"].mean())})
'''

# an analysis that fails as its parameter says: a ProbingError, another exception, or its
# worker process is killed (only in a worker: a serial run would kill the test)
BOOM = '''
import multiprocessing
import os
import signal

from probing.errors import ConfigError

def run(ctx, how: str = "probing"):
    if how == "probing":
        raise ConfigError("the boom is bad; set how to something else.")
    if how == "kill" and multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError("no boom here")
'''

SPEC = '''store = "{store}"
formats = ["png", "svg"]
[model]
spec = "demo"
[data]
source = "shapes"
n = 40
[capture]
layers = [0, 1, 2]
kinds = ["cls", "patch"]
pooled = "mean"
batch_size = 20
shard_size = 20
{analyses}'''

ANALYSES = '''[analyses.ctrl_a]
[analyses.layer_probes]
kinds = ["cls"]
layers = [1, 2]
cv = 2
raw_pixels = false
[analyses.cka]
kinds = ["cls"]
layers = [0, 1, 2]
k = 5
[analyses.pe_similarity]
[analyses.ctrl_b]
'''


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    an = tmp_path / "an"
    an.mkdir()
    for name in ("ctrl_a", "ctrl_b"):
        (an / f"{name}.py").write_text(CONTROL)
    (an / "boom.py").write_text(BOOM)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(an))
    monkeypatch.delenv(parallel.PROCESSES_ENV, raising=False)
    return an


def _spec(tmp: Path, name: str, analyses: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(SPEC.format(store=(tmp / f"stores-{name}").as_posix(), analyses=analyses))
    return path


def _pids(folder: Path) -> dict[str, int]:
    log = folder / "pids.log"
    pids = dict(line.split() for line in log.read_text().splitlines())
    log.unlink()
    return {k: int(v) for k, v in pids.items()}


def _outputs(report: Path) -> dict[str, bytes]:
    """Every file of a report but its provenance (timings, paths), marker and spec (the two
    runs' specs name different stores)."""
    return {p.relative_to(report).as_posix(): p.read_bytes() for p in sorted(report.rglob("*"))
            if p.is_file() and p.name not in ("provenance.json", ".probing-report", "spec.toml")}


@needs_fork
def test_parallel_run_equals_serial_and_builds_one_control_store(tmp_path, folder):
    serial = run_spec(_spec(tmp_path, "serial", ANALYSES), out=tmp_path / "r1", quiet=True,
                      processes=1)
    assert set(_pids(folder).values()) == {os.getpid()}  # serial: in this process
    par = run_spec(_spec(tmp_path, "par", ANALYSES), out=tmp_path / "r2", quiet=True,
                   processes=2)
    pids = _pids(folder)
    assert os.getpid() not in pids.values()  # in worker processes
    # every figure, table, number and page is the same, byte for byte
    one, two = _outputs(serial.report_dir), _outputs(par.report_dir)
    figures = [k for k in one if k.startswith("figures/")]
    assert len(figures) >= 10 and {k.rsplit(".", 1)[1] for k in figures} == {"png", "svg"}
    assert one == two
    # both copies read one control store, which is complete and unlocked
    controls = list((par.store.path / "controls").iterdir())
    # ctrl_a/ctrl_b share one; layer_probes and cka one each (cka compares other layers here;
    # with the same layers and images they share one, as in the demo)
    assert len(controls) == 1 + 2
    assert all(not (c / ".lock").exists() for c in controls)
    prov = json.loads((par.report_dir / "provenance.json").read_text())
    assert all(not e["cached"] for e in prov["analyses"].values())
    assert set(prov["timings_s"]) >= {f"analysis:{n}" for n in prov["analyses"]}
    # the workers cached their sections (figures drawn there): a rerun takes them all from
    # the cache and writes the same report again
    again = run_spec(_spec(tmp_path, "par", ANALYSES), out=tmp_path / "r3", quiet=True,
                     processes=2)
    prov = json.loads((again.report_dir / "provenance.json").read_text())
    assert all(e["cached"] for e in prov["analyses"].values())
    assert _outputs(again.report_dir) == one


@needs_fork
@pytest.mark.parametrize("how, kind", [("probing", ConfigError), ("other", AnalysisError)])
def test_an_error_in_a_worker_is_the_serial_error(tmp_path, folder, how, kind):
    analyses = f'[analyses.ctrl_a]\n[analyses.boom]\nhow = "{how}"\n[analyses.ctrl_b]\n'
    errors = []
    for processes in (1, 2):
        with pytest.raises(kind) as info:
            run_spec(_spec(tmp_path, f"{how}{processes}", analyses),
                     out=tmp_path / f"r{processes}", quiet=True, processes=processes)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert errors[0][1].startswith("analysis 'boom'")


@needs_fork
def test_a_killed_worker_is_one_error_naming_the_analysis(tmp_path, folder):
    analyses = '[analyses.ctrl_a]\n[analyses.boom]\nhow = "kill"\n'
    with pytest.raises(AnalysisError, match=r"analys[ie]s .*'boom'.* did not finish.*died"):
        run_spec(_spec(tmp_path, "kill", analyses), out=tmp_path / "r", quiet=True,
                 processes=2)
    assert not (tmp_path / "r").exists()  # no report written


def test_when_the_analyses_run_in_parallel(monkeypatch):
    monkeypatch.setattr(parallel, "available_cpus", lambda: 2)
    monkeypatch.setattr(parallel, "fork_available", lambda: True)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # only this run
    assert analysis_processes(None, 13, True) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # a busy machine
    assert analysis_processes(None, 13, True) == 1
    assert analysis_processes(2, 13, True) == 2  # unless asked
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert analysis_processes(None, 1, True) == 1  # one analysis: serial
    assert analysis_processes(None, 13, False) == 1  # multi-threaded run: serial
    assert analysis_processes(4, 3, False) == 3  # asked: at most one per analysis
    assert analysis_processes(1, 13, True) == 1
    monkeypatch.setattr(parallel, "available_cpus", lambda: 1)
    assert analysis_processes(None, 13, True) == 1
    monkeypatch.setattr(parallel, "fork_available", lambda: False)
    assert analysis_processes(4, 13, True) == 1


def test_requested_processes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(parallel.PROCESSES_ENV, raising=False)
    assert requested_processes(None) is None  # decided per run unless asked
    assert requested_processes(3) == 3
    monkeypatch.setenv(parallel.PROCESSES_ENV, "auto")
    assert requested_processes(None) is None
    monkeypatch.setenv(parallel.PROCESSES_ENV, "2")
    assert requested_processes(None) == 2
    assert requested_processes(1) == 1  # the argument wins
    monkeypatch.setenv(parallel.PROCESSES_ENV, "two")
    with pytest.raises(ConfigError, match=r"\$PROBING_PROCESSES = 'two'"):
        requested_processes(None)
    for bad in (0, True, 1.5):
        with pytest.raises(ConfigError, match="processes"):
            requested_processes(bad)
