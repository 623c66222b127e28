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
    code = ("import types, probing.extract, probing.run.runner\nimport probing\n"
            "from probing import extract\n"
            "print(callable(extract), probing.extract is extract, "
            "isinstance(probing.probes, types.ModuleType))")
    assert _fresh(code) == "True True True"


def test_import_without_hides_an_optional_package_only_while_importing(tmp_path, monkeypatch):
    from probing.lazy import import_without

    (tmp_path / "optdep_x").mkdir()
    (tmp_path / "optdep_x" / "__init__.py").write_text("VALUE = 1\n")
    for name in ("user_a_x", "user_b_x"):
        (tmp_path / f"{name}.py").write_text(
            "try:\n    import optdep_x\n    HAS = True\nexcept ImportError:\n    HAS = False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("optdep_x", "user_a_x", "user_b_x"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert import_without("user_a_x", "optdep_x").HAS is False
    assert "optdep_x" not in sys.modules  # nothing left behind: the package imports later
    import optdep_x

    assert optdep_x.VALUE == 1
    # imported already (a notebook's IPython): nothing is hidden
    assert import_without("user_b_x", "optdep_x").HAS is True
    for name in ("optdep_x", "user_a_x", "user_b_x"):
        sys.modules.pop(name, None)


def test_the_demo_analyses_and_the_probe_sweeps_load_neither_sklearn_nor_scipy_stats():
    # 0.8 s of scikit-learn (and the scipy modules it loads) before the run's clock, gone:
    # only LinearProbe and MDL import scikit-learn
    code = ("import sys\nfrom probing.run import demo_spec_path, get_analysis, load_spec\n"
            "spec = load_spec(demo_spec_path())\n[get_analysis(a) for a in spec.analyses]\n"
            "from probing.probes import fold_sweeps, probe_layers\n"
            "before = sorted({'sklearn', 'scipy.stats'} & set(sys.modules))\n"
            "from probing.probes import LinearProbe\n"
            "print(before, 'sklearn' in sys.modules)")
    assert _fresh(code) == "[] True"
