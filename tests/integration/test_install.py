"""A non-editable install carries the analyses and the demo spec, and never reads the
working directory's ``analyses/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """probing built as a wheel and installed (without dependencies) into a folder."""
    tmp = tmp_path_factory.mktemp("install")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "wheels"), str(ROOT)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip()[-300:]}")
    wheel = next((tmp / "wheels").glob("probing-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    return tmp / "site"


def _python(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PROBING_ANALYSES_PATH", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_wheel_holds_the_analyses_and_demo_spec(installed, tmp_path):
    # an untrusted working folder with an analyses/ folder of its own
    (tmp_path / "analyses").mkdir()
    (tmp_path / "analyses" / "evil.py").write_text(
        "from pathlib import Path\nPath('RAN').write_text('x')\ndef run(ctx):\n    pass\n")
    (tmp_path / "analyses" / "demo.toml").write_text('output = "/tmp/elsewhere"\n')
    res = _python(installed, tmp_path, (
        "import probing, probing.run.runner as r, probing.run.registry as g\n"
        "print(probing.__file__)\nprint(r.demo_spec_path())\nprint(sorted(g.discover()))\n"))
    assert res.returncode == 0, res.stderr
    module, demo, names = res.stdout.strip().splitlines()
    assert Path(module).is_relative_to(installed)
    assert Path(demo) == installed / "probing" / "analyses" / "demo.toml"
    assert "layer_probes" in names and "attribution" in names and "evil" not in names
    assert not (tmp_path / "RAN").exists()
    listing = _python(installed, tmp_path, "from probing.cli import main; main(['list'])")
    assert "layer_probes" in listing.stdout and not (tmp_path / "RAN").exists()
