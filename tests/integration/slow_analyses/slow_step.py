"""Test-only analysis: stalls (so a test can SIGKILL the run) while PROBING_TEST_STALL is set.

PROBING_TEST_STALL=analysis stalls inside run(); =report stalls while the report writes this
section's table. Each writes PROBING_TEST_MARKER first so the test knows where the run is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from probing.frames import embedding_matrix
from probing.sections import Section, Table

DESCRIPTION = "test-only: mean CLS norm, with an optional stall"
NEEDS = {"kinds": ["cls"]}


def _stall(where: str) -> None:
    if os.environ.get("PROBING_TEST_STALL") == where:
        Path(os.environ["PROBING_TEST_MARKER"]).write_text(where)
        time.sleep(600)


class _StallingFrame(pd.DataFrame):
    def to_csv(self, *args, **kwargs):
        _stall("report")
        return super().to_csv(*args, **kwargs)


def run(ctx) -> Section:
    _stall("analysis")
    frame = ctx.tokens("cls", "last")
    norm = float(np.linalg.norm(embedding_matrix(frame), axis=1).mean())
    table = _StallingFrame({"layer": [ctx.depth], "mean_cls_norm": [norm]})
    return Section(title="Slow step", numbers={"mean_cls_norm": norm},
                   tables=[Table("slow_step", table, "Mean CLS norm")])
