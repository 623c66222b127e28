"""Start-up wall time of ``probing --help`` and ``probing list``, in subprocesses.

Each command runs in a fresh interpreter (``python -m probing.cli``), five times; the figure is
the median. ``--help`` is compared with its 1 s budget (the baseline column holds the budget,
not a measurement); ``list`` with the same budget; both also with the time a bare ``import
torch`` takes in the same run, which every command paid before the package face was lazy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import Row, print_rows

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 1.0
REPEAT = 5


def _median_wall(args: list[str], repeat: int = REPEAT) -> float:
    """Median wall time in seconds of ``python ARGS`` in a fresh interpreter (one warm-up)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        res = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"python {' '.join(args)} failed: {res.stderr.strip()[-500:]}")
        if i:  # the first run warms the file cache
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(quick: bool = False) -> list[Row]:
    """``probing --help`` and ``probing list`` (the same in quick mode: they take seconds)."""
    torch_s = _median_wall(["-c", "import torch"])
    help_s = _median_wall(["-m", "probing.cli", "--help"])
    list_s = _median_wall(["-m", "probing.cli", "list"])
    return [
        Row("probing --help, median of 5 (baseline: the 1 s budget)", help_s, BUDGET_S, "s",
            "<= 1.0"),
        Row("probing list, median of 5 (baseline: the 1 s budget)", list_s, BUDGET_S, "s",
            "<= 1.0"),
        Row("probing --help vs a bare `import torch`", help_s, torch_s, "s", "<= 0.5"),
        Row("probing list vs a bare `import torch`", list_s, torch_s, "s", "<= 0.5"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
