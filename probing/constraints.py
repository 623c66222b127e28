"""Declarative value rules for parameters, flags, spec keys and source options.

A rule states which values a parameter takes, once, next to where the parameter is declared
(the idea of scikit-learn's ``_parameter_constraints``):

- ``Interval(int, 1, None)``: an integer >= 1; ``Interval(float, 0, 1, closed="left")``: a
  number in [0, 1) (booleans and NaN are never numbers);
- ``Options("mean", "max")``: one of these values;
- ``Items(rule, min_len=1)``: a list (or tuple) whose items all follow ``rule``;
- ``Layers("auto")``: a layer selection (``"all"``, a layer number, ``"embed"``, ``"norm"`` or a
  list of those, plus the given extra words);
- ``LabelColumn()``: the name of one of the data source's label columns (checked against the
  source before anything is extracted, :func:`probing.run.checks.check_columns`);
- ``Is(str)``: any value of that type; ``None``: absent;
- a tuple of rules: a value any of them accepts.

:func:`check` raises one sentence naming the parameter as the user spelled it (a CLI flag, a
run-spec key or a Python argument, see :class:`Name`), what it must be and a valid value.
Analyses state their parameters' rules in ``run()``'s signature
(``cv: Annotated[int, Interval(int, 2, None)] = 5``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["MAX_COUNT", "SEED", "Interval", "Is", "Items", "LabelColumn", "Layers", "Name",
           "Options", "Param", "Rule", "accepts", "check", "describe", "example_of", "respell",
           "suggesting"]

MAX_COUNT = 2**31 - 1
"""Upper bound of counts (batch and shard sizes, workers): larger values overflow loaders."""


class Rule:
    """Base class of rules: ``accepts(value)`` and ``describe()``."""

    def accepts(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Interval(Rule):
    """Numbers of type ``kind`` (``int`` or ``float``; ints count as floats) in a range.

    ``low`` / ``high`` of None are unbounded; ``closed`` says which ends belong to the range.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind is int else _is_number(value)):
            return False
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not lo_in)):
            return False
        return not (self.high is not None
                    and (value > self.high or (value == self.high and not hi_in)))

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is None and self.high is None:
            return what
        if self.high is None:
            return f"{what} {'>=' if lo_in else '>'} {_num(self.low)}"
        if self.low is None:
            return f"{what} {'<=' if hi_in else '<'} {_num(self.high)}"
        lo, hi = _num(self.low), _num(self.high)
        if self.kind is int and lo_in and hi_in:
            return f"{what} from {lo} to {hi}"
        return f"{what} in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True, init=False)
class Options(Rule):
    """One of a fixed set of values.

    ``renamed`` maps old spellings to the current value (``{"mean": "pooled"}``): they stay
    refused, and :func:`check`'s message asks "did you mean" the current one.
    """

    values: tuple
    renamed: tuple

    def __init__(self, *values: Any, renamed: dict[Any, Any] | None = None) -> None:
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "renamed", tuple((renamed or {}).items()))

    def accepts(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def describe(self) -> str:
        shown = [repr(v) for v in self.values]
        return shown[0] if len(shown) == 1 else f"one of {', '.join(shown)}"


@dataclass(frozen=True)
class Is(Rule):
    """Any value of a type (``str``, ``bool``, ``dict``)."""

    kind: type

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))

    def describe(self) -> str:
        return {str: "a string", bool: "true or false", dict: "a table"}.get(
            self.kind, f"a {self.kind.__name__}")


@dataclass(frozen=True)
class Items(Rule):
    """A list or tuple whose items follow ``item``, with ``min_len`` to ``max_len`` items."""

    item: Any
    min_len: int = 0
    max_len: int | None = None

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_len
                and (self.max_len is None or len(value) <= self.max_len)
                and all(accepts(self.item, v) for v in value))

    def describe(self) -> str:
        items = _plural(describe(self.item))
        if self.min_len == self.max_len:
            return f"a list of {self.min_len} {items}"
        if self.max_len is not None:
            return f"a list of {self.min_len} to {self.max_len} {items}"
        return f"a {'non-empty ' if self.min_len else ''}list of {items}"


@dataclass(frozen=True, init=False)
class Layers(Rule):
    """A layer selection: ``"all"``, a layer number (negative counts from the end), ``"last"``,
    ``"embed"``, ``"norm"``, a non-empty list of those, or one of the ``extra`` words. Ranges
    depend on the model and are checked where it is known (:func:`probing.hooks.resolve_layers`).
    """

    extra: tuple

    def __init__(self, *extra: str) -> None:
        object.__setattr__(self, "extra", tuple(extra))

    _NAMES = ("all", "last", "embed", "norm")

    def accepts(self, value: Any) -> bool:
        if isinstance(value, str):
            return value in (*self._NAMES, *self.extra)
        if isinstance(value, Sequence) or hasattr(value, "tolist"):  # lists, ranges, arrays
            items = value.tolist() if hasattr(value, "tolist") else list(value)
            if not isinstance(items, list):  # a numpy scalar
                return _is_int(items)
            return len(items) > 0 and all(_is_int(v) or (isinstance(v, str) and v in self._NAMES)
                                          for v in items)
        return _is_int(value)

    def describe(self) -> str:
        words = ", ".join(repr(w) for w in ("all", *self.extra))
        return (f"{words}, a layer number (negative from the end), 'last', 'embed', 'norm' or a "
                "non-empty list of these")


@dataclass(frozen=True)
class LabelColumn(Rule):
    """The name of a label column of the data source (``target = "shape"``).

    Any string passes here; the run checks the name against the source's label columns before
    it extracts anything. ``also``: frame columns the parameter may name as well (``row``,
    ``col`` for position targets); ``blank``: the empty string is allowed (it means "unset").
    """

    also: tuple = ()
    blank: bool = False

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def describe(self) -> str:
        return "the name of a label column of the data source"

    def allows(self, value: str, label_columns: Sequence[str]) -> bool:
        """Whether ``value`` names one of ``label_columns`` (or ``also``, or is blank)."""
        return value in label_columns or value in self.also or (self.blank and value == "")


def _plural(text: str) -> str:
    for a, b in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings"),
                 ("one of", "values from")):
        if text.startswith(a):
            return b + text[len(a):]
    return text


def accepts(rule: Any, value: Any) -> bool:
    """Whether ``value`` follows ``rule`` (a Rule, None, a type or a tuple of alternatives)."""
    if rule is None:
        return value is None
    if isinstance(rule, tuple):
        return any(accepts(r, value) for r in rule)
    if isinstance(rule, type):
        return Is(rule).accepts(value)
    return rule.accepts(value)


def describe(rule: Any, none: str | None = "absent") -> str:
    """What ``rule`` accepts, in words (``"an integer >= 1 or absent"``); ``none`` is the word
    for None (left out when None: a flag that is not given)."""
    if rule is None:
        return none or ""
    if isinstance(rule, tuple):
        parts = [describe(r, none) for r in rule if r is not None or none]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    if isinstance(rule, type):
        return Is(rule).describe()
    return rule.describe()


SEED = Interval(int, 0, 2**32 - 1)
"""Seeds: numpy's legacy generators (scikit-learn's ``random_state``) take 0 .. 2**32 - 1."""


@dataclass(frozen=True)
class Name:
    """How a parameter was spelled, for messages: a CLI flag, a run-spec key or an argument.

    Use :meth:`flag`, :meth:`key`, :meth:`arg` or :meth:`env`.
    """

    style: Literal["cli", "spec", "api", "env"]
    text: str
    table: str | None = None
    owner: str | None = None

    @classmethod
    def flag(cls, flag: str) -> Name:
        """A command-line flag (``"--n-images"``)."""
        return cls("cli", flag)

    @classmethod
    def key(cls, key: str, table: str | None = None) -> Name:
        """A run-spec key (``key("n", "data")`` is ``[data] n``; no table: the top level)."""
        return cls("spec", key, table)

    @classmethod
    def arg(cls, name: str, owner: str | None = None) -> Name:
        """A Python argument (``arg("n_images")``; ``owner`` such as ``"shapes option"``)."""
        return cls("api", name, owner=owner)

    @classmethod
    def env(cls, variable: str) -> Name:
        """An environment variable (``"PROBING_SCHEDULER_TIMEOUT"``)."""
        return cls("env", variable)

    def show(self, value: Any) -> str:
        """The parameter with ``value``, as the user wrote it."""
        if self.style == "env":
            return f"{self.text}={value}"
        if self.style == "cli":
            return f"{self.text} {value}"
        if self.style == "spec":
            where = f"[{self.table}] " if self.table else ""
            return f"{where}{self.text} = {_toml(value)}"
        return f"{self.owner + ' ' if self.owner else ''}{self.text}={value!r}"

    def fix(self, example: Any) -> str:
        """How to write a valid value."""
        if self.style == "env":
            return f"set e.g. {self.text}={example}"
        if self.style == "cli":
            return f"pass e.g. {self.text} {example}"
        if self.style == "spec":
            return f"write e.g. {self.text} = {_toml(example)} in the run spec"
        return f"pass e.g. {self.text}={example!r}"


def suggesting(error: Exception, **options: Any) -> Exception:
    """Mark the options ``error``'s message suggests, written there as Python arguments
    (``on_error='skip'``, :meth:`Name.show` of :meth:`Name.arg`), so that the CLI or the run
    spec can say them in its own spelling (:func:`respell`). Returns ``error``."""
    error.suggests = {**getattr(error, "suggests", {}), **options}  # type: ignore[attr-defined]
    return error


def respell(error: Exception, style: Literal["cli", "spec"],
            tables: Mapping[str, str] | None = None) -> str:
    """``error``'s message with the options it suggests (:func:`suggesting`) in the caller's
    spelling: ``--on-error skip`` and ``--no-pretrained`` on the command line
    (``style="cli"``), ``[data.options] on_error = "skip"`` in a run spec (``style="spec"``;
    ``tables`` maps each option to its spec table). The one home of that translation: raise
    sites write Python spelling (``on_error='skip'``), callers apply this."""
    text = str(error)
    for key, value in getattr(error, "suggests", {}).items():
        flag = "--" + key.replace("_", "-")
        if style == "spec":
            spelled = Name.key(key, (tables or {}).get(key)).show(value)
        elif isinstance(value, bool):
            spelled = flag if value else f"--no-{flag[2:]}"
        else:
            spelled = Name.flag(flag).show(value)
        text = text.replace(Name.arg(key).show(value), spelled)
    return text


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def example_of(rule: Any, preferred: Any = None) -> Any:
    """A value ``rule`` accepts: ``preferred`` when it does, else the first option or the
    smallest value of the first interval (None when the rule allows it)."""
    if preferred is not None and accepts(rule, preferred):
        return preferred
    for r in rule if isinstance(rule, tuple) else (rule,):
        if isinstance(r, Options):
            return r.values[0]
        if isinstance(r, Items):
            return [example_of(r.item)] * max(1, r.min_len)
        if isinstance(r, Interval):
            low = 0 if r.low is None else r.low
            if r.kind is int:
                return int(math.floor(low)) + (0 if r.closed in ("both", "left")
                                               and float(low).is_integer() else 1)
            return low if r.closed in ("both", "left") else (
                low + 1 if r.high is None else (low + r.high) / 2)
    return preferred


def check(name: Name, value: Any, rule: Any, example: Any = None,
          error: type = ConfigError, shown: Any = None) -> Any:
    """Return ``value`` when it follows ``rule``; else raise ``error`` with one sentence.

    Parameters
    ----------
    name : Name
        How the user spelled the parameter (flag, spec key or argument).
    value
        The value given.
    rule
        A rule (see the module docstring).
    example
        A valid value to suggest (usually the default; see :func:`example_of`).
    error : type
        The :class:`~probing.errors.ProbingError` subclass raised (``DataError`` for data
        source options).
    shown : optional
        What the user typed, when ``value`` was parsed from it (a flag's text).
    """
    if accepts(rule, value):
        return value
    written = name.show(value if shown is None else shown)
    none = {"cli": None, "env": None, "api": "None"}.get(name.style, "absent")
    new = _renamed_to(rule, value)
    if new is not None:
        written, example = f"{written} is invalid (did you mean {new!r}?)", new
    else:
        written += " is invalid"
    raise error(f"{written}: it must be {describe(rule, none)}; "
                f"{name.fix(example_of(rule, example))}.")


def _renamed_to(rule: Any, value: Any) -> Any:
    """The current value an :class:`Options` rule (alone or in a tuple) renamed ``value`` to."""
    for r in rule if isinstance(rule, tuple) else (rule,):
        if isinstance(r, Options):
            for old, new in r.renamed:
                if type(old) is type(value) and old == value:
                    return new
    return None


@dataclass(frozen=True)
class Param:
    """An analysis parameter's default and its rule, as the registry derives them from
    ``run()``'s signature (:func:`probing.run.registry.analysis_params`) and
    :func:`probing.run.spec.check_params` checks spec values against them.
    """

    default: Any
    rule: Any
