"""The README's real study, ``analyses/mnist_vit.toml``, run small on ``../shared`` (skipped where
that folder is absent): the MNIST ViT read through the IDX source keeps its accuracy, and every
analysis writes its section and findings."""

from __future__ import annotations

import json
import sys

from probing.run.spec import parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from conftest import ROOT, SHARED

SPEC = ROOT / "analyses" / "mnist_vit.toml"

#: Cheap parameters for the test run (the spec's own ones take minutes).
CHEAP = {
    "embedding_map": {"methods": ["pca"]},
    "layer_probes": {"cv": 3},
    "cka": {"n_boot": 20},
    "pe_similarity": {"n_null": 20},
    "pe_decay": {"n_null": 20},
    "pe_subspace": {"n_null": 20, "max_images": 32},
    "position_probes": {"max_images": 24, "patches_per_image": 8, "cv": 3},
    "attention_maps": {"n_images": 1},
    "attention_distance": {"max_images": 32, "n_boot": 20},
    "compare_probes": {"cv": 3},
    "compare_cka": {"n_boot": 20},
    "compare_attention_distance": {"max_images": 32, "n_boot": 20},
    "head_ablation": {"max_images": 32, "modes": ["mean"]},
    "rollout": {"n_images": 2},
    "attribution": {"n_images": 2, "n_steps": 8, "n_random": 1, "sanity_images": 1,
                    "n_boot": 20, "methods": ["rollout", "integrated_gradients"]},
}


def _spec() -> dict:
    return tomllib.loads(SPEC.read_text(encoding="utf-8"))


def test_the_mnist_spec_runs_every_demo_analysis_and_points_at_shared():
    data = _spec()
    demo = tomllib.loads((ROOT / "analyses" / "demo.toml").read_text(encoding="utf-8"))
    assert set(demo["analyses"]) | {"logit_lens", "head_ablation"} <= set(data["analyses"])
    for model in data["model"]:  # right and wrong preprocessing of the same weights
        assert (ROOT / model["spec"]).resolve() == SHARED / "mnist_vit" / "vit_mnist_gpu.pt"
    assert {"compare_probes", "compare_cka", "compare_attention_distance"} <= set(data["analyses"])
    assert (ROOT / data["data"]["source"]).resolve() == \
        SHARED / "mnist_test" / "t10k-images-idx3-ubyte.gz"
    parse_spec(data)  # every key and parameter valid


def test_a_small_mnist_study_keeps_the_models_accuracy_and_writes_the_report(
        shared_fixtures, tmp_path):
    from probing.run.runner import run_spec

    data = _spec()
    for model in data["model"]:
        model["spec"] = str(shared_fixtures / "mnist_vit" / "vit_mnist_gpu.pt")
    data["data"]["source"] = str(shared_fixtures / "mnist_test" / "t10k-images-idx3-ubyte.gz")
    data["data"]["n"] = 100
    data["store"] = str(tmp_path / "stores")
    data["capture"]["batch_size"] = 100
    for name, params in CHEAP.items():
        data["analyses"][name].update(params)
    result = run_spec(parse_spec(data), out=tmp_path / "report", quiet=True)
    numbers = json.loads((result.report_dir / "results.json").read_text())
    assert set(numbers) >= set(data["analyses"])  # every analysis wrote its key numbers
    lens = numbers["logit_lens"]
    assert lens["n_images"] == 100 and lens["layer6_lens_accuracy"] >= 0.9  # 97.2% on all 10,000
    assert numbers["head_ablation"]["intact_accuracy"] >= 0.9
    assert numbers["layer_probes"]["cls_last_accuracy"] > \
        numbers["layer_probes"]["cls_last_random_init_accuracy"]
    # the card: the primary (right preprocessing) keeps the model's accuracy
    assert numbers["card"]["top1"] >= 0.9
    assert (result.report_dir / "index.html").is_file()
    assert "t10k-images-idx3-ubyte.gz" in (result.report_dir / "provenance.json").read_text()
    summary = (result.report_dir / "README.md").read_text(encoding="utf-8")
    last = f"{lens['layer6_lens_accuracy']:.1%}"
    assert f"The model's head applied to layer 6 gives {last} accuracy" in summary
    assert "Which heads does the decision need?" in summary
