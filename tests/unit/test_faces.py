"""The attention and attribution packages: faces that re-export, submodules that import alone.

Each submodule must import first, in a fresh interpreter (no circle that only works in one
order), and each face must define nothing itself: every public name has one home below it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULES = [
    "probing.patchgrid",
    "probing.targets",
    "probing.attention.inputs",
    "probing.attention.maps",
    "probing.attention.rollout",
    "probing.attention.ablation",
    "probing.attribution.inputs",
    "probing.attribution.methods",
    "probing.attribution.faithfulness",
    "probing.attribution.sanity",
]

FACES = {
    "probing.attention": [
        "ABLATION_COLUMNS", "ALL_HEADS", "ATTENTION_FORMS", "AblationMode", "AttentionInput",
        "JointAttention", "ParsedAttention", "ablate_heads", "head_ablation", "head_means",
        "head_sites", "attention_map_frame", "attention_maps", "gradient_relevance",
        "gradient_rollout",
        "mean_attention_distance", "mean_attention_distance_per_image",
        "pairwise_patch_distances", "parse_attention",
        "relevance_frame", "rollout", "rollout_map", "stack_attentions",
    ],
    "probing.attribution": [
        "ATTENTION_METHODS", "CAPTUM_METHODS", "AttributionMaps", "FaithfulnessResult",
        "SanityResult", "attribute", "attribution_maps", "black_baseline",
        "cascading_randomization",
        "deletion_curve", "faithfulness_curves", "insertion_curve", "make_baseline",
        "patch_feature_mask", "pixels_to_patches",
    ],
}


def test_every_submodule_imports_first_in_a_fresh_interpreter():
    script = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for k in [k for k in sys.modules if k == 'probing' or k.startswith('probing.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("face", sorted(FACES))
def test_face_reexports_its_names_from_their_homes(face):
    module = importlib.import_module(face)
    assert sorted(module.__all__) == sorted(FACES[face])
    for name in module.__all__:
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            # defined in a submodule or a shared leaf, never in the face itself
            assert home != face and home.startswith(("probing.attention.",
                                                     "probing.attribution.",
                                                     "probing.patchgrid")), (name, home)


def test_old_module_paths_are_gone():
    for old in ("attention.py", "attention_input.py", "attribution.py", "_faithfulness.py",
                "_sanity.py"):
        assert not (ROOT / "probing" / old).exists(), old
