"""Run specs: TOML files resolved into frozen dataclasses.

Format (every key optional except ``[analyses]``)::

    title = "probing demo"
    seed = 0                      # every random step of every analysis derives from it
    output = "reports/demo"       # report directory (relative to the working directory)
    store = ".probing/stores"     # stores: one sub-folder per model + data + capture
    style = { "font.size" = 8 }   # matplotlib rc overrides for every figure
    formats = ["png", "svg"]      # figure files; add "pdf" for LaTeX (PNG is always written)

    [model]                       # or several [[model]] entries: see "Several models" below
    spec = "demo"                 # timm name, checkpoint path or "demo"
    name = "demo"                 # label in reports (default: derived from spec)
    pretrained = true             # timm names: load cached pretrained weights
    arch = "vit_small_patch16_224"  # checkpoints: the timm architecture
    mapping = "lucidrains"        # foreign state dicts: the key mapping
    mapping_options = {}          # options of the mapping
    preprocessing = {}            # replace keys of the model's preprocessing: mean, std,
                                  # interpolation, crop_pct, crop_mode (probing.preprocessing)
    options = {}                  # extra timm.create_model keyword arguments
    device = "cpu"

    [data]
    source = "shapes"             # "shapes", "digits", an image folder, a CSV/parquet manifest
    n = 512                       # first n images (all when absent), after `where`
    options = { seed = 0 }        # options of the source (e.g. on_error = "skip")
    where = "label == 1"          # keep only matching images: a pandas query over the
                                  # source's label columns, or a list of image ids
    selection = "stratified"      # how analyses choose their "n images": "stratified"
                                  # (round-robin over classes, seeded), "shuffled", "first"
    stratify = "label"            # the class column of "stratified" (default: label)

    [capture]                     # merged with what the chosen analyses need
    layers = "all"
    kinds = ["cls", "patch"]
    pooled = "mean"
    attention = false
    batch_size = 64
    dtype = "float32"
    shard_size = 256
    autocast = "bf16"             # optional mixed precision on CUDA ("bf16" or "fp16")
    num_workers = 0               # DataLoader worker processes for decoding images

    [analyses.embedding_map]      # one table per analysis, keys are its parameters
    layers = [0, 2, 4]

Several models: ``[[model]]`` entries (a TOML array of tables, each with the keys of
``[model]``) instead of one ``[model]`` table::

    [[model]]
    name = "trained"              # unique; default: derived from spec (see model_name)
    spec = "demo"

    [[model]]
    name = "random-init"
    spec = "vit_tiny_patch16_224"
    pretrained = false

Every model is extracted over the same data with the same capture settings, into its own store.
The first entry is the *primary* model: every single-model analysis runs on it, exactly as on
the one model of a ``[model]`` spec; the comparison analyses (``compare_*``) use them all
(:attr:`probing.run.RunContext.models`). :attr:`RunSpec.models` lists every model (one for a
``[model]`` spec), :attr:`RunSpec.model` is the primary.

Unknown keys, wrong types and values out of range raise :class:`~probing.errors.ConfigError`
naming the key (with a "did you mean" suggestion for unknown keys and a valid value for bad ones),
when the spec is read: before any model is loaded or image extracted. The ranges are declared
once, as rules (:mod:`probing.constraints`) in the ``rule`` metadata of the fields below and in the
signature of each analysis's ``run`` (see :mod:`probing.run.registry`).
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from ..constraints import (
    MAX_COUNT,
    SEED,
    Interval,
    Items,
    Layers,
    Name,
    Options,
    Param,
    check,
)
from ..errors import ConfigError
from ..imageselect import HOW

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CaptureSpec", "DataSpec", "ModelSpec", "RunSpec", "check_params", "check_style",
           "dump_toml", "load_spec", "model_name", "parse_spec", "spec_models"]


def _ruled(default: Any, rule: Any, example: Any = None) -> Any:
    """A dataclass field whose values :func:`_build` checks against ``rule`` (``example``: the
    valid value that messages suggest; the default when omitted)."""
    meta = {"rule": rule} if example is None else {"rule": rule, "example": example}
    return field(default=default, metadata=meta)


def _ruled_list(default: list, rule: Any) -> Any:
    return field(default_factory=lambda: list(default), metadata={"rule": rule})


_COUNT = Interval(int, 1, MAX_COUNT)


@dataclass(frozen=True)
class ModelSpec:
    """The ``[model]`` table (or one ``[[model]]`` entry)."""

    spec: str = "demo"
    name: str | None = None
    pretrained: bool = True
    arch: str | None = None
    mapping: str | None = None
    mapping_options: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    device: str = "cpu"


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` table."""

    source: str = "shapes"
    n: int | None = _ruled(None, (Interval(int, 1, None), None), example=512)
    options: dict = field(default_factory=dict)
    where: str | list | None = None
    selection: str = _ruled("stratified", Options(*HOW))
    stratify: str | None = None


@dataclass(frozen=True)
class CaptureSpec:
    """The ``[capture]`` table."""

    layers: str | list = _ruled("all", Layers())
    kinds: list = _ruled_list(["cls", "patch"],
                              Items(Options("cls", "reg", "dist", "patch", "pooled")))
    pooled: str | None = _ruled("mean", (Options("mean", "model"), None))
    attention: bool = False
    batch_size: int = _ruled(64, _COUNT)
    dtype: str = _ruled("float32", Options("float32", "float16"))
    shard_size: int = _ruled(256, _COUNT)
    autocast: str | None = _ruled(None, (Options("bf16", "fp16"), None))
    num_workers: int = _ruled(0, Interval(int, 0, MAX_COUNT))


@dataclass(frozen=True)
class RunSpec:
    """A whole run spec."""

    title: str = "probing report"
    seed: int = _ruled(0, SEED)
    output: str = "reports/run"
    store: str = ".probing/stores"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    capture: CaptureSpec = field(default_factory=CaptureSpec)
    analyses: dict = field(default_factory=dict)
    style: dict = field(default_factory=dict)
    formats: list = _ruled_list(["png", "svg"], Items(Options("png", "svg", "pdf")))
    source_path: str | None = None
    #: Every model of the spec, names resolved, the primary (``model``) first.
    models: tuple = ()


#: RunSpec fields no spec key sets (filled by parse_spec).
_DERIVED = ("source_path", "models")
_TABLES = {"model": ModelSpec, "data": DataSpec, "capture": CaptureSpec}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(options)}."


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (list, dict, str):
        return isinstance(value, tp)
    return True


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {type(None): "absent", str: "a string", int: "an integer", bool: "true/false",
            float: "a number", list: "a list", dict: "a table"}.get(tp, str(tp))


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, not {type(table).__name__}; write [{where}].")
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in fields(cls) if f.name not in _DERIVED}
    names = list(declared)
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key} in the run spec.{_suggest(key, names)}")
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"key {where}.{key} is {value!r} but must be {_type_name(hints[key])}; fix its "
                "value in the run spec."
            )
        meta = declared[key].metadata
        if "rule" in meta:
            example = meta.get("example", getattr(cls(), key))
            check(Name.key(key, None if where == "spec" else where), value, meta["rule"],
                  example)
        kwargs[key] = value
    return cls(**kwargs)


def parse_spec(data: dict, source_path: str | None = None) -> RunSpec:
    """Resolve a parsed TOML document into a :class:`RunSpec`."""
    top = {k: v for k, v in data.items() if k not in _TABLES and k not in ("analyses", "style")}
    spec = _build(RunSpec, top, "spec") if top else RunSpec()
    tables = {k: _build(cls, data.get(k, {}), k) for k, cls in _TABLES.items() if k != "model"}
    models = _models(data.get("model", {}))
    analyses = data.get("analyses")
    if not analyses:
        raise ConfigError(
            "the run spec has no analyses; add at least one table such as "
            "[analyses.embedding_map] (probing list shows them)."
        )
    if not isinstance(analyses, dict) or not all(isinstance(v, dict) for v in analyses.values()):
        raise ConfigError("analyses must be tables, one per analysis: [analyses.NAME] key = value.")
    style = data.get("style", {})
    if not isinstance(style, dict):
        raise ConfigError("style must be a table of matplotlib rc settings: style = { ... }.")
    return replace(spec, **tables, model=models[0], models=models, analyses=dict(analyses),
                   style=check_style(style), source_path=source_path)


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")


def model_name(model: ModelSpec) -> str:
    """A model's label: its ``name``, else derived from ``spec``: the file stem of a checkpoint
    path, the timm name (with ``-random-init`` when ``pretrained = false``), or ``demo``."""
    if model.name is not None:
        return model.name
    text = model.spec
    if "/" in text or "\\" in text or Path(text).suffix.lower() in _WEIGHT_SUFFIXES:
        return Path(text).stem or text
    return text if model.pretrained or text == "demo" else f"{text}-random-init"


def _models(entries: Any) -> tuple[ModelSpec, ...]:
    """The ``[model]`` table or the ``[[model]]`` entries as ModelSpecs with unique names."""
    if not isinstance(entries, list):
        one = _build(ModelSpec, entries, "model")
        return (replace(one, name=model_name(one)),)
    if not entries:
        raise ConfigError("model is an empty list; write one [model] table or [[model]] "
                          "entries with spec = ...")
    out: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"model[{i}]"
        one = _build(ModelSpec, entry, where)
        name = model_name(one)
        if not name.strip():
            raise ConfigError(f"key {where}.name is empty; give the model a label such as "
                              f"name = \"model{i}\".")
        if name in seen:
            raise ConfigError(
                f"key {where}.name: {name!r} is already the name of model[{seen[name]}]; give "
                f"each [[model]] its own name (e.g. name = \"{name}-{i}\").")
        seen[name] = i
        out.append(replace(one, name=name))
    return tuple(out)


def spec_models(spec: RunSpec) -> tuple[ModelSpec, ...]:
    """Every model of ``spec``, the primary first, each named (a RunSpec built in code without
    ``models`` has its one ``model``)."""
    if spec.models:
        return spec.models
    return (replace(spec.model, name=model_name(spec.model)),)


def check_style(style: dict) -> dict:
    """Check a spec's ``style`` table: matplotlib rc names with values matplotlib accepts.

    Raises
    ------
    ConfigError
        An unknown rc name (with a "did you mean" suggestion) or a value matplotlib rejects.
    """
    if not style:
        return dict(style)
    import matplotlib

    known = list(matplotlib.rcParams.keys())
    for key, value in style.items():
        if key not in matplotlib.rcParams:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "use names such as 'font.size'."
            raise ConfigError(f"style key {key!r} is not a matplotlib rc setting; {hint}")
        try:
            matplotlib.RcParams.validate[key](value)
        except (ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"style {key!r} = {value!r} is not a valid value ({reason}); write e.g. "
                f"{key!r} = {matplotlib.rcParamsDefault[key]!r} in the spec's style table."
            ) from exc
    return dict(style)


def load_spec(path: str | Path) -> RunSpec:
    """Read and resolve a TOML run spec.

    Raises
    ------
    ConfigError
        When the file is missing, not TOML, or has unknown keys or wrong types.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run spec {path} does not exist; pass the path of a .toml file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run spec {path} is not valid TOML ({exc}); fix the syntax.") from exc
    return parse_spec(data, str(path))


def check_params(analysis: str, params: dict, declared: Mapping[str, Param]) -> dict:
    """Merge ``params`` over an analysis's declared parameters, checking each value.

    Parameters
    ----------
    analysis : str
        The analysis's name (named in messages as ``[analyses.NAME]``).
    params : dict
        The values of the spec's ``[analyses.NAME]`` table.
    declared : mapping
        Parameter name -> :class:`~probing.constraints.Param` (default and rule), as
        :func:`probing.run.registry.analysis_params` derives them from ``run()``'s signature
        (``AnalysisModule.params``).

    Returns
    -------
    dict
        Every parameter's value: the spec's where given, else the default.

    Raises
    ------
    ConfigError
        An unknown parameter (with a "did you mean" suggestion) or a value its rule rejects,
        naming ``[analyses.NAME] key`` and a valid value.
    """
    out = {k: p.default for k, p in declared.items()}
    for key, value in params.items():
        if key not in declared:
            raise ConfigError(
                f"unknown parameter {key!r} of analysis {analysis!r}."
                f"{_suggest(key, list(declared))}"
            )
        check(Name.key(key, f"analyses.{analysis}"), value, declared[key].rule,
              declared[key].default)
        out[key] = value
    return out


# ------------------------------------------------------------------- TOML writing
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                                if v is not None) + " }"
    raise ConfigError(f"value {value!r} cannot be written to TOML.")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def dump_toml(spec: RunSpec, analyses: dict | None = None) -> str:
    """The resolved spec as TOML (absent values omitted; analyses with their full parameters)."""
    lines = []
    for f in fields(RunSpec):
        v = getattr(spec, f.name)
        if f.name in _TABLES or f.name in ("analyses", *_DERIVED) or v is None \
                or (f.name == "style" and not v):
            continue
        lines.append(f"{f.name} = {_toml_value(v)}")
    models = spec_models(spec)
    for name in _TABLES:
        subs = models if name == "model" and len(models) > 1 else [getattr(spec, name)]
        for sub in subs:
            lines += ["", f"[[{name}]]" if len(subs) > 1 else f"[{name}]"]
            lines += [f"{f.name} = {_toml_value(getattr(sub, f.name))}" for f in fields(sub)
                      if getattr(sub, f.name) is not None
                      and not (len(subs) == 1 and f.name == "name"
                               and sub.name == model_name(replace(sub, name=None)))]
    for name, params in (analyses if analyses is not None else spec.analyses).items():
        lines += ["", f"[analyses.{_toml_key(name)}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in params.items() if v is not None]
    return "\n".join(lines) + "\n"
