"""Reports: sections of figures, tables and text written as a directory.

``Report.write(out)`` produces::

    out/index.html         Jinja2 page (relative links, contents, captions; no JavaScript)
    out/README.md          the same content in Markdown
    out/figures/NAME.png   (>= 200 dpi), NAME.svg and NAME.pdf (text kept as text)
    out/tables/NAME.csv    every table and the numbers behind every figure
    out/results.json       key numbers per section
    out/spec.toml          the resolved run spec (when given)
    out/provenance.json    versions, fingerprints, seeds, timings (when given)

Writing is atomic at the directory level: everything is written into a temporary sibling
directory, which then replaces ``out``; a report that failed half-way never looks complete.
All text from data is escaped in HTML (Jinja2 autoescape; tables through ``to_html(escape=True)``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ._fs import pid_alive
from .errors import ConfigError, ReportError, SchemaError
from .plots.style import paper_style
from .sections import Figure, Section, Table

__all__ = ["Figure", "Report", "Section", "Table", "check_output_dir"]

MAX_HTML_ROWS = 40


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


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(frame: pd.DataFrame, max_rows: int = MAX_HTML_ROWS) -> str:
    shown = frame.head(max_rows)
    head = "| " + " | ".join(_md_escape(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(_md_escape(_cell(v)) for v in row) + " |"
            for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.head(MAX_HTML_ROWS).copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col].dtype):
            out[col] = out[col].map(_cell)
    return out


@dataclass
class Report:
    """A report: a title and sections.

    Parameters
    ----------
    title : str
        Report title.
    sections : list of Section
        In display order.
    subtitle : str
        One line under the title (model, data, date).
    """

    title: str
    sections: list[Section] = field(default_factory=list)
    subtitle: str = ""

    def add(self, section: Section) -> None:
        """Append a section."""
        self.sections.append(section)

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
        provenance: Mapping | None = None,
        style: Mapping[str, object] | None = None,
    ) -> Path:
        """Write the report directory atomically (see the module docstring).

        Parameters
        ----------
        out : path
            Report directory; replaced as a whole when it exists.
        spec_text : str, optional
            The resolved TOML spec, saved as ``spec.toml``.
        provenance : mapping, optional
            Saved as ``provenance.json``.
        style : mapping, optional
            matplotlib rc overrides for saving figures.

        Returns
        -------
        pathlib.Path
            ``out``.
        """
        out = Path(out)
        check_output_dir(out)
        self._check()
        results = self.results()
        parent = out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(parent, out.name)
            tmp = parent / f".{out.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "figures").mkdir(parents=True)
            (tmp / "tables").mkdir()
        except OSError as exc:
            raise ReportError(
                f"report output {out} is not writable ({exc.strerror or exc}); choose another "
                "--out folder."
            ) from exc
        try:
            self._write_files(tmp, results, spec_text, provenance, style)
            _replace_dir(tmp, out)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ReportError(
                f"report {out} could not be written ({exc.strerror or exc}); free disk space or "
                "choose a writable --out folder (nothing was left behind)."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def _write_files(self, tmp: Path, results: dict, spec_text, provenance, style) -> None:
        number = 0
        ctx_sections = []
        for s in self.sections:
            figs = []
            for f in s.figures:
                number += 1
                with paper_style(style):
                    for ext in ("png", "svg", "pdf"):
                        f.figure.savefig(tmp / "figures" / f"{f.name}.{ext}",
                                         dpi=220 if ext == "png" else None,
                                         metadata=_metadata(ext))
                plt.close(f.figure)
                f.data.to_csv(tmp / "tables" / f"{f.name}.csv", index=False)
                figs.append({"name": f.name, "caption": f.caption, "number": number})
            tabs = []
            for t in s.tables:
                t.frame.to_csv(tmp / "tables" / f"{t.name}.csv", index=False)
                shown = len(t.frame) > MAX_HTML_ROWS
                tabs.append({
                    "name": t.name, "caption": t.caption or t.name,
                    # to_html(escape=True) escapes every cell and header; Markup keeps Jinja
                    # from escaping the table markup itself a second time
                    "html": Markup(_display(t.frame).to_html(index=False, escape=True,
                                                             border=0)),
                    "md": _md_table(t.frame),
                    "note": f"First {MAX_HTML_ROWS} of {len(t.frame)} rows." if shown else "",
                })
            ctx_sections.append({
                "title": s.title, "anchor": s.name or _slug(s.title),
                "paragraphs": [p.strip() for p in s.text.split("\n\n") if p.strip()],
                "numbers": [(k, _fmt(v)) for k, v in s.numbers.items()],
                "figures": figs, "tables": tabs, "references": s.references,
            })
        env = Environment(loader=PackageLoader("probing", "templates"),
                          autoescape=select_autoescape(["html"]))
        html = env.get_template("report.html").render(
            title=self.title, subtitle=self.subtitle, sections=ctx_sections)
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "README.md").write_text(self._markdown(ctx_sections), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        if spec_text is not None:
            (tmp / "spec.toml").write_text(spec_text, encoding="utf-8")
        if provenance is not None:
            (tmp / "provenance.json").write_text(
                json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")

    def _markdown(self, sections: list[dict]) -> str:
        lines = [f"# {self.title}", "", self.subtitle, "", "## Contents", ""]
        lines += [f"{i}. [{s['title']}](#{s['anchor']})" for i, s in enumerate(sections, 1)]
        for s in sections:
            lines += ["", f"## {s['title']}", ""]
            lines += [p + "\n" for p in s["paragraphs"]]
            if s["numbers"]:
                lines += ["| key number | value |", "|---|---|"]
                lines += [f"| {_md_escape(k)} | {v} |" for k, v in s["numbers"]]
                lines.append("")
            for f in s["figures"]:
                lines += [f"![{_md_escape(f['caption'])}](figures/{f['name']}.png)", "",
                          f"**Figure {f['number']}.** {f['caption']} "
                          f"([data](tables/{f['name']}.csv), [SVG](figures/{f['name']}.svg), "
                          f"[PDF](figures/{f['name']}.pdf))", ""]
            for t in s["tables"]:
                lines += [f"**{t['caption']}** ([CSV](tables/{t['name']}.csv))", "", t["md"], ""]
            if s["references"]:
                lines += ["References: " + "; ".join(s["references"]), ""]
        lines += ["", "Files: [results.json](results.json), [spec.toml](spec.toml), "
                  "[provenance.json](provenance.json).", ""]
        return "\n".join(lines)


def _metadata(ext: str) -> dict | None:
    # fixed metadata so that the same figure gives the same bytes on every run
    if ext == "png":
        return {"Software": None}
    if ext == "svg":
        return {"Date": None}
    if ext == "pdf":
        return {"CreationDate": None, "ModDate": None}
    return None


def check_output_dir(out: Path) -> None:
    """Raise :class:`ConfigError` when the report output path exists and is not a folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report output {out} is a file; choose a folder path.")


def _remove_stale(parent: Path, name: str) -> None:
    """Delete temporary report folders left by writers that died (killed mid-write)."""
    for stale in [*parent.glob(f".{name}.tmp-*"), *parent.glob(f".{name}.old-*")]:
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing an existing ``out`` (never leaving a partial one)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
