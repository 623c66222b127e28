"""`probing run` end to end: the report directory is complete, consistent and safe."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from probing import ConfigError, ProbingError
from probing.errors import ReportError
from probing.findings import Finding
from probing.report import Report
from probing.run.runner import demo_spec_path, run_spec
from probing.run.spec import load_spec
from probing.sections import Figure, Section, Table

ROOT = Path(__file__).resolve().parents[2]


def small_demo_spec(tmp_path: Path, n: int = 64, extra: str = "",
                    keep: tuple[str, ...] | None = None) -> Path:
    """The demo spec on fewer images, writing under tmp_path (only the analyses in ``keep``
    when given)."""
    text = demo_spec_path().read_text()
    if keep is not None:
        blocks = re.split(r"(?m)^(?=\[)", text)
        text = "".join(b for b in blocks if not b.startswith("[analyses.")
                       or b[len("[analyses."):b.index("]")] in keep)
    text = re.sub(r"(?m)^n = \d+", f"n = {n}", text)
    text = re.sub(r'(?m)^output = ".*"', f'output = "{tmp_path / "report"}"', text)
    text = re.sub(r'(?m)^store = ".*"', f'store = "{tmp_path / "stores"}"', text)
    path = tmp_path / "spec.toml"
    path.write_text(text + extra)
    return path


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("demo")
    result = run_spec(small_demo_spec(tmp), quiet=True)
    return result.report_dir


def test_report_files_are_complete(demo_report):
    html = (demo_report / "index.html").read_text()
    links = set(re.findall(r'(?:src|href)="([^"#][^"]*)"', html))
    assert links, "index.html links nothing"
    for link in links:
        assert (demo_report / link).is_file(), f"index.html links missing {link}"
    for png in (demo_report / "figures").glob("*.png"):
        assert png.with_suffix(".svg").is_file()
        assert not png.with_suffix(".pdf").exists()  # PDF only when asked (formats=)
        assert (demo_report / "tables" / f"{png.stem}.csv").is_file()
    results = json.loads((demo_report / "results.json").read_text())
    values = [v for section in results.values() for v in section.values()]
    assert values and all(math.isfinite(v) for v in values)
    prov = json.loads((demo_report / "provenance.json").read_text())
    assert prov["model"]["fingerprint"] and prov["versions"]["torch"]
    assert load_spec(demo_report / "spec.toml").model.spec == "demo"
    readme = (demo_report / "README.md").read_text()
    assert "![" in readme and "## Contents" in readme


def test_png_resolution_and_svg_text(demo_report):
    from PIL import Image

    png = next((demo_report / "figures").glob("*.png"))
    dpi = Image.open(png).info.get("dpi", (0, 0))[0]
    assert round(dpi) == 200  # PNG stores pixels per metre: 199.9996
    svg = next((demo_report / "figures").glob("*.svg")).read_text()
    assert "<text" in svg  # text kept as text, not paths


def test_rerun_reuses_store_and_is_identical(tmp_path):
    # analyses that read every part of the store: tokens, the random-init copy, attention
    spec = small_demo_spec(tmp_path, n=32,
                           keep=("embedding_map", "layer_probes", "cka", "attention_distance"))
    first = run_spec(spec, quiet=True)
    results = (first.report_dir / "results.json").read_bytes()
    tables = {p.name: p.read_bytes() for p in (first.report_dir / "tables").glob("*.csv")}
    second = run_spec(spec, quiet=True)  # nothing changed: nothing is recomputed
    assert not first.reused_store and second.reused_store and second.reused_report
    assert second.timings["total"] < first.timings["total"]
    forced = run_spec(spec, quiet=True, force=True)  # analyses and report again, store reused
    assert forced.reused_store and not forced.reused_report
    assert forced.timings["extract"] < first.timings["extract"]
    assert (forced.report_dir / "results.json").read_bytes() == results
    assert {p.name: p.read_bytes() for p in (forced.report_dir / "tables").glob("*.csv")} \
        == tables
    changed = spec.read_text().replace("seed = 0", "seed = 1")
    spec.write_text(changed)
    assert not run_spec(spec, quiet=True).reused_report  # a changed spec recomputes


def test_html_escapes_text_from_data(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    evil = "<script>alert(1)</script>"
    fig = plt.figure()
    frame = pd.DataFrame({"label": [evil], "value": [1.0]})
    report = Report(title=evil, sections=[Section(
        title=evil, text=evil, numbers={"x": 1.0},
        figures=[Figure("f", fig, evil, frame)], tables=[Table("t", frame, evil)])])
    out = report.write(tmp_path / "r")
    html = (out / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<table" in html and "&lt;table" not in html


def test_failed_write_leaves_no_report(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    report = Report(title="t", sections=[Section(
        title="s", figures=[Figure("f", plt.figure(), "c", pd.DataFrame({"a": [1]}))])])
    with pytest.raises(ProbingError, match="could not be written"):
        report.write(tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.iterdir())


def test_spec_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[modle]\nspec = "demo"\n[analyses.embedding_map]\n')
    with pytest.raises(ConfigError, match="Did you mean 'model'"):
        load_spec(bad)
    bad.write_text('[model]\nspec = "demo"\n')
    with pytest.raises(ConfigError, match="no analyses"):
        load_spec(bad)
    bad.write_text('[analyses.embeding_map]\n')
    with pytest.raises(Exception, match="Did you mean 'embedding_map'"):
        run_spec(bad, quiet=True)
    bad.write_text('[analyses.embedding_map]\nmax_point = 3\n')
    with pytest.raises(ConfigError, match="max_points"):
        run_spec(bad, quiet=True)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed (Debian packages chromium, "
                    "chromium-driver); .ci/run installs them")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get((demo_report / "index.html").resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert widths and all(w > 0 for w in widths)
    assert not errors, errors


def test_readme_worked_analysis_example_runs(tmp_path, monkeypatch):
    """The README's "Adding an analysis" example, dropped into a folder, runs as documented."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Adding an analysis", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    folder = tmp_path / "my_analyses"
    folder.mkdir()
    (folder / "cls_norm.py").write_text(code)
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(folder))
    spec = tmp_path / "spec.toml"
    spec.write_text(f'output = "{tmp_path / "r"}"\nstore = "{tmp_path / "s"}"\n'
                    '[data]\nn = 16\n[analyses.cls_norm]\n')
    result = run_spec(spec, quiet=True)
    results = json.loads((result.report_dir / "results.json").read_text())
    assert results["cls_norm"]["last"] > 0
    assert (result.report_dir / "tables" / "cls_norm.csv").exists()


def test_a_store_with_a_wider_capture_is_reused(tmp_path):
    wide = tmp_path / "wide.toml"
    wide.write_text(f'output = "{tmp_path / "r1"}"\nstore = "{tmp_path / "s"}"\n[data]\nn = 16\n'
                    '[capture]\nattention = true\nlayers = "all"\n'
                    '[analyses.embedding_map]\nmethods = ["pca"]\n')
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(f'output = "{tmp_path / "r2"}"\nstore = "{tmp_path / "s"}"\n[data]\nn = 16\n'
                      '[capture]\nattention = false\nlayers = [0, 4]\nkinds = ["cls"]\n'
                      '[analyses.embedding_map]\nmethods = ["pca"]\nlayers = [0, 4]\n')
    first = run_spec(wide, quiet=True)
    second = run_spec(narrow, quiet=True)
    assert not first.reused_store and second.reused_store
    assert second.store.path == first.store.path
    assert len(list((tmp_path / "s").iterdir())) == 1


def test_demo_report_opens_with_findings_written_from_its_numbers(demo_report):
    html = (demo_report / "index.html").read_text()
    results = json.loads((demo_report / "results.json").read_text())
    body = html[html.index("<body>"):]
    # the first block after the title is the findings summary
    assert body.index('id="findings"') < body.index("<nav>") < body.index('id="layer_probes"')
    summary = body[body.index('id="findings"'):body.index("</section>")]
    items = re.findall(r"<li>(.*?)</li>", summary)
    anchors = re.findall(r'href="#([^"]+)"', summary)
    assert len(items) >= 6 and all(f'id="{a}"' in html for a in anchors)
    assert {"layer_probes", "cka", "attention_distance", "attribution",
            "pe_similarity"} <= set(anchors)
    probes = results["layer_probes"]
    (sentence,) = [i for i in items if "decodes the label best" in i]
    assert f"layer {probes['cls_best_layer']} " in sentence
    assert f"{probes['cls_best_accuracy']:.1%}" in sentence
    (sentence,) = [i for i in items if "Where do the heads look?" in i]
    assert f"{results['attention_distance']['uniform_reference_px']:.1f} px" in sentence
    readme = (demo_report / "README.md").read_text()
    assert readme.index("## Findings") < readme.index("## Contents")
    assert "decodes the label best" in readme
    # names for people on the page, machine names kept in results.json
    assert "last-layer CLS probe accuracy" in html and "cls_last_accuracy" in probes
    assert "``" not in html and "``" not in readme


def _figure(name: str) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), layout="constrained")
    ax.plot([0, 1, 2], [1, 0, 2], label=name)
    ax.set_title(name)
    return Figure(name, fig, f"A figure ``{name}``.", pd.DataFrame({"x": [0, 1, 2]}))


def _small_report(n_rows: int = 100, key_rows: tuple[int, ...] = ()) -> Report:
    wide = pd.DataFrame({f"column_{i}": range(n_rows) for i in range(30)})
    section = Section("Study", text="Reads ``x`` and ``y``.", name="study",
                      figures=[_figure(f"fig{i}") for i in range(3)],
                      tables=[Table("wide", wide, "A wide table", key_rows=list(key_rows))],
                      numbers={"best_acc": 0.75, "n_images": 8.0},
                      labels={"best_acc": "best-layer probe accuracy"},
                      findings=[Finding("How good?", "The probe reaches {best_acc:.0%}.")])
    card = Section("Model and data", text="The card.", name="card", lead=True)
    return Report("R", [section, card])


def test_findings_then_card_then_analyses_and_tables_say_what_they_show(tmp_path):
    out = _small_report(key_rows=(97,)).write(tmp_path / "r", workers=1)
    html = (out / "index.html").read_text()
    readme = (out / "README.md").read_text()
    order = [html.index(x) for x in ('id="findings"', 'id="card"', "<nav>", 'id="study"')]
    assert order == sorted(order)
    assert "The probe reaches 75%." in html and 'href="#study"' in html
    assert "- **How good?** The probe reaches 75%." in readme
    # the page and README.md both say how much of a long table they show, key rows included
    note = "First 40 and 1 key row of 100 rows."
    assert note in html and note in readme
    assert "<td>97</td>" in html and "| 97 |" in readme and "<td>60</td>" not in html
    assert '<div class="table-wrap"><table' in html and "overflow-x: auto" in html
    # RST inline code becomes <code> / Markdown code, never raw double backticks
    assert "<code>x</code>" in html and "Reads `x` and `y`." in readme
    assert "``" not in html and "``" not in readme
    assert "best-layer probe accuracy" in html and "Number of images" in readme
    assert json.loads((out / "results.json").read_text())["study"]["best_acc"] == 0.75


def test_a_table_of_up_to_60_rows_is_shown_whole(tmp_path):
    out = _small_report(n_rows=50).write(tmp_path / "r", workers=1)
    html = (out / "index.html").read_text()
    assert "<td>49</td>" in html and "First 40" not in html


def test_figures_are_laid_out_once_and_workers_write_the_same_bytes(tmp_path, monkeypatch):
    from matplotlib.figure import Figure as MplFigure

    draws = []
    real = MplFigure.draw
    monkeypatch.setattr(MplFigure, "draw", lambda self, r: (draws.append(self), real(self, r)))
    serial = _small_report().write(tmp_path / "serial", workers=1)
    # one render per format and no draw for the layout (savefig's "tight" drew twice per
    # format; the layout engine runs once, without drawing)
    assert len(draws) == 3 * 2
    monkeypatch.undo()
    forked = _small_report().write(tmp_path / "forked", workers=2)
    names = sorted(p.name for p in (serial / "figures").iterdir())
    assert names == sorted(p.name for p in (forked / "figures").iterdir())
    assert {p.rsplit(".", 1)[1] for p in names} == {"png", "svg"}
    for name in names:
        assert (serial / "figures" / name).read_bytes() == \
            (forked / "figures" / name).read_bytes(), name
    pdf = _small_report().write(tmp_path / "pdf", formats=("png", "svg", "pdf"), workers=2)
    assert (pdf / "figures" / "fig0.pdf").read_bytes().startswith(b"%PDF")
    assert 'href="figures/fig0.pdf"' in (pdf / "index.html").read_text()
    with pytest.raises(ReportError, match="jpeg"):
        _small_report().write(tmp_path / "bad", formats=("png", "jpeg"))


def test_spec_formats_choose_the_figure_files(tmp_path, run_spec_text):
    """``formats`` in a spec: PNG always, PDF only when asked (for LaTeX), SVG by default."""
    spec = ('formats = [{formats}]\nstore = "{{store}}"\n[data]\nsource = "shapes"\nn = 16\n'
            '[analyses.pe_similarity]\n')
    both = {}
    for name, formats in (("default", '"png", "svg"'), ("pdf", '"pdf"')):
        result, _ = run_spec_text(tmp_path, spec.format(formats=formats), name)
        both[name] = {p.suffix for p in (result.report_dir / "figures").iterdir()}
    assert both["default"] == {".png", ".svg"}
    assert both["pdf"] == {".png", ".pdf"}
