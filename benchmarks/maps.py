"""t-SNE of an embedding map: exact t-SNE (:mod:`probing.tsne`) against scikit-learn's
Barnes-Hut t-SNE, the method the maps used before, on the same input.

Input: 50 principal components of ``n`` points in 10 Gaussian clusters (the demo maps 512
images). Both run the same schedule (500 iterations, perplexity 30, PCA start) on one thread;
times are CPU seconds, the two run round-robin. Exact t-SNE is used up to
:data:`probing.tsne.EXACT_MAX_POINTS` points, where it must be the faster. The quality row
compares the exact cost ``KL(P || Q)`` (full ``P``) of the two maps: the faster map must be as
good (the optimisation is chaotic, so a few per cent either way is noise).
"""

from __future__ import annotations

import numpy as np

from benchmarks._common import Row, interleaved_clocks, print_rows


def _data(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 64)) + np.repeat(rng.normal(size=(10, 64)) * 2, -(-n // 10),
                                             axis=0)[:n]
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    return u[:, :50] * s[:50]


def _exact_kl(p: np.ndarray, y: np.ndarray) -> float:
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    num = 1.0 / (1.0 + d)
    np.fill_diagonal(num, 0.0)
    q = num / num.sum()
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


def run(quick: bool = False) -> list[Row]:
    """Exact t-SNE against Barnes-Hut at 512 (and 1000) points: time and cost."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from probing.tsne import exact_tsne, joint_probabilities

    rows = []
    for n in (512,) if quick else (512, 1000):
        x = _data(n)
        init = x[:, :2] / np.std(x[:, 0]) * 1e-4
        maps = {}

        def ours(x=x, init=init, maps=maps):
            maps["exact"] = exact_tsne(x, 30.0, 500, init=init).embedding

        def barnes_hut(x=x, maps=maps):
            with threadpool_limits(1):
                maps["bh"] = TSNE(2, perplexity=30.0, init="pca", random_state=0,
                                  learning_rate="auto", max_iter=500).fit_transform(x)

        (c_ours, w_ours), (c_bh, w_bh) = interleaved_clocks([ours, barnes_hut],
                                                            repeat=2 if quick else 3)
        rows.append(Row(f"exact t-SNE {n} points, 500 iterations (vs Barnes-Hut)", c_ours,
                        c_bh, "cpu s", "<= 0.6" if n <= 512 else "<= 1.0", wall=w_ours,
                        wall_baseline=w_bh, wall_ratio=w_ours / w_bh))
        p = joint_probabilities(x, 30.0)
        kl, kl_bh = _exact_kl(p, maps["exact"]), _exact_kl(p, maps["bh"])
        rows.append(Row(f"exact t-SNE {n} points: KL(P||Q) of the map (vs Barnes-Hut's map)",
                        kl, kl_bh, "nats", "<= 1.05"))
    return rows


if __name__ == "__main__":
    print_rows(run())
