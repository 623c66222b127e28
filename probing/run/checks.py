"""Checks of a run against its data, model and capture, before anything is extracted.

Every analysis parameter is checked against what the run will have, from the rule its
``run()`` signature states (:mod:`probing.constraints`), never from the analysis's name:

- a :class:`~probing.constraints.LabelColumn` names one of the data source's label columns
  (the message lists label columns only, never ``image_id``, ``row``, ``col`` or ``token``);
- a :class:`~probing.constraints.Layers` selection fits the model's blocks, and the layers it
  names are captured;
- a list of token kinds (``Items(Options("cls", "pooled", ...))``) asks only for kinds the
  capture holds (kinds the model lacks are the analysis's to skip).

So a typo such as ``target = "shpe"`` fails in seconds, not after the whole extraction.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..constraints import Items, LabelColumn, Layers, Name, Options
from ..data import ImageSource
from ..errors import ConfigError, LayoutError
from ..frames import label_columns
from ..layout import TOKEN_KINDS
from ..models import LoadedModel
from ..selection import resolve_layers, to_selection
from .registry import AnalysisModule

__all__ = ["check_columns", "check_layout"]

_KINDS = frozenset(TOKEN_KINDS)


def _alternatives(rule: Any) -> tuple:
    return rule if isinstance(rule, tuple) else (rule,)


def _is_kinds(rule: Any) -> bool:
    """Whether ``rule`` is a list of token kinds (``Items(Options("cls", "pooled"))``)."""
    return isinstance(rule, Items) and isinstance(rule.item, Options) \
        and bool(rule.item.values) and set(rule.item.values) <= _KINDS


def _check_column(name: Name, value: Any, rule: LabelColumn, columns: list[str],
                  source: ImageSource) -> None:
    if not isinstance(value, str) or rule.allows(value, columns):
        return
    close = difflib.get_close_matches(value, [*columns, *rule.also], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(columns) or "(none: the source has no labels)"
    raise ConfigError(f"{name.show(value)} is not a label column of the data source "
                      f"{getattr(source, 'name', '')}; pick one of {listed}.{hint}")


def _check_layers(name: Name, value: Any, rule: Layers, loaded: LoadedModel,
                  captured: frozenset, capture_layers: Any) -> None:
    if value is None or isinstance(value, str) and value in rule.extra:
        return
    try:
        labels = resolve_layers(value, loaded.depth)
    except LayoutError as exc:
        raise LayoutError(f"{name.show(value)} does not fit model {loaded.name} "
                          f"({loaded.depth} blocks): {exc}") from exc
    items = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, str) and v == "all" for v in items):
        return  # "all" reads every captured layer
    missing = sorted(set(labels) - captured)
    if missing:
        shown = ", ".join(map(str, to_selection(missing)))
        raise ConfigError(
            f"{name.show(value)} asks for layers {shown}, which the capture leaves out "
            f"({Name.key('layers', 'capture').show(capture_layers)}); add them to [capture] "
            f"layers or pick captured layers.")


def _check_kinds(name: Name, value: Any, loaded: LoadedModel, capture: Mapping) -> None:
    for kind in value if isinstance(value, (list, tuple)) else [value]:
        if kind == "pooled":
            if not capture.get("pooled"):
                raise ConfigError(f"{name.show(value)} reads pooled vectors, which the capture "
                                  'leaves out; write pooled = "mean" in [capture].')
        elif kind in loaded.layout.kinds and kind not in capture["kinds"]:
            raise ConfigError(
                f"{name.show(value)} reads {kind} tokens, which the capture leaves out "
                f"({Name.key('kinds', 'capture').show(list(capture['kinds']))}); add "
                f'"{kind}" to [capture] kinds.')


def _ruled(modules: Iterable[AnalysisModule], params: Mapping[str, dict]):
    """``(name, value, rule)`` of every alternative rule of every analysis parameter."""
    for m in modules:
        for key, param in m.params.items():
            value, name = params[m.name][key], Name.key(key, f"analyses.{m.name}")
            for rule in _alternatives(param.rule):
                yield name, value, rule


def check_columns(modules: Iterable[AnalysisModule], params: Mapping[str, dict],
                  source: ImageSource) -> None:
    """Check the analyses' label-column parameters against the source (before the model is
    even loaded).

    Parameters
    ----------
    modules : iterable of AnalysisModule
        The spec's analyses.
    params : mapping
        Analysis name -> its parameter values (:func:`probing.run.spec.check_params`).
    source : ImageSource
        The run's data (its label columns).

    Raises
    ------
    ConfigError
        Naming ``[analyses.NAME] key = value``, the label columns and the nearest one.
    """
    columns = label_columns(source.labels().columns)
    for name, value, rule in _ruled(modules, params):
        if isinstance(rule, LabelColumn):
            _check_column(name, value, rule, columns, source)


def check_layout(modules: Iterable[AnalysisModule], params: Mapping[str, dict],
                 loaded: LoadedModel, capture: Mapping) -> None:
    """Check the analyses' layer and kind parameters against the model and the capture,
    before extraction.

    Parameters
    ----------
    modules : iterable of AnalysisModule
        The spec's analyses.
    params : mapping
        Analysis name -> its parameter values.
    loaded : LoadedModel
        The model (its depth and token kinds).
    capture : mapping
        The capture settings (``layers``, ``kinds``, ``pooled``, ``attention``).

    Raises
    ------
    ConfigError, LayoutError
        One sentence naming ``[analyses.NAME] key = value`` and the fix.
    """
    captured = frozenset(resolve_layers(capture["layers"], loaded.depth))
    for name, value, rule in _ruled(modules, params):
        if isinstance(rule, Layers):
            _check_layers(name, value, rule, loaded, captured, capture["layers"])
        elif _is_kinds(rule) and isinstance(value, (list, tuple)):
            _check_kinds(name, value, loaded, capture)
