"""Wall time of ``probing demo`` (fresh store) and of its rerun (store reused), in subprocesses.

The command runs in an empty temporary working directory, so its store is new; the rerun finds
the complete store and the up-to-date report and recomputes nothing; a third run of the demo spec
with one parameter of one analysis changed (``[analyses.cka] k``) recomputes that analysis only
(the others come from the per-analysis cache) and writes the report again. The fresh run is compared
with the 90 s budget of the design (the baseline column holds the budget, not a measurement);
the rerun with the fresh run of the same benchmark. The fresh run's CPU time (user + sys of the
command and the worker processes it waited for) is compared with 35 s, a proxy for the issue's
20 s wall on 2 idle cores (2 cores give 40 CPU s in 20 s, less the stages that run on one): on a
shared, loaded machine the wall time measures the other users, the CPU time still measures us.
Figure writing (the seconds the analysis workers spent drawing figures, shared among the
workers that drew side by side, plus the report stage's figure work:
``Report.figure_seconds``) is a share of the fresh run's wall time, as the issue states its
target (15% of ``probing demo``'s wall time); a second row counts the whole report stage
(tables, pages and JSON as well), the measure of the earlier benchmark.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Row, print_rows

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 90.0
CPU_BUDGET_S = 35.0


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _demo(cwd: Path, spec: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one ``probing`` command in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = ["demo"] if spec is None else ["run", str(spec)]
    t, cpu = time.perf_counter(), _children_cpu()
    res = subprocess.run([sys.executable, "-m", "probing.cli", "--quiet", *command, "--out",
                          str(cwd / "report")], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=1800)
    seconds, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if res.returncode != 0:
        raise RuntimeError(f"probing demo failed: {res.stderr.strip()[-2000:]}")
    return seconds, cpu


def run(quick: bool = False) -> list[Row]:
    """``probing demo`` fresh and rerun (the same in quick mode: the demo is the figure)."""
    from probing.run import demo_spec_path

    with tempfile.TemporaryDirectory() as tmp:
        fresh, fresh_cpu = _demo(Path(tmp))
        prov = json.loads((Path(tmp) / "report" / "provenance.json").read_text())
        stages = prov["timings_s"]
        # figure writing: the figures the analysis workers drew (their seconds shared among
        # the workers, which drew side by side), and the report stage's figure work (its
        # tables and pages apart); the whole report stage for the wider measure
        in_workers = stages.get("figures_in_workers", 0.0) / max(
            1, prov.get("analysis_processes", 1))
        figures = stages["report_figures"] + in_workers
        report_and_figures = stages["report"] + in_workers
        again, _ = _demo(Path(tmp))
        text = demo_spec_path().read_text()
        changed = re.sub(r"(\[analyses\.cka\](?:\n(?!\[).*)*?\nk = )\d+", r"\g<1>5", text)
        if changed == text:
            raise RuntimeError("the demo spec has no [analyses.cka] k to change")
        spec = Path(tmp) / "changed.toml"
        spec.write_text(changed)
        one, _ = _demo(Path(tmp), spec)
    return [
        Row("probing demo, fresh store (baseline: the 90 s budget)", fresh, BUDGET_S, "s",
            "<= 1.0"),
        Row("probing demo, fresh store: CPU s, user + sys with workers (baseline: 35 s)",
            fresh_cpu, CPU_BUDGET_S, "s", "<= 1.0"),
        # the issue's measure: a share of `probing demo`'s wall time (what the user waits,
        # interpreter start and imports included; the run's own clock, stages["total"],
        # starts after them and is in provenance.json)
        Row("demo figure writing (figures drawn in analysis workers / workers + the report "
            "stage's figure files) vs the fresh demo's wall time", figures, fresh, "s",
            "<= 0.15"),
        Row("  the same with the whole report stage (tables, pages) vs the fresh demo's wall "
            "time", report_and_figures, fresh, "s", ""),
        Row("probing demo rerun (store reused) vs fresh", again, fresh, "s", "<= 1.0"),
        Row("demo spec, one cka parameter changed (others cached) vs fresh", one, fresh, "s",
            "<= 1.0"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
