"""logit_lens and head_ablation end to end: two independent paths to the model's accuracy agree.

The lens of the last block (read from stored tokens, or by forward passes when the store lacks
them) must give the intact model's accuracy that head_ablation measures by a plain forward.
"""

from __future__ import annotations

import pandas as pd
import pytest

STUDIES = """
[analyses.logit_lens]
target = "label"  # demo: the class names; no_cls (random head): the shape_id codes
max_images = {n}

[analyses.head_ablation]
target = "label"  # demo: the class names; no_cls (random head): the shape_id codes
max_images = {n}
modes = ["zero"]
"""

DEMO_SPEC = """
title = "lens and ablation"
seed = 0
store = "{store}"

[model]
spec = "demo"

[data]
source = "shapes"
n = 32

[capture]
kinds = ["cls"]
""" + STUDIES.format(n=32)

# average pooling, a register token, no CLS; capture has no patch tokens: the lens runs forward
NO_CLS_SPEC = """
title = "lens, no CLS"
seed = 1
store = "{store}"

[model]
spec = "vit_medium_patch16_gap_256"
pretrained = false
options = {{ img_size = [32, 48], patch_size = 8, depth = 2, reg_tokens = 1, embed_dim = 32, \
num_heads = 2, num_classes = 4 }}

[data]
source = "shapes"
n = 16

[capture]
kinds = ["reg"]
""" + STUDIES.format(n=16)


@pytest.fixture(scope="module", params=["demo", "no_cls"])
def run(request, tmp_path_factory, run_spec_text):
    text = DEMO_SPEC if request.param == "demo" else NO_CLS_SPEC
    return run_spec_text(tmp_path_factory.mktemp(request.param), text, request.param)


def test_last_layer_lens_accuracy_is_the_models_accuracy(run):
    result, numbers = run
    lens, ablation = numbers["logit_lens"], numbers["head_ablation"]
    depth = max(int(k[5:].split("_")[0]) for k in lens if k.endswith("_lens_accuracy"))
    assert lens[f"layer{depth}_lens_accuracy"] == pytest.approx(ablation["intact_accuracy"])
    assert lens[f"layer{depth}_mean_rank"] >= 0


def test_tables_and_figures_are_written(run):
    result, _ = run
    tables = result.report_dir / "tables"
    scores = pd.read_csv(tables / "logit_lens_scores.csv")
    assert set(scores["source"]) == {"lens", "probe"}
    drops = pd.read_csv(tables / "head_ablation.csv")
    assert set(drops["mode"]) == {"none", "zero"}
    assert (drops["head"] == -1).any()  # the whole-attention rows
    for name in ("logit_lens", "head_ablation_logit_drop", "head_ablation_accuracy_drop"):
        assert (result.report_dir / "figures" / f"{name}.png").stat().st_size > 0
