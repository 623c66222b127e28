"""Thread limits for small work (probing.threads) and the run's limit for a tiny model."""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from probing.maps import TSNE_MAX_ITER, embedding_map, explained_variance
from probing.threads import (
    SMALL_FLOPS,
    TINY_PARAMS,
    small_blas,
    thread_scope,
    threads_for_model,
)


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_small_blas_limits_only_small_work():
    with threadpool_limits(limits=2, user_api="blas"):
        with small_blas(SMALL_FLOPS / 2):
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}
        with small_blas(SMALL_FLOPS * 2):
            assert _blas_threads() == {2}


def test_thread_scope_limits_torch_and_blas_and_restores_both():
    before = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):
        with thread_scope() as threads:
            threads.limit(None)
            assert torch.get_num_threads() == before and _blas_threads() == {2}
            threads.limit(1)
            assert torch.get_num_threads() == 1 and _blas_threads() == {1}
        assert torch.get_num_threads() == before and _blas_threads() == {2}


def test_tiny_models_get_one_thread(demo_model):
    n = sum(p.numel() for p in demo_model.model.parameters())
    assert threads_for_model(n) == 1
    assert threads_for_model(22_000_000) is None  # vit_small keeps the library defaults
    assert threads_for_model(TINY_PARAMS) is None


def test_maps_with_one_thread_equal_a_direct_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40))
    xc = x - x.mean(axis=0)
    with threadpool_limits(limits=2, user_api="blas"):
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
    ref = u[:, :2] * s[:2]
    ref *= np.sign(ref[np.abs(ref).argmax(axis=0), [0, 1]])
    np.testing.assert_allclose(embedding_map(x, "pca"), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(explained_variance(x), s**2 / (s**2).sum(), rtol=0, atol=1e-12)


def test_a_run_on_the_demo_model_uses_one_thread_and_restores(tmp_path, monkeypatch,
                                                              run_spec_text):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thread_count.py").write_text(
        "import torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from probing.sections import Section\n"
        "NEEDS = {'kinds': ['cls']}\n"
        "def run(ctx, n: int = 1):\n"
        "    blas = max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
        "    return Section(title='threads', numbers={'torch': torch.get_num_threads(),\n"
        "                                             'blas': blas})\n")
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(folder))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, numbers = run_spec_text(tmp_path, (
            'title = "t"\nseed = 0\nstore = "{store}"\n[model]\nspec = "demo"\n[data]\n'
            'source = "shapes"\nn = 8\n[capture]\nbatch_size = 8\nkinds = ["cls"]\n'
            "[analyses.thread_count]\n"), "r")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert numbers["thread_count"] == {"torch": 1, "blas": 1}


def test_tsne_map_equals_the_multithreaded_pipeline():
    """t-SNE on the top principal components, computed the old way (SVD on 2 BLAS threads),
    gives the same map: deterministic, so only rounding of the SVD could differ (tolerance 1e-8
    of the map's extent)."""
    from probing.tsne import exact_tsne

    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 32)) + np.repeat(rng.normal(size=(3, 32)) * 2, 30, axis=0)
    xc = x - x.mean(axis=0)
    with threadpool_limits(limits=2, user_api="blas"):
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        reduced = u[:, :32] * s[:32]
        reduced *= np.sign(reduced[np.abs(reduced).argmax(axis=0), np.arange(32)])
        init = reduced[:, :2] / np.std(reduced[:, 0]) * 1e-4
        ref = exact_tsne(reduced, 89 / 3, TSNE_MAX_ITER, init=init).embedding
        got = embedding_map(x, "tsne", seed=0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8 * np.ptp(ref))
