"""The probe solver per kind: a table, a string, and the 'auto' rule."""

import numpy as np
import pandas as pd
import pytest

from probing.errors import ConfigError
from probing.frames import to_frame
from probing.layout import TokenLayout
from probing.probes import AUTO_RIDGE_ROWS, probe_layers, resolve_solver

LAYOUT = TokenLayout(grid=(2, 2), patch_size=(4, 4), prefix=("cls",))


def _frame(n=60):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    tokens = rng.normal(size=(n, LAYOUT.n_tokens, 4)).astype(np.float32)
    tokens[:, :, 0] += 4.0 * labels[:, None]
    return to_frame(tokens, LAYOUT, 1, np.arange(n), labels=pd.DataFrame({"label": labels}))


def test_auto_rule_and_tables():
    assert resolve_solver("auto", "cls", 10**6) == "logistic"
    assert resolve_solver("auto", "pooled", 10**6) == "logistic"
    assert resolve_solver("auto", "patch", AUTO_RIDGE_ROWS) == "logistic"
    assert resolve_solver("auto", "patch", AUTO_RIDGE_ROWS + 1) == "ridge"
    assert resolve_solver({"cls": "ridge"}, "cls", 5) == "ridge"
    assert resolve_solver({"cls": "ridge"}, "patch", 5) == "logistic"  # left out: auto
    with pytest.raises(ConfigError, match="kinds"):
        resolve_solver({"token": "ridge"}, "cls", 5)
    with pytest.raises(ConfigError, match="unknown"):
        resolve_solver({"cls": "svm"}, "cls", 5)


def test_probe_layers_uses_each_kinds_solver():
    frame = _frame()
    out = probe_layers(frame, "label", kind=["cls", "patch"], cv=3,
                       solver={"cls": "logistic", "patch": "ridge"}, progress=False)
    used = out.groupby("kind")["solver"].unique().to_dict()
    assert list(used["cls"]) == ["logistic"] and list(used["patch"]) == ["ridge"]
    ridge = probe_layers(frame, "label", kind="patch", cv=3, solver="ridge", progress=False)
    mine = out[out["kind"] == "patch"].reset_index(drop=True)
    np.testing.assert_allclose(mine["value"], ridge["value"])  # the same fits as solver="ridge"
    with pytest.raises(ConfigError, match="unknown"):
        probe_layers(frame, "label", kind="cls", solver="svm")
