"""Exact t-SNE (van der Maaten & Hinton 2008) for maps of up to :data:`EXACT_MAX_POINTS` points.

Definitions (the paper's Sections 2-3), for inputs ``x_i`` and map points ``y_i``:

- ``p_{j|i} = exp(-beta_i d_ij) / sum_{k != i} exp(-beta_i d_ik)`` with ``d_ij = ||x_i - x_j||^2``
  and ``beta_i`` found by bisection so that the perplexity ``exp(H(P_i))`` (``H`` in nats)
  equals the requested one, to ``|H - log(perplexity)| < 1e-5``;
- ``p_ij = (p_{j|i} + p_{i|j}) / (2n)`` over every pair (no nearest-neighbour truncation);
- ``q_ij = (1 + ||y_i - y_j||^2)^-1 / Z`` with ``Z = sum_{k != l} (1 + ||y_k - y_l||^2)^-1``;
- cost ``KL(P || Q) = sum_{i != j} p_ij log(p_ij / q_ij)`` and its gradient
  ``dC/dy_i = 4 sum_j (p_ij - q_ij) (1 + ||y_i - y_j||^2)^-1 (y_i - y_j)``, computed exactly.

The optimisation is scikit-learn's schedule, which the maps used before: gradient descent with
momentum and per-coordinate gains (Jacobs 1988, as in the paper: +0.2 where the gradient still
points against the last step, x0.8 where it turned, at least 0.01), early exaggeration 12 with
momentum 0.5 for the first 250 iterations, then momentum 0.8, each stage starting at rest with
unit gains; learning rate ``max(n / 48, 50)`` (Belkina et al. 2019, scikit-learn's ``"auto"``);
PCA initialisation scaled to standard deviation 1e-4 in the first coordinate (signs fixed: each
column's largest-magnitude entry positive); every 50 iterations a stop when the gradient norm is
below 1e-7 or the cost has not fallen for :data:`NO_PROGRESS` iterations (250 in the exaggerated
stage).

Compared with scikit-learn's ``method="exact"`` (the same definitions and schedule), the
gradient is a few dense ``(n, n)`` array operations instead of a Python loop over points, in
float32 on one thread: the squared distances come from one ``(n, 4) @ (4, n)`` product of the
centred map, whose rounding (about ``6e-8 * (||y_i||^2 + ||y_j||^2)``) changes ``q_ij`` by a
relative 1e-4 or less on maps of extent below 100. Barnes-Hut t-SNE (van der Maaten 2014, what
scikit-learn runs by default) replaces ``P`` by its 90 nearest neighbours and approximates the
repulsive forces to about 1e-2; for a few hundred points the exact gradient is also the faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["EXACT_MAX_POINTS", "TSNEResult", "exact_tsne", "joint_probabilities",
           "kl_gradient"]

EXACT_MAX_POINTS = 1000
"""Largest map :func:`probing.maps.embedding_maps` draws with :func:`exact_tsne` (Barnes-Hut
above). Time grows with ``n^2``: 500 iterations took 0.5 s at 500 points, 2.7 s at 1000 and
12.8 s at 2000 on one core, Barnes-Hut (scikit-learn, one thread) 1.4, 3.2 and 6.7 s."""

EXAGGERATION = 12.0
EXAGGERATED_ITERATIONS = 250
NO_PROGRESS = 300
CHECK_EVERY = 50
MIN_GRAD_NORM = 1e-7
_PERPLEXITY_TOL = 1e-5


@dataclass(frozen=True)
class TSNEResult:
    """What :func:`exact_tsne` returns.

    Attributes
    ----------
    embedding : numpy.ndarray
        ``(n, 2)`` float64 map coordinates.
    kl_divergence : float
        ``KL(P || Q)`` of the final map.
    n_iter : int
        Iterations run.
    """

    embedding: np.ndarray
    kl_divergence: float
    n_iter: int


def joint_probabilities(x: np.ndarray, perplexity: float) -> np.ndarray:
    """The symmetric t-SNE affinities ``p_ij`` of the rows of ``x`` (module docstring).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, D)`` inputs, ``n >= 2``.
    perplexity : float
        Effective number of neighbours of each point; below ``n - 1``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64, symmetric, zero diagonal, summing to 1.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 0 < perplexity < n - 1:
        raise ConfigError(f"t-SNE perplexity {perplexity} must lie in (0, {n - 1}) for {n} "
                          "points; choose a smaller perplexity or map more points.")
    sq = (x * x).sum(axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d, np.inf)
    d -= d.min(axis=1, keepdims=True)  # p_{j|i} is unchanged; exp never underflows to all 0
    np.fill_diagonal(d, 0.0)  # p_{i|i} = 0 is set in _conditional
    cond = _conditional(d, np.log(perplexity))
    p = cond + cond.T
    return p / p.sum()


def _conditional(d: np.ndarray, target: float) -> np.ndarray:
    """``p_{j|i}`` of row-shifted squared distances ``d`` (zero diagonal: ``p_{i|i} = 0``) with
    each row's entropy (nats) within :data:`_PERPLEXITY_TOL` of ``target``.

    Each row's ``log beta_i`` is found by Newton's method on the entropy ``H(beta)``, which
    falls with ``beta`` (``dH / dlog(beta) = -beta^2 Var_p(d)``), kept inside the bracket of
    the values seen so far: a step that leaves it is replaced by bisection (doubling or
    halving ``beta`` while one side is open)."""
    n = len(d)
    # start from the scale of each row's distances (the search is scale free from there)
    u = -np.log(np.maximum(d.sum(axis=1) / max(n - 1, 1), 1e-300))  # log beta
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    todo = np.arange(n)
    for _ in range(200):
        rows = d if len(todo) == n else d[todo]
        beta = np.exp(u[todo])
        e = np.exp(rows * -beta[:, None])
        e[np.arange(len(todo)), todo] = 0.0
        s = e.sum(axis=1)  # >= 1: the nearest neighbour's term is exp(0)
        e *= rows
        m1 = e.sum(axis=1) / s
        m2 = np.einsum("ij,ij->i", e, rows) / s
        gap = np.log(s) + beta * m1 - target
        over = gap > 0  # entropy too high: sharpen (larger beta)
        lo[todo] = np.where(over, u[todo], lo[todo])
        hi[todo] = np.where(over, hi[todo], u[todo])
        slope = beta * beta * np.maximum(m2 - m1 * m1, 0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            step = u[todo] + gap / slope
        inside = np.isfinite(step) & (step > lo[todo]) & (step < hi[todo])
        bisect = np.where(np.isfinite(lo[todo]) & np.isfinite(hi[todo]),
                          (lo[todo] + hi[todo]) / 2,
                          np.where(over, u[todo] + np.log(2.0), u[todo] - np.log(2.0)))
        left = np.abs(gap) >= _PERPLEXITY_TOL  # the others keep the beta that met the target
        u[todo[left]] = np.where(inside, step, bisect)[left]
        todo = todo[left]
        if not len(todo):
            break
    p = np.exp(d * -np.exp(u)[:, None])
    np.fill_diagonal(p, 0.0)
    return p / p.sum(axis=1, keepdims=True)


def kl_gradient(y: torch.Tensor, p: torch.Tensor, work: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The exact gradient ``dKL(P || Q)/dy`` (module docstring) of the map ``y``.

    Parameters
    ----------
    y : torch.Tensor
        ``(n, 2)`` map, centred (the distances are formed from inner products).
    p : torch.Tensor
        ``(n, n)`` affinities of the same dtype (any diagonal: its terms cancel).
    work : torch.Tensor, optional
        ``(2, n, n)`` scratch of the same dtype, reused across calls (a fresh ``(n, n)``
        array per operation costs more than the operation at a few hundred points).

    Returns
    -------
    (torch.Tensor, torch.Tensor, float)
        The ``(n, 2)`` gradient; the ``(n, n)`` kernel ``(1 + ||y_i - y_j||^2)^-1`` with a
        zero diagonal (a view of ``work`` when given); ``Z``, its sum.
    """
    import torch

    n = len(y)
    if work is None:
        work = torch.empty((2, n, n), dtype=y.dtype)
    num, w = work[0], work[1]
    sq = (y * y).sum(dim=1, keepdim=True)
    one = torch.ones_like(sq)
    # 1 + ||y_i||^2 + ||y_j||^2 - 2 y_i.y_j as one product of (n, 4) and (4, n) matrices
    torch.matmul(torch.cat([-2.0 * y, one, sq + 1.0], 1), torch.cat([y, sq, one], 1).T, out=num)
    num.reciprocal_().fill_diagonal_(0.0)  # q_ii = 0 (not the rounding of 1 / (1 + 0))
    z = float(num.sum())
    torch.add(p, num, alpha=-1.0 / z, out=w).mul_(num)  # (p_ij - q_ij) (1 + d_ij)^-1
    r = w @ torch.cat([y, one], 1)  # sum_j w_ij y_j, and sum_j w_ij in the last column
    return 4.0 * (r[:, 2:] * y - r[:, :2]), num, z


def _kl(p, plogp: float, num, z: float) -> float:
    """``sum p log(p / q)`` from the kernel ``num`` and its sum ``z`` (``plogp = sum p log p``;
    ``p`` sums to one and has a zero diagonal). Sets ``num``'s diagonal to 1."""
    num.fill_diagonal_(1.0)  # log(1) = 0 where p_ii = 0
    return float(plogp - (p * num.log()).sum(dtype=p.dtype) + p.sum() * np.log(z))


def exact_tsne(x: np.ndarray, perplexity: float = 30.0, max_iter: int = 1000,
               init: np.ndarray | None = None) -> TSNEResult:
    """Exact t-SNE of the rows of ``x`` (module docstring: definitions and schedule).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, D)`` inputs (e.g. the top principal components of the embeddings).
    perplexity : float
        Perplexity of the input affinities, below ``n - 1``.
    max_iter : int
        Iterations in all, the :data:`EXAGGERATED_ITERATIONS` of early exaggeration included.
    init : numpy.ndarray, optional
        ``(n, 2)`` starting map, used as given. Default: the first two principal components of
        ``x`` scaled to standard deviation 1e-4 in the first.

    Returns
    -------
    TSNEResult
    """
    import torch

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n < 3:
        raise ConfigError(f"t-SNE needs an (n >= 3, D) array, got shape {x.shape}.")
    if init is None:
        xc = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        init = u[:, :2] * s[:2]
        init = init * np.where(init[np.abs(init).argmax(axis=0), np.arange(init.shape[1])] < 0,
                               -1.0, 1.0)
        init = np.pad(init, ((0, 0), (0, 2 - init.shape[1])))
        init = init / max(float(np.std(init[:, 0])), 1e-300) * 1e-4
    init = np.asarray(init, dtype=np.float64)
    if init.shape != (n, 2):
        raise ConfigError(f"t-SNE init has shape {init.shape}; give one ({n}, 2) row per point.")
    p64 = joint_probabilities(x, perplexity)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense work: a second thread only waits (probing.threads)
    try:
        with torch.no_grad():
            return _descend(p64, init, max_iter)
    finally:
        torch.set_num_threads(before)


def _descend(p64: np.ndarray, init: np.ndarray, max_iter: int) -> TSNEResult:
    """Gradient descent of the exact KL from ``init`` (module docstring: the schedule)."""
    import torch

    n = len(p64)
    p = torch.from_numpy(p64.astype(np.float32))
    plogp = float((p64[p64 > 0] * np.log(p64[p64 > 0])).sum())
    y = torch.from_numpy(init.astype(np.float32))
    y -= y.mean(dim=0)  # the gradient sums to zero: centring moves the map, not its shape
    rate = max(n / EXAGGERATION / 4.0, 50.0)
    work = torch.empty((2, n, n), dtype=p.dtype)
    it = 0
    for stage, (alpha, momentum, stop) in enumerate(
            [(EXAGGERATION, 0.5, min(EXAGGERATED_ITERATIONS, max_iter)), (1.0, 0.8, max_iter)]):
        pa = p * alpha if alpha != 1.0 else p
        update = torch.zeros_like(y)  # each stage starts at rest, with unit gains
        gains = torch.ones_like(y)
        best, best_it = np.inf, it
        patience = EXAGGERATED_ITERATIONS if stage == 0 else NO_PROGRESS
        while it < stop:
            check = (it + 1) % CHECK_EVERY == 0 or it == max_iter - 1
            grad, num, z = kl_gradient(y, pa, work)
            if check:  # the cost of the exaggerated P, as scikit-learn tracks it
                kl = alpha * (_kl(p, plogp, num, z) + np.log(alpha))
            flip = (update * grad) < 0
            gains = torch.where(flip, gains + 0.2, gains * 0.8).clamp_(min=0.01)
            grad = grad * gains
            update = momentum * update - rate * grad
            y += update
            it += 1
            if check:
                if float(torch.linalg.vector_norm(grad)) <= MIN_GRAD_NORM:
                    break
                if kl < best:
                    best, best_it = kl, it
                elif it - best_it > patience:
                    break
    _, num, z = kl_gradient(y, p, work)
    return TSNEResult(y.to(torch.float64).numpy(), _kl(p, plogp, num, z), it)
