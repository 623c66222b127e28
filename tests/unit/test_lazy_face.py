"""The package faces import each public name's module on first use: `import probing` loads no
heavy library, and every name of `probing.__all__` still imports as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "captum", "sklearn", "matplotlib")


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_import_probing_and_its_errors_load_no_heavy_library():
    code = ("import sys\nimport probing\nfrom probing import ProbingError, ConfigError\n"
            "import probing.run\nfrom probing.run import discover\n"
            f"print(sorted(set({HEAVY!r}) & set(sys.modules)))")
    assert _fresh(code) == "[]"


def test_every_public_name_imports_from_its_home():
    code = ("import inspect, probing\nnames = list(probing.__all__)\n"
            "exec('from probing import ' + ', '.join(names))\n"
            "bad = [n for n in names if (inspect.isclass(getattr(probing, n)) or "
            "inspect.isfunction(getattr(probing, n))) and not getattr(probing, n).__module__"
            ".startswith('probing.')]\n"
            "missing = sorted(set(names) - set(dir(probing)))\n"
            "print(len(names), bad, missing)")
    n, rest = _fresh(code).split(" ", 1)
    assert int(n) >= 25 and rest == "[] []"


def test_a_submodule_spelled_like_a_public_name_does_not_shadow_it():
    # probing.extract is the function even when the module probing.extract was imported first
    code = ("import probing.extract, probing.run.runner\nimport probing\n"
            "from probing import extract\n"
            "print(callable(extract), probing.extract is extract, "
            "type(probing.probes).__name__)")
    assert _fresh(code) == "True True module"
