"""Discovery of analyses: one module per study in an ``analyses/`` folder.

An analysis module defines::

    DESCRIPTION = "one line shown by `probing list`"
    PARAMS = {"layers": "all", "max_images": 8}   # parameters and their defaults
    NEEDS = {"kinds": ["cls"], "pooled": "mean", "attention": False}   # what it reads
    def run(ctx: RunContext, **params) -> Section: ...

and optionally ``NAME`` (defaults to the file stem) and ``TITLE``. Folders searched, in order:
those in ``PROBING_ANALYSES_PATH`` (``os.pathsep``-separated), then the analyses installed with
probing (the repository's top-level ``analyses/`` folder, installed as ``probing.analyses``). A
later folder never overrides a name found earlier. The working directory is never searched:
code of an untrusted folder runs only when the user names that folder explicitly.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import AnalysisError

__all__ = ["AnalysisModule", "analysis_dirs", "discover", "get_analysis", "load_analysis"]



def _installed_analyses() -> Path:
    """The analyses installed with probing: ``probing.analyses`` in an install (it maps the
    repository's ``analyses/`` folder), or ``analyses/`` beside the package in a source tree."""
    try:
        spec = importlib.util.find_spec("probing.analyses")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(__file__).resolve().parents[2] / "analyses"


#: The folder of the analyses (and ``demo.toml``) installed with probing.
PACKAGE_ANALYSES = _installed_analyses()


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
    dirs.append(PACKAGE_ANALYSES)
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def load_analysis(path: Path) -> ModuleType:
    """Import the analysis module in file ``path`` (AnalysisError when it fails)."""
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


def _module(path: Path) -> AnalysisModule | None:
    module = load_analysis(path)
    if not callable(getattr(module, "run", None)):
        return None
    name = getattr(module, "NAME", path.stem)
    return AnalysisModule(
        name=name,
        title=getattr(module, "TITLE", name.replace("_", " ").capitalize()),
        description=getattr(module, "DESCRIPTION",
                            (module.__doc__ or "").strip().split("\n")[0]),
        params=dict(getattr(module, "PARAMS", {})),
        needs=dict(getattr(module, "NEEDS", {})),
        run=module.run,
        path=path,
    )


def _files() -> list[Path]:
    return [p for folder in analysis_dirs() for p in sorted(folder.glob("*.py"))
            if not p.stem.startswith("_")]


def discover(strict: bool = False) -> dict[str, AnalysisModule]:
    """Every analysis found, by name (imports every analysis file).

    Parameters
    ----------
    strict : bool
        Raise on a file that fails to import; otherwise it is skipped with a warning, so one
        broken file does not hide the others (``probing list``).
    """
    import warnings

    found: dict[str, AnalysisModule] = {}
    for path in _files():
        try:
            mod = _module(path)
        except AnalysisError as exc:
            if strict:
                raise
            warnings.warn(str(exc), stacklevel=2)
            continue
        if mod is not None and mod.name not in found:
            found[mod.name] = mod
    return found


def get_analysis(name: str, available: dict[str, AnalysisModule] | None = None) -> AnalysisModule:
    """The analysis called ``name``, importing only its file when the file is named after it.

    Raises
    ------
    AnalysisError
        When no analysis has that name (with a "did you mean" suggestion).
    """
    import difflib

    if available is None:
        for path in _files():
            if path.stem == name:
                mod = _module(path)
                if mod is not None and mod.name == name:
                    return mod
        available = discover()
    if name not in available:
        close = difflib.get_close_matches(name, list(available), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AnalysisError(
            f"analysis {name!r} is unknown; `probing list` shows the available ones.{hint}"
        )
    return available[name]
