"""``python -m benchmarks [--quick] [--json PATH] [--only NAME ...] [--markdown]``: one table.

Each module ``benchmarks/NAME.py`` exposing ``run(quick)`` runs in its own subprocess (so one
benchmark's threads, caches and peak memory do not leak into the next); the rows of all of them
are printed as one table (figure, measured, baseline from the same run, ratio, target, met) and
written as JSON together with the machine they came from. A module that fails gets one row
saying so and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Row, format_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = """
import json, sys
from benchmarks.{name} import run
rows = run(quick={quick})
with open(sys.argv[1], "w") as f:
    json.dump([r.as_dict() for r in rows], f)
"""


def modules() -> list[str]:
    """Names of the benchmark modules (files in benchmarks/ defining ``def run(``)."""
    return sorted(p.stem for p in HERE.glob("*.py")
                  if not p.stem.startswith("_") and p.stem != "run_all"
                  and "\ndef run(" in p.read_text())


def run_module(name: str, quick: bool) -> tuple[list[Row], float, str | None]:
    """Rows of one module, its wall time in seconds, and an error message (None when fine)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _CHILD.format(name=name, quick=quick),
                              str(out)], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if res.returncode != 0 or not out.exists():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            return [], seconds, tail[0]
        rows = [Row(**{k: v for k, v in d.items() if k != "met"})
                for d in json.loads(out.read_text())]
    for r in rows:
        r.figure = f"{name}: {r.figure}"
    return rows, seconds, None


def machine() -> dict:
    """Where the table came from."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "load_average_1_5_15": load,
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write the JSON; exit status 1 when one failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    parser.add_argument("--only", nargs="*", default=None, help="module names to run")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    names = modules() if not args.only else args.only
    rows: list[Row] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        got, seconds[name], error = run_module(name, args.quick)
        if error is not None:
            failures[name] = error
            rows.append(Row(f"{name}: FAILED ({error})", float("nan"), None, "-", ""))
        rows.extend(got)
    info = machine()
    print(f"machine: {info['platform']}, {info['cpu_count']} CPU cores, load average "
          f"{info['load_average_1_5_15']}, torch {info['torch']}, GPU {info['cuda']}; "
          f"{'quick' if args.quick else 'full'} mode")
    print(format_table(rows, args.markdown))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": info, "quick": args.quick, "module_seconds": seconds,
            "failures": failures, "rows": [r.as_dict() for r in rows]}, indent=2,
            default=str) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
