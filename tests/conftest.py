"""Shared fixtures. Tests run on the CPU with few threads so that two cores are enough."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _private_config(tmp_path_factory):
    """The analysis cache's signing key (``$XDG_CONFIG_HOME/probing``) goes to a folder of the
    test session, never to the home of the machine running the tests."""
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))


@pytest.fixture(autouse=True)
def _serial_analyses(monkeypatch):
    """Analyses run serially unless a test asks for processes: the default (``auto``) decides
    by the machine's load, and a test's outcome must not."""
    monkeypatch.setenv("PROBING_PROCESSES", "1")


@pytest.fixture(autouse=True)
def _own_log_setup():
    """Each test finds the ``probing`` logger as the one before it found it: a command run
    through click's test runner leaves the CLI's stderr handler (and its level) on the
    logger, which a later test would see printing."""
    logger = logging.getLogger("probing")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path of ``../shared/fixtures``; skips the test when it is absent (users' clones)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/fixtures is absent (it exists only on the developers' machines)")
    return SHARED


@pytest.fixture(scope="session")
def mnist_model(shared_fixtures: Path):
    """The pretrained MNIST ViT fixture mapped onto timm (skips when the fixture is absent)."""
    from probing import load_model

    return load_model(shared_fixtures / "mnist_vit" / "vit_mnist_gpu.pt", mapping="lucidrains",
                      mapping_options={"act": "relu", "mean": (0.1307,), "std": (0.3081,)})


@pytest.fixture(scope="session")
def mnist_source(shared_fixtures: Path):
    """The MNIST test set as an IdxSource (10,000 images; label column)."""
    from probing.data import IdxSource

    return IdxSource(shared_fixtures / "mnist_test" / "t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def demo_model():
    """The built-in demo model."""
    from probing import load_model

    return load_model("demo")


def _run_spec_text(tmp: Path, text: str, name: str):
    """Write a spec (``{store}`` filled with ``tmp/stores``), run it into ``tmp/name``.

    Returns ``(RunResult, results.json as a dict)``.
    """
    import json

    from probing.run.runner import run_spec

    spec = tmp / f"{name}.toml"
    spec.write_text(text.format(store=(tmp / "stores").as_posix()))
    result = run_spec(spec, out=tmp / name, quiet=True)
    return result, json.loads((result.report_dir / "results.json").read_text())


@pytest.fixture(scope="session")
def run_spec_text():
    """:func:`_run_spec_text`: run a spec given as text, get its result and key numbers."""
    return _run_spec_text
