"""The library uses only public third-party API, and pyproject's floors cover what it uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _third_party_imports():
    for path in sorted((ROOT / "probing").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, []


def test_no_private_third_party_imports():
    private = [f"{path.relative_to(ROOT)}: {module} {names}"
               for path, module, names in _third_party_imports()
               if not module.startswith("probing")
               and (any(part.startswith("_") for part in module.split(".")[1:])
                    or any(n.startswith("_") and not n.startswith("__") for n in names))]
    assert not private, private


def test_scikit_learn_floor_covers_the_estimator_api_used():
    # LinearProbe uses __sklearn_tags__ with sklearn.utils.{Classifier,Regressor}Tags and
    # sklearn.utils.validation.validate_data, all public only since scikit-learn 1.6
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"scikit-learn>=(\d+)\.(\d+)', text)
    assert floor and (int(floor[1]), int(floor[2])) >= (1, 6)
