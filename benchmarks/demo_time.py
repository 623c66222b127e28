"""Wall time of ``probing demo`` (fresh store) and of its rerun (store reused), in subprocesses.

The command runs in an empty temporary working directory, so its store is new; the rerun finds
the complete store and recomputes only the analyses and the report. The fresh run is compared
with the 90 s budget of the design (the baseline column holds the budget, not a measurement);
the rerun with the fresh run of the same benchmark.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Row, print_rows

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 90.0


def _demo(cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "probing.cli", "--quiet", "demo", "--out",
                          str(cwd / "report")], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=1800)
    seconds = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"probing demo failed: {res.stderr.strip()[-2000:]}")
    return seconds


def run(quick: bool = False) -> list[Row]:
    """``probing demo`` fresh and rerun (the same in quick mode: the demo is the figure)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _demo(Path(tmp))
        again = _demo(Path(tmp))
    return [
        Row("probing demo, fresh store (baseline: the 90 s budget)", fresh, BUDGET_S, "s",
            "<= 1.0"),
        Row("probing demo rerun (store reused) vs fresh", again, fresh, "s", "<= 1.0"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
