"""What an analysis returns: a report section of figures, tables, text and key numbers.

An analysis never writes files; :class:`probing.report.Report` does. Every figure carries the
frame of numbers it was drawn from, which the report saves as ``tables/NAME.csv``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from .errors import SchemaError
from .findings import Finding, human_label

__all__ = ["Figure", "Finding", "Section", "Table", "slug"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


_MAX_PLAIN = 48


def slug(value: object) -> str:
    """A file-safe slug of any value (an image id, a label, a column name), distinct per value.

    A string that already is a short slug (lower-case letters, digits, ``_`` and ``-``, starting
    with a letter or digit, at most 48 characters, no ``--``) is returned unchanged, so ``0``
    stays ``"0"`` and ``label`` stays ``"label"``. Anything else becomes its readable part
    (lower-cased, other characters as ``-``, at most 40 characters; ``id`` when none is left),
    then ``--`` and 12 hex digits of the SHA-256 of ``str(value)``: ``"IMG_01"`` ->
    ``"img_01--..."``, ``"../../x"`` -> ``"x--..."``. Only hashed slugs contain ``--``, so two
    different strings get the same slug only if their 48-bit hashes collide.
    The result never contains ``/``, ``\\`` or ``.``, so it can never name another folder.

    Parameters
    ----------
    value : object
        Converted with ``str``; ``1`` and ``"1"`` give the same slug.

    Returns
    -------
    str
        Matches ``^[a-z0-9][a-z0-9_\\-]*$``; at most 54 characters.
    """
    text = str(value)
    if len(text) <= _MAX_PLAIN and _NAME.match(text) and "--" not in text:
        return text
    readable = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-_")[:40].rstrip("-_")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{readable or 'id'}--{digest}"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise SchemaError(
            f"{what} name {name!r} is not a file-safe slug; use lower-case letters, digits, "
            "'_' and '-' (probing.sections.slug makes one of any value)."
        )


@dataclass
class Figure:
    """A figure and the numbers behind it.

    Parameters
    ----------
    name : str
        File stem (``figures/NAME.png`` ...), a lower-case slug unique within the report.
    figure : matplotlib.figure.Figure or None
        The drawn figure; None once :meth:`render` has replaced it by its files.
    caption : str
        One or two sentences saying what is shown, with units.
    data : pandas.DataFrame
        The numbers the figure was drawn from (saved as ``tables/NAME.csv``).
    files : dict of str to bytes, optional
        The figure's files (``{ext: bytes}``) as :func:`probing.figfiles.render_figure` drew
        them with the settings of ``files_key``; the report writes these bytes when it writes
        figures with the same settings. Set by :meth:`render`, not by analyses.
    files_key : str
        :func:`probing.figfiles.settings_key` of the settings ``files`` were drawn with.
    """

    name: str
    figure: MplFigure | None
    caption: str
    data: pd.DataFrame
    files: dict[str, bytes] | None = None
    files_key: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "figure")

    def render(self, settings: dict) -> None:
        """Draw the figure's files now (:func:`probing.figfiles.render_figure` with
        ``settings``, a :func:`probing.figfiles.render_settings` dict) and keep them in
        ``files`` (the matplotlib figure stays: set ``figure = None`` to drop it)."""
        from .figfiles import render_figure, settings_key

        if self.figure is None:
            raise SchemaError(f"figure {self.name!r} has no matplotlib figure to draw; its "
                              "files were drawn already.")
        self.files = render_figure(self.figure, settings["formats"], settings["dpi"],
                                   settings["style"])
        self.files_key = settings_key(settings)


@dataclass
class Table:
    """A result table shown in the report and saved as ``tables/NAME.csv``.

    Parameters
    ----------
    name : str
        File stem, a lower-case slug unique within the report.
    frame : pandas.DataFrame
        All rows (the CSV holds every one; the page shows the first rows of a long table and
        says so).
    caption : str
        What the table holds.
    key_rows : list of int
        Positions (0-based) of rows the page must show even when it shortens the table (the
        rows a key number or finding is read from).
    """

    name: str
    frame: pd.DataFrame
    caption: str = ""
    key_rows: list[int] = field(default_factory=list)

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
    findings : list of Finding
        One-sentence answers filled from ``numbers`` (:class:`probing.findings.Finding`); the
        report opens with them, each linked to this section.
    labels : dict of str to str
        Names for people of key numbers (``{"probe_acc_last": "last-layer CLS probe
        accuracy"}``); a key without one is named by :func:`probing.findings.human_label`.
        ``results.json`` keeps the machine names.
    lead : bool
        A section about the whole run rather than one analysis (the model and data card): the
        report shows lead sections right after the findings summary, before the analyses.
    """

    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    name: str = ""
    references: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    lead: bool = False

    def label(self, key: str) -> str:
        """The name for people of key number ``key``."""
        return self.labels.get(key) or human_label(key)

    def sentences(self) -> list[tuple[str, str]]:
        """``(question, sentence)`` of each finding, filled from the key numbers.

        Raises
        ------
        SchemaError
            When a finding names a key number the section does not have.
        """
        return [(f.question, f.render(self.numbers, self.title)) for f in self.findings]

    def check_numbers(self) -> None:
        """Raise :class:`SchemaError` when a key number is not a finite float."""
        for key, value in self.numbers.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(float(value)):
                raise SchemaError(
                    f"key number {key!r} of section {self.title!r} is {value!r}, not a finite "
                    "number; report NaN results in a table instead."
                )
