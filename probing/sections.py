"""What an analysis returns: a report section of figures, tables, text and key numbers.

An analysis never writes files; :class:`probing.report.Report` does. Every figure carries the
frame of numbers it was drawn from, which the report saves as ``tables/NAME.csv``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from .errors import SchemaError

__all__ = ["Figure", "Section", "Table"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise SchemaError(
            f"{what} name {name!r} is not a file-safe slug; use lower-case letters, digits, "
            "'_' and '-'."
        )


@dataclass
class Figure:
    """A figure and the numbers behind it.

    Parameters
    ----------
    name : str
        File stem (``figures/NAME.png`` ...), a lower-case slug unique within the report.
    figure : matplotlib.figure.Figure
        The drawn figure.
    caption : str
        One or two sentences saying what is shown, with units.
    data : pandas.DataFrame
        The numbers the figure was drawn from (saved as ``tables/NAME.csv``).
    """

    name: str
    figure: MplFigure
    caption: str
    data: pd.DataFrame

    def __post_init__(self) -> None:
        _check_name(self.name, "figure")


@dataclass
class Table:
    """A result table shown in the report and saved as ``tables/NAME.csv``."""

    name: str
    frame: pd.DataFrame
    caption: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "table")


@dataclass
class Section:
    """One section of a report.

    Parameters
    ----------
    title : str
        Section heading.
    text : str
        A short paragraph: what was computed, on what, and how to read it (plain text; escaped).
    figures, tables : list
        :class:`Figure` and :class:`Table` objects, shown in order.
    numbers : dict of str to float
        Key numbers, written to ``results.json`` under the section's name. Must be finite.
    name : str
        Slug of the section (the analysis name by default, set by the runner).
    references : list of str
        Papers the section's methods come from.
    """

    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    name: str = ""
    references: list[str] = field(default_factory=list)

    def check_numbers(self) -> None:
        """Raise :class:`SchemaError` when a key number is not a finite float."""
        for key, value in self.numbers.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(float(value)):
                raise SchemaError(
                    f"key number {key!r} of section {self.title!r} is {value!r}, not a finite "
                    "number; report NaN results in a table instead."
                )
