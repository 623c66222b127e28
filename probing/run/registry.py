"""Discovery of analyses: one module per study in an ``analyses/`` folder.

An analysis module defines::

    DESCRIPTION = "one line shown by `probing list`"
    NEEDS = {"kinds": ["cls"], "pooled": "mean", "attention": False}   # what it reads

    def run(ctx: RunContext, layers: Annotated[str | int | list, Layers()] = "all",
            max_images: Annotated[int, Interval(int, 1, None)] = 8, debiased: bool = False
            ) -> Section: ...

and optionally ``NAME`` (defaults to the file stem) and ``TITLE``. Its parameters are those of
``run`` after the context, written once: each has a default (the value when a spec leaves the key
out) and a rule (:mod:`probing.constraints`) that spec values must follow, taken from the
``typing.Annotated`` metadata, or else from the annotation itself (``bool``, ``str``, ``int``,
``float``, ``dict``, ``Literal[...]``, ``list[...]``, ``X | None``). A parameter without a
default or a rule, ``*args`` / ``**kwargs``, a default its rule rejects, or a leftover
``PARAMS`` dict is an :class:`~probing.errors.AnalysisError` naming the file. The context's
annotation is never evaluated, so ``RunContext`` may be imported under ``TYPE_CHECKING`` only.

Folders searched, in order: those in ``PROBING_ANALYSES_PATH`` (``os.pathsep``-separated), then
the analyses installed with probing (the repository's top-level ``analyses/`` folder, installed
as ``probing.analyses``). A later folder never overrides a name found earlier. The working
directory is never searched: code of an untrusted folder runs only when the user names that
folder explicitly.

:func:`catalog` lists the same analyses from their files' source (``NAME``, ``TITLE``,
``DESCRIPTION``, the docstring), importing none of them: ``probing list`` loads no torch.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, Union

from ..constraints import Interval, Is, Items, Options, Param, Rule, accepts, describe
from ..errors import AnalysisError

__all__ = ["AnalysisModule", "AnalysisSummary", "analysis_dirs", "analysis_params", "catalog",
           "discover", "get_analysis", "load_analysis"]


def _installed_analyses() -> Path:
    """The analyses that came with this probing: in a source checkout (the package's folder
    sits beside ``pyproject.toml`` and ``analyses/``) that ``analyses/`` folder; in an install,
    the ``probing.analyses`` package (the repository's ``analyses/`` mapped into the wheel)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "analyses").is_dir():
        return checkout / "analyses"
    try:
        spec = importlib.util.find_spec("probing.analyses")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return checkout / "analyses"


#: The folder of the analyses (and ``demo.toml``) installed with probing.
PACKAGE_ANALYSES = _installed_analyses()


@dataclass(frozen=True)
class AnalysisModule:
    """A discovered analysis.

    ``params`` maps each parameter of ``run`` (after the context) to its
    :class:`~probing.constraints.Param`: the signature's default and the rule spec values
    are checked against (:func:`probing.run.spec.check_params`).
    """

    name: str
    title: str
    description: str
    params: dict[str, Param]
    needs: dict
    run: Callable
    path: Path

    @property
    def defaults(self) -> dict[str, Any]:
        """Each parameter's default, by name."""
        return {k: p.default for k, p in self.params.items()}

    @property
    def rules(self) -> dict[str, Any]:
        """Each parameter's rule, by name."""
        return {k: p.rule for k, p in self.params.items()}


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


_NO_RULE = object()


def _rule_of(tp: Any) -> Any:
    """The rule a parameter annotation states: its ``Annotated`` rule, else one derived from
    the type (``_NO_RULE`` for a type that states none, such as ``Any`` or a bare ``list``)."""
    if typing.get_origin(tp) is Annotated:
        given = [m for m in tp.__metadata__ if isinstance(m, (Rule, tuple))]
        if len(given) == 1:
            return given[0]
        return _NO_RULE if given else _rule_of(typing.get_args(tp)[0])
    if tp is type(None):
        return None
    if tp in (int, float):
        return Interval(tp)
    if tp in (bool, str, dict):
        return Is(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return Options(*args)
    if origin in (Union, types.UnionType):
        rules = tuple(_rule_of(a) for a in args)
        return _NO_RULE if _NO_RULE in rules else rules
    if origin in (list, tuple, Sequence) and args and (origin is not tuple or (
            len(args) == 2 and args[1] is Ellipsis)):
        item = _rule_of(args[0])
        return _NO_RULE if item is _NO_RULE else Items(item)
    return _NO_RULE


def _hints(run: Callable, names: list[str], path: Path) -> dict[str, Any]:
    """The resolved annotations of ``run``'s parameters ``names`` (strings under ``from
    __future__ import annotations`` included; the context's annotation is not resolved, so it
    may name a type imported only for type checkers)."""
    target = inspect.unwrap(run)
    annotations = getattr(target, "__annotations__", {})
    holder = types.SimpleNamespace(
        __annotations__={n: annotations[n] for n in names if n in annotations},
        __globals__=getattr(target, "__globals__", {}))
    try:
        return typing.get_type_hints(holder, include_extras=True)
    except Exception as exc:
        raise AnalysisError(f"the parameter annotations of run() in {path} cannot be resolved "
                            f"({exc}); import every name they use at the top of the file.") \
            from exc


def analysis_params(run: Callable, path: Path) -> dict[str, Param]:
    """The parameters of an analysis's ``run(ctx, ...)``, from its signature.

    Parameters
    ----------
    run : callable
        The analysis's ``run``; its first parameter is the context, the others its parameters.
    path : Path
        The analysis file (named in errors).

    Returns
    -------
    dict
        Parameter name -> :class:`~probing.constraints.Param` (the default and the rule).

    Raises
    ------
    AnalysisError
        A parameter without a default, without a rule, with a default its rule rejects, or
        ``*args`` / ``**kwargs`` / positional-only parameters.
    """
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"run in {path} has no readable signature ({exc}); define it with "
                            "def run(ctx, ...).") from exc
    first, *rest = list(signature.parameters.values()) or [None]
    if first is None or first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        raise AnalysisError(f"run() in {path} must take the context first: def run(ctx, ...).")
    for p in rest:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            star = "**" if p.kind is p.VAR_KEYWORD else "*"
            raise AnalysisError(
                f"run() in {path} takes {star}{p.name}, which hides its parameters; list each "
                f"one with its default instead, e.g. def run(ctx, cv: int = 5).")
        if p.kind is p.POSITIONAL_ONLY:
            raise AnalysisError(f"parameter {p.name!r} of run() in {path} is positional-only; "
                                "remove the '/' (parameters are passed by name).")
        if p.default is p.empty:
            raise AnalysisError(f"parameter {p.name!r} of run() in {path} has no default; give "
                                f"it one in the signature ({p.name}: type = value).")
    hints = _hints(run, [p.name for p in rest], path)
    out = {}
    for p in rest:
        rule = _rule_of(hints[p.name]) if p.name in hints else _NO_RULE
        if rule is _NO_RULE:
            raise AnalysisError(
                f"parameter {p.name!r} of run() in {path} states no rule; annotate it with a "
                f"type (bool, str, int, float, list[str], ...) or a rule, e.g. {p.name}: "
                "Annotated[int, Interval(int, 1, None)].")
        if not accepts(rule, p.default):
            raise AnalysisError(
                f"the default {p.default!r} of parameter {p.name!r} of run() in {path} breaks "
                f"its rule ({describe(rule)}); fix the default or the annotation.")
        out[p.name] = Param(p.default, rule)
    return out


def _module(path: Path) -> AnalysisModule | None:
    module = load_analysis(path)
    if not callable(getattr(module, "run", None)):
        return None
    if hasattr(module, "PARAMS"):
        raise AnalysisError(
            f"analysis file {path} defines PARAMS, which is no longer read; move each parameter "
            "into run()'s signature with its default and rule, e.g. def run(ctx, cv: "
            "Annotated[int, Interval(int, 2, None)] = 5).")
    name = getattr(module, "NAME", path.stem)
    return AnalysisModule(
        name=name,
        title=getattr(module, "TITLE", name.replace("_", " ").capitalize()),
        description=getattr(module, "DESCRIPTION",
                            (module.__doc__ or "").strip().split("\n")[0]),
        params=analysis_params(module.run, path),
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


@dataclass(frozen=True)
class AnalysisSummary:
    """What ``probing list`` shows of an analysis, read without running its file."""

    name: str
    title: str
    description: str
    path: Path


def _imported_summary(path: Path) -> AnalysisSummary | None:
    mod = _module(path)
    return None if mod is None else AnalysisSummary(mod.name, mod.title, mod.description, path)


def _summary(path: Path) -> AnalysisSummary | None:
    """Name, title and description of the analysis in ``path`` from its source text (the
    literal ``NAME`` / ``TITLE`` / ``DESCRIPTION`` and the docstring), so listing imports
    neither the file nor what it imports (torch, captum, ...). A file whose values are not
    literals is imported (:func:`_module`); None for a file without a top-level ``run``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise AnalysisError(f"analysis file {path} cannot be read ({exc}); fix the file.") \
            from exc
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "run"
               for n in tree.body):
        bound = any(isinstance(n, ast.ImportFrom) and any((a.asname or a.name) == "run"
                                                          for a in n.names)
                    or isinstance(n, ast.Assign) and any(isinstance(t, ast.Name)
                                                         and t.id == "run" for t in n.targets)
                    for n in tree.body)
        if not bound:
            return None  # a helper module
        return _imported_summary(path)  # run bound some other way: importing tells
    values: dict[str, Any] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id in ("NAME", "TITLE", "DESCRIPTION"):
                try:
                    values[t.id] = ast.literal_eval(node.value)
                except ValueError:
                    values[t.id] = None  # computed: only importing the file tells
    if any(not isinstance(v, str) for v in values.values()):
        return _imported_summary(path)
    name = values.get("NAME", path.stem)
    return AnalysisSummary(
        name=name,
        title=values.get("TITLE", name.replace("_", " ").capitalize()),
        description=values.get("DESCRIPTION",
                               (ast.get_docstring(tree) or "").strip().split("\n")[0]),
        path=path)


def catalog() -> dict[str, AnalysisSummary]:
    """Every analysis found, by name, as :func:`discover` finds them but read from the files'
    source (``probing list`` imports no analysis, hence no torch). A file that cannot be read
    is skipped with a warning."""
    import warnings

    found: dict[str, AnalysisSummary] = {}
    for path in _files():
        try:
            summary = _summary(path)
        except AnalysisError as exc:
            warnings.warn(str(exc), stacklevel=2)
            continue
        if summary is not None and summary.name not in found:
            found[summary.name] = summary
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
