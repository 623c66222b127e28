"""Runs: a TOML spec resolved, extracted (or the store reused), analysed and reported (the face).

- :mod:`.spec`: run specs (TOML) resolved into frozen dataclasses, analysis parameter checks;
- :mod:`.registry`: discovery of the analyses (``probing.analyses`` and ``PROBING_ANALYSES_PATH``);
- :mod:`.context`: :class:`RunContext`, what an analysis gets;
- :mod:`.compare`: the models a comparison analysis compares (``[[model]]`` or random init);
- :mod:`.cache`: per-analysis results cached in the store;
- :mod:`.runner`: :func:`run_spec`, the in-process runner;
- :mod:`.distributed`: the same work as Dask tasks (imported only when asked for).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_face

if TYPE_CHECKING:  # imported on first use (see _HOMES): `probing list` needs no torch
    from .compare import compared_models
    from .context import RunContext, run_analysis
    from .registry import AnalysisModule, analysis_dirs, discover, get_analysis, load_analysis
    from .runner import RunResult, demo_spec_path, run_spec
    from .spec import RunSpec, load_spec, parse_spec

_HOMES = {
    "compared_models": ".compare",
    **dict.fromkeys(("RunContext", "run_analysis"), ".context"),
    **dict.fromkeys(("AnalysisModule", "analysis_dirs", "discover", "get_analysis",
                     "load_analysis"), ".registry"),
    **dict.fromkeys(("RunResult", "demo_spec_path", "run_spec"), ".runner"),
    **dict.fromkeys(("RunSpec", "load_spec", "parse_spec"), ".spec"),
}

__all__ = [
    "AnalysisModule",
    "RunContext",
    "RunResult",
    "RunSpec",
    "analysis_dirs",
    "compared_models",
    "demo_spec_path",
    "discover",
    "get_analysis",
    "load_analysis",
    "load_spec",
    "parse_spec",
    "run_analysis",
    "run_spec",
]

lazy_face(__name__, _HOMES)
