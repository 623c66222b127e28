"""Reports: sections of figures, tables and text written as a directory.

``Report.write(out)`` produces::

    out/index.html         Jinja2 page (relative links, contents, captions; no JavaScript)
    out/README.md          the same content in Markdown
    out/figures/NAME.png   (200 dpi), NAME.svg (text kept as text), NAME.pdf when asked
    out/tables/NAME.csv    every table and the numbers behind every figure
    out/results.json       key numbers per section
    out/spec.toml          the resolved run spec (when given)
    out/provenance.json    versions, fingerprints, seeds, timings (when given)
    out/.probing-report    the marker: which files probing wrote here (:mod:`probing.ownership`)

The page opens with the findings summary (every section's :class:`~probing.findings.Finding`
sentences, filled from its key numbers and linked to it), then the lead sections (``Section.lead``:
the model and data card), then the contents and the analyses' sections in order. Figures are laid
out once and saved in every format by worker processes (:mod:`probing.figfiles`); a figure whose
files were drawn already with the report's settings (by an analysis worker process,
:meth:`probing.sections.Figure.render`) is written as those bytes.

Writing is atomic at the directory level: everything is written into a temporary sibling
directory, which then replaces ``out``; a report that failed half-way never looks complete.
Only a folder that is absent, empty, or a report probing wrote (and holding nothing else) is
ever replaced: a folder of the user's own files is refused with a :class:`ReportError`.

Text from data is escaped for each reader: HTML through Jinja2's autoescape (tables through
``to_html(escape=True)``), ``README.md`` HTML-escaped as well (Markdown viewers render raw HTML),
and CSV text cells starting with ``= + - @``, a tab or a carriage return get a leading ``'``
(OWASP's rule against spreadsheet formula injection; numeric columns are written as they are).
"""

from __future__ import annotations

import glob
import html
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .errors import ReportError, SchemaError
from .figfiles import (
    DEFAULT_FORMATS,
    figure_formats,
    render_settings,
    save_figures,
    settings_key,
)
from .ownership import (
    check_report_target,
    folder_lock,
    read_report_marker,
    remove_report_folder,
    report_files,
    write_report_marker,
    writer_gone,
)
from .sections import Figure, Section, Table

log = logging.getLogger("probing")

__all__ = ["Figure", "Report", "Section", "Table", "check_report_target"]

MAX_HTML_ROWS = 40
#: A table at most this long is shown whole (cutting 50 rows to 40 hides the last layers).
MAX_WHOLE_ROWS = 60


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _fmt(value: float) -> str:
    value = float(value)
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def _json_number(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _md_escape(text: object) -> str:
    """Data text for Markdown: HTML escaped (viewers render raw HTML), on one line, no bare
    ``|`` (a table cell separator)."""
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_text(text: object) -> str:
    """Data text for Markdown paragraphs: HTML escaped, so ``<script>`` is shown, not run."""
    return html.escape(str(text), quote=False)


#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: object) -> object:
    """A string cell starting like a formula gets a leading ``'`` (OWASP's rule); numbers and
    other cells are unchanged, so negative numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV, defusing text cells that a spreadsheet would run as formulas
    (a frame with nothing to defuse is written as it is)."""
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c].dtype)
            and not pd.api.types.is_bool_dtype(frame[c].dtype)]
    header = [_csv_safe(str(c)) for c in frame.columns]
    risky = header != [str(c) for c in frame.columns] or any(
        frame[c].map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START)).any()
        for c in text)
    if risky:
        frame = frame.copy()
        for col in text:
            frame[col] = frame[col].map(_csv_safe)
        frame.columns = header
    frame.to_csv(path, index=False)


def shown_rows(table: Table) -> list[int]:
    """Positions of the rows the page shows: all of a table of at most ``MAX_WHOLE_ROWS``, else
    the first ``MAX_HTML_ROWS`` and the table's key rows."""
    n = len(table.frame)
    if n <= MAX_WHOLE_ROWS:
        return list(range(n))
    keys = sorted({int(i) for i in table.key_rows if 0 <= int(i) < n})
    return sorted(set(range(MAX_HTML_ROWS)) | set(keys))


def _row_note(table: Table, rows: list[int]) -> str:
    """What part of the table the page shows ("" when all of it)."""
    n = len(table.frame)
    if len(rows) == n:
        return ""
    extra = [i for i in rows if i >= MAX_HTML_ROWS]
    keys = f" and {len(extra)} key row{'s' if len(extra) > 1 else ''}" if extra else ""
    return f"First {MAX_HTML_ROWS}{keys} of {n} rows."


def _md_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_escape(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_md_escape(_cell(v)) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col].dtype):
            out[col] = out[col].map(_cell)
    return out


#: Inline code in docstring style: ``x`` (reStructuredText), optionally after a role (:class:).
_CODE = re.compile(r"(?::[a-z]+:)?``(.+?)``|:[a-z]+:`([^`]+)`")


def _html_text(text: object) -> Markup:
    """Plain text for the page: escaped, with ``x`` shown as <code>x</code>."""
    escaped = html.escape(str(text), quote=False)
    return Markup(_CODE.sub(lambda m: f"<code>{m[1] or m[2]}</code>", escaped))


def _md_code(text: str) -> str:
    """``x`` (reStructuredText inline code) as Markdown's `x`."""
    return _CODE.sub(lambda m: f"`{m[1] or m[2]}`", text)


@dataclass
class Report:
    """A report: a title and sections.

    Parameters
    ----------
    title : str
        Report title.
    sections : list of Section
        In display order, except that lead sections (``Section.lead``, e.g. the model and data
        card a runner adds) come first, right after the findings summary.
    subtitle : str
        One line under the title (model, data, date).

    Attributes
    ----------
    figure_seconds : float
        Wall seconds the last :meth:`write` spent on figures, apart from tables and pages:
        writing the files of figures drawn already, and the time drawing the others added to
        the stage (their workers draw while this process writes the tables). Set before
        ``write`` calls its ``provenance`` callable.
    """

    title: str
    sections: list[Section] = field(default_factory=list)
    subtitle: str = ""
    figure_seconds: float = field(default=0.0, init=False, repr=False, compare=False)

    def add(self, section: Section) -> None:
        """Append a section."""
        self.sections.append(section)

    def ordered(self) -> list[Section]:
        """Sections in page order: lead sections first, then the others, each group as added."""
        return [s for s in self.sections if s.lead] + [s for s in self.sections if not s.lead]

    def findings(self) -> list[dict]:
        """The findings summary: ``{"question", "sentence", "section", "anchor"}`` per finding,
        in page order, filled from each section's key numbers."""
        return [{"question": q, "sentence": text, "section": s.title,
                 "anchor": s.name or _slug(s.title)}
                for s in self.ordered() for q, text in s.sentences()]

    def results(self) -> dict:
        """Key numbers per section name (what ``results.json`` holds)."""
        out: dict = {}
        for s in self.sections:
            s.check_numbers()
            out[s.name or _slug(s.title)] = {k: _json_number(v) for k, v in s.numbers.items()}
        return out

    def _check(self) -> None:
        seen: set[str] = set()
        for s in self.sections:
            for item in [*s.figures, *s.tables]:
                if item.name in seen:
                    raise SchemaError(
                        f"figure/table name {item.name!r} is used twice in the report; give each "
                        "a unique name."
                    )
                seen.add(item.name)

    def write(
        self,
        out: str | os.PathLike,
        spec_text: str | None = None,
        provenance: Mapping | Callable[[], Mapping] | None = None,
        style: Mapping[str, object] | None = None,
        protect: Mapping[str | os.PathLike, str] | None = None,
        formats: tuple[str, ...] = DEFAULT_FORMATS,
        workers: int | None = None,
    ) -> Path:
        """Write the report directory atomically (see the module docstring).

        ``out`` is replaced only when it is absent, empty, or a report folder that probing
        wrote and that holds nothing else (:mod:`probing.ownership`); any other folder is left
        untouched and a :class:`ReportError` says so.

        Parameters
        ----------
        out : path
            Report directory.
        spec_text : str, optional
            The resolved TOML spec, saved as ``spec.toml``.
        provenance : mapping or callable, optional
            Saved as ``provenance.json``; a callable is called once every figure and table is
            written (so that it can time the report stage).
        style : mapping, optional
            matplotlib rc overrides for saving figures.
        protect : mapping, optional
            Folders the report may neither replace, contain nor lie in (``{path: "the store"}``).
        formats : tuple of str
            Figure formats, out of ``("png", "svg", "pdf")``; PNG is always written (the page
            shows it). PDF is the slowest (embedded fonts) and is written only when asked.
        workers : int, optional
            Processes saving figures (default: one per core, at most 4; 1 saves in this one).

        Returns
        -------
        pathlib.Path
            ``out``.

        Raises
        ------
        ReportError
            When ``out`` may not be replaced, or writing fails (nothing is left behind then).
        """
        out = Path(out)
        formats = figure_formats(formats)
        check_report_target(out, protect)
        self._check()
        results = self.results()
        self.findings()  # a finding naming no key number fails before anything is written
        parent = out.parent
        tmp = parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            with folder_lock(parent):
                _remove_stale(parent, out.name)
            tmp.mkdir()
            write_report_marker(tmp, [], state="writing")
            (tmp / "figures").mkdir()
            (tmp / "tables").mkdir()
        except OSError as exc:
            remove_report_folder(tmp, partial=True)
            raise ReportError(
                f"report output {out} is not writable ({exc.strerror or exc}); choose another "
                "--out folder."
            ) from exc
        try:
            self._write_files(tmp, results, spec_text, provenance, style, formats, workers)
            write_report_marker(tmp, report_files(tmp), state="complete")
            with folder_lock(parent):
                check_report_target(out, protect)  # again: another writer may have been first
                _replace_dir(tmp, out)
        except OSError as exc:
            remove_report_folder(tmp, partial=True)
            raise ReportError(
                f"report {out} could not be written ({exc.strerror or exc}); free disk space or "
                "choose a writable --out folder (nothing was left behind)."
            ) from exc
        except BaseException:
            remove_report_folder(tmp, partial=True)
            raise
        return out

    def _write_files(self, tmp: Path, results: dict, spec_text, provenance, style,
                     formats: tuple[str, ...], workers: int | None) -> None:
        settings = render_settings(formats, style)
        key = settings_key(settings)
        t = time.perf_counter()
        jobs = []
        for f in (f for s in self.ordered() for f in s.figures):
            stem = tmp / "figures" / f.name
            if f.files is not None and f.files_key == key:  # drawn already (a worker)
                for ext in formats:
                    stem.with_name(f"{stem.name}.{ext}").write_bytes(f.files[ext])
            elif f.figure is not None:
                jobs.append((f.figure, stem))
            else:
                raise ReportError(f"figure {f.name!r} was drawn with other settings "
                                  f"({f.files_key}) and has no matplotlib figure to draw "
                                  f"again; write the report with those settings.")
        ctx_sections: list[dict] = []
        tables = [0.0]  # seconds

        def write_tables() -> None:
            t = time.perf_counter()
            ctx_sections.extend(self._tables(tmp))
            tables[0] = time.perf_counter() - t

        try:
            # tables and the page's context are made while the workers save the figures
            save_figures(jobs, formats=formats, dpi=settings["dpi"], style=style,
                         workers=workers, meanwhile=write_tables)
        finally:
            for f, _ in jobs:
                plt.close(f)
        self.figure_seconds = time.perf_counter() - t - tables[0]
        findings = self.findings()
        for s in ctx_sections:
            s["html_paragraphs"] = [_html_text(p) for p in s["paragraphs"]]
        env = Environment(loader=PackageLoader("probing", "templates"),
                          autoescape=select_autoescape(["html"]))
        html = env.get_template("report.html").render(
            title=self.title, subtitle=self.subtitle, sections=ctx_sections,
            findings=findings, formats=formats[1:])
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "README.md").write_text(self._markdown(ctx_sections, findings, formats[1:]),
                                       encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        if spec_text is not None:
            (tmp / "spec.toml").write_text(spec_text, encoding="utf-8")
        if callable(provenance):
            provenance = provenance()
        if provenance is not None:
            (tmp / "provenance.json").write_text(
                json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")

    def _tables(self, tmp: Path) -> list[dict]:
        """Write every CSV (figure data and tables) into ``tmp / "tables"``; the page's context
        of each section, in page order."""
        number = 0
        ctx_sections = []
        for s in self.ordered():
            figs = []
            for f in s.figures:
                number += 1
                _write_csv(f.data, tmp / "tables" / f"{f.name}.csv")
                figs.append({"name": f.name, "caption": _html_text(f.caption),
                             "md_caption": _md_code(_md_text(f.caption)), "number": number})
            tabs = []
            for t in s.tables:
                _write_csv(t.frame, tmp / "tables" / f"{t.name}.csv")
                rows = shown_rows(t)
                shown = t.frame.iloc[rows]
                tabs.append({
                    "name": t.name, "caption": _html_text(t.caption or t.name),
                    "md_caption": _md_code(_md_text(t.caption or t.name)),
                    # to_html(escape=True) escapes every cell and header; Markup keeps Jinja
                    # from escaping the table markup itself a second time
                    "html": Markup(_display(shown).to_html(index=False, escape=True, border=0)),
                    "md": _md_table(shown),
                    "note": _row_note(t, rows),
                })
            ctx_sections.append({
                "title": s.title, "anchor": s.name or _slug(s.title), "lead": s.lead,
                "paragraphs": [p.strip() for p in s.text.split("\n\n") if p.strip()],
                "numbers": [(s.label(k), k, _fmt(v)) for k, v in s.numbers.items()],
                "figures": figs, "tables": tabs, "references": s.references,
            })
        return ctx_sections

    def _markdown(self, sections: list[dict], findings: list[dict],
                  vector: tuple[str, ...]) -> str:
        """README.md: every string from the report (data included) is HTML escaped."""
        esc, cell = _md_text, _md_escape
        lines = [f"# {esc(self.title)}", "", esc(self.subtitle), ""]
        if findings:
            lines += ["## Findings", ""]
            lines += [f"- **{esc(f['question'])}** {_md_code(esc(f['sentence']))} "
                      f"([{cell(f['section'])}](#{f['anchor']}))" for f in findings]
            lines.append("")
        lines += ["## Contents", ""]
        lines += [f"{i}. [{cell(s['title'])}](#{s['anchor']})"
                  for i, s in enumerate(sections, 1)]
        for s in sections:
            lines += ["", f"## {esc(s['title'])}", ""]
            lines += [_md_code(esc(p)) + "\n" for p in s["paragraphs"]]
            if s["numbers"]:
                lines += ["| key number | value | in results.json |", "|---|---|---|"]
                lines += [f"| {cell(label)} | {v} | `{cell(k)}` |" for label, k, v in s["numbers"]]
                lines.append("")
            for f in s["figures"]:
                files = ", ".join(f"[{ext.upper()}](figures/{f['name']}.{ext})" for ext in vector)
                lines += [f"![{cell(f['md_caption'])}](figures/{f['name']}.png)", "",
                          f"**Figure {f['number']}.** {f['md_caption']} "
                          f"([data](tables/{f['name']}.csv){', ' + files if files else ''})", ""]
            for t in s["tables"]:
                lines += [f"**{t['md_caption']}** ([CSV](tables/{t['name']}.csv))", ""]
                if t["note"]:
                    lines += [f"{t['note']} All rows: [CSV](tables/{t['name']}.csv).", ""]
                lines += [t["md"], ""]
            if s["references"]:
                lines += ["References: " + "; ".join(esc(r) for r in s["references"]), ""]
        lines += ["", "Files: [results.json](results.json), [spec.toml](spec.toml), "
                  "[provenance.json](provenance.json).", ""]
        return "\n".join(lines)


def _remove_stale(parent: Path, name: str) -> None:
    """Delete temporary report folders left by writers that died (killed mid-write).

    Only folders named as :meth:`Report.write` names them (``.NAME.tmp-PID-TOKEN`` and
    ``.NAME.old-PID-TOKEN``) that carry a report marker and whose writer is gone (it ran on
    this host and its pid is not alive) are removed; one that holds anything else is kept, with
    a warning.
    """
    for stale in [*parent.glob(f".{glob.escape(name)}.tmp-*"),
                  *parent.glob(f".{glob.escape(name)}.old-*")]:
        match = _TEMP_NAME.fullmatch(stale.name[len(name) + 1:])
        if match is None or not writer_gone(read_report_marker(stale), int(match["pid"])):
            continue
        if not remove_report_folder(stale, partial=match["what"] == "tmp"):
            log.warning("kept %s: it holds files probing did not write there", stale)


_TEMP_NAME = re.compile(r"\.(?P<what>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing an existing empty or probing-made ``out``.

    The caller has checked ``out`` with :func:`check_report_target` under the parent's lock.
    An existing report is first moved aside, so that a failure in between never leaves a
    partial ``out``; it is put back when the second move fails.
    """
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    old = tmp.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    remove_report_folder(old)
