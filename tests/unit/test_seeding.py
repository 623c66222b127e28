"""Seeded steps leave the caller's global torch RNG state unchanged; Dask tasks check weights."""

from __future__ import annotations

import pytest
import torch

from probing import AnalysisError, ModelError, load_model, random_init_copy


def _reference_draws(seed: int = 1234, n: int = 3) -> torch.Tensor:
    """What the caller's global generator yields after ``manual_seed(seed)`` if nobody else
    touches it: one draw before the call under test, ``n - 1`` after."""
    torch.manual_seed(seed)
    return torch.rand(n)


def _draws_around(call, seed: int = 1234, n: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    before = torch.rand(1)
    call()
    return torch.cat([before, torch.rand(n - 1)])


def test_random_init_copy_keeps_the_global_rng():
    loaded = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                        depth=1)
    box = {}
    got = _draws_around(lambda: box.setdefault("a", random_init_copy(loaded, seed=5)))
    assert torch.equal(got, _reference_draws())
    again = random_init_copy(loaded, seed=5)  # still seeded: same weights from any RNG state
    assert torch.equal(box["a"].model.pos_embed, again.model.pos_embed)


def test_run_spec_seeds_the_run_but_keeps_the_global_rng(monkeypatch, tmp_path):
    from probing.run import runner

    inside = {}

    def fake_run(spec, *args, **kwargs):
        inside["draw"] = torch.rand(2)
        return "done"

    monkeypatch.setattr(runner, "_run_spec", fake_run)
    spec = runner.load_spec(runner.demo_spec_path())
    got = _draws_around(lambda: runner.run_spec(spec, out=tmp_path / "r", quiet=True))
    assert torch.equal(got, _reference_draws())
    torch.manual_seed(spec.seed)
    assert torch.equal(inside["draw"], torch.rand(2))  # the run itself is seeded by the spec


def test_dask_worker_model_keeps_the_global_rng():
    from probing.run import distributed

    recipe = distributed.model_recipe("vit_tiny_patch16_224", seed=7, pretrained=False,
                                      img_size=32, patch_size=8, depth=1)
    distributed._CACHE.clear()
    got = _draws_around(lambda: distributed.worker_model(recipe))
    first = distributed.worker_model(recipe)
    assert torch.equal(got, _reference_draws())
    distributed._CACHE.clear()
    torch.manual_seed(999)  # another RNG state: the recipe's seed still fixes the weights
    assert first.fingerprint == distributed.worker_model(recipe).fingerprint
    distributed._CACHE.clear()


def test_dask_analysis_task_checks_the_weights_like_the_shard_task(tmp_path):
    from probing import EmbeddingStore
    from probing.run import distributed

    recipe = distributed.model_recipe("vit_tiny_patch16_224", seed=7, pretrained=False,
                                      img_size=32, patch_size=8, depth=1)
    data = distributed.data_recipe("shapes:n=4")
    store = EmbeddingStore(tmp_path / "s")
    store.prepare({"schema_version": 1, "model": {"fingerprint": "0123456789abcdef"}})
    distributed._CACHE.clear()
    try:
        with pytest.raises(ModelError, match="other weights"):
            distributed.analysis_task(recipe, data, str(store.path), 0, 4,
                                      tmp_path / "no_analysis.py", {})
        right = distributed.worker_model(recipe).fingerprint
        with pytest.raises(ModelError, match="other weights"):
            distributed.analysis_task(recipe, data, str(store.path), 0, 4,
                                      tmp_path / "no_analysis.py", {}, fingerprint="f" * 16)
        with pytest.raises(AnalysisError, match="no_analysis.py"):  # past the weight check
            distributed.analysis_task(recipe, data, str(store.path), 0, 4,
                                      tmp_path / "no_analysis.py", {}, fingerprint=right)
    finally:
        distributed._CACHE.clear()
