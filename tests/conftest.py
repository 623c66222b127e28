"""Shared fixtures. Tests run on the CPU with few threads so that two cores are enough."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path of ``../shared/fixtures``; skips the test when it is absent (users' clones)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/fixtures is absent (it exists only on the developers' machines)")
    return SHARED
