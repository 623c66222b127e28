"""Discovery of analyses: one module per study in an ``analyses/`` folder.

An analysis module defines::

    DESCRIPTION = "one line shown by `probing list`"
    PARAMS = {"layers": "all", "max_images": 8}   # parameters and their defaults
    NEEDS = {"kinds": ["cls"], "pooled": "mean", "attention": False}   # what it reads
    def run(ctx: RunContext, **params) -> Section: ...

and optionally ``NAME`` (defaults to the file stem) and ``TITLE``. Folders searched, in order:
those in ``PROBING_ANALYSES_PATH`` (``os.pathsep``-separated), ``./analyses`` in the working
directory, and the ``analyses/`` folder of the probing source checkout. A later folder never
overrides a name found earlier.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import AnalysisError

__all__ = ["AnalysisModule", "analysis_dirs", "discover", "get_analysis"]

PACKAGE_ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


@dataclass(frozen=True)
class AnalysisModule:
    """A discovered analysis."""

    name: str
    title: str
    description: str
    params: dict
    needs: dict
    run: Callable
    path: Path


def analysis_dirs() -> list[Path]:
    """Folders searched for analysis modules, in priority order."""
    dirs = [Path(p) for p in os.environ.get("PROBING_ANALYSES_PATH", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "analyses", PACKAGE_ANALYSES]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"probing_analyses.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise AnalysisError(f"analysis file {path} cannot be imported; check it is Python.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise AnalysisError(f"analysis file {path} failed to import ({exc}); fix the file.") \
            from exc
    return module


def discover() -> dict[str, AnalysisModule]:
    """All analyses found, by name."""
    found: dict[str, AnalysisModule] = {}
    for folder in analysis_dirs():
        for path in sorted(folder.glob("*.py")):
            if path.stem.startswith("_"):
                continue
            module = _load(path)
            if not callable(getattr(module, "run", None)):
                continue
            name = getattr(module, "NAME", path.stem)
            if name in found:
                continue
            found[name] = AnalysisModule(
                name=name,
                title=getattr(module, "TITLE", name.replace("_", " ").capitalize()),
                description=getattr(module, "DESCRIPTION", (module.__doc__ or "").strip()
                                    .split("\n")[0]),
                params=dict(getattr(module, "PARAMS", {})),
                needs=dict(getattr(module, "NEEDS", {})),
                run=module.run,
                path=path,
            )
    return found


def get_analysis(name: str, available: dict[str, AnalysisModule] | None = None) -> AnalysisModule:
    """The analysis called ``name``; AnalysisError with a suggestion when unknown."""
    import difflib

    available = available if available is not None else discover()
    if name not in available:
        close = difflib.get_close_matches(name, list(available), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AnalysisError(
            f"analysis {name!r} is unknown; `probing list` shows the available ones.{hint}"
        )
    return available[name]
