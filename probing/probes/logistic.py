"""L2-penalised logistic regression by L-BFGS: the one logistic solver of the probes.

The objective is scikit-learn's ``LogisticRegression(penalty="l2", solver="lbfgs")`` with an
unpenalised intercept, in its scaling (the minimiser of ``C * sum_i CE_i + ||W||^2 / 2``,
divided by ``C n``)::

    f(W, b) = (1 / n) sum_i CE_i + ||W||_F^2 / (2 C n)

- ``K > 2`` classes, multinomial: logits ``z_i = W x_i + b`` with ``W`` ``(K, d)`` and ``b``
  ``(K,)``, ``CE_i = logsumexp(z_i) - z_{i, y_i}`` (a softmax over all ``K`` classes);
- ``K = 2``, binomial: one logit ``z_i = w . x_i + b`` for class 1,
  ``CE_i = log(1 + exp(z_i)) - [y_i = 1] z_i``: the two-class softmax with class 0's logits
  held at zero (not the two-class softmax with both rows penalised, which would halve the
  penalty on ``w``). It is returned as the two softmax logits ``(-z / 2, z / 2)``, whose
  softmax is the sigmoid of ``z`` (scikit-learn's ``predict_proba``).

The minimiser is found by limited-memory BFGS (Nocedal & Wright 2006, "Numerical
Optimization", algorithms 7.4 and 7.5) with scikit-learn's lbfgs settings: 10 correction pairs,
a start at zero, and a stop at the first iterate whose gradient has no entry above ``tol`` in
absolute value, or whose relative decrease of ``f`` is at most 64 machine epsilons, or after
``max_iter`` iterations (not converged: a ``ConvergenceWarning``, as scikit-learn gives). The
step is the unit quasi-Newton step (``1 / ||g||`` on the first iteration), backtracked until
the Armijo condition ``f(x + t d) <= f(x) + 1e-4 t g.d`` holds (safeguarded quadratic
interpolation, at most 50 trials). The curvature condition needs no line search here: ``f``
is strictly convex (but for a common shift of the intercepts, which no step makes), so
``s.y > 0`` for every step; a pair with ``s.y <= eps y.y`` (rounding, at the optimum) adds
nothing.

:func:`fit_logistic_many` solves independent problems together: each follows its own L-BFGS
iterates, and one numpy call does the arithmetic of all of them. Problems whose rows and
features pad to the same multiple of :data:`PAD`, with the same number of classes, share a
batch, and each one's result is the same, to the last bit, as when it is solved alone. A
cross-validation sweep (every fold x target x kind of a layer) then costs about one problem's
interpreter overhead instead of one per problem: the overhead, not the arithmetic, is what a
fit on a few hundred rows of a few dozen features spends its time on.

More features than rows (``d > n``): the optimum has ``W`` in the row space of ``X`` (the
penalty only grows outside it), so the fit runs in an orthonormal basis of that space, ``r <=
n`` coordinates per class instead of ``d`` (``X = F Q^T`` from the eigendecomposition of
``X X^T``; ``W = V Q^T``, ``X W^T = F V^T``, ``||W|| = ||V||``). L-BFGS is invariant under the
orthogonal change of coordinates and the start (zero) lies in the row space, so the iterates
are those of the full problem; the stopping test stays the one above, on the gradient in the
original coordinates (``g_W = g_V Q^T``), computed in full only when cheaper bounds cannot
decide it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BATCH_BYTES", "PAD", "LogisticFit", "fit_logistic", "fit_logistic_many"]

#: L-BFGS correction pairs (scikit-learn's lbfgs: scipy's default ``maxcor``).
MEMORY = 10
#: Most step-size trials per iteration (scikit-learn passes ``maxls=50``).
MAX_LINE_SEARCH = 50
#: Armijo constant of the sufficient-decrease condition.
ARMIJO = 1e-4
#: Relative decrease of ``f`` at which the iteration stops (scikit-learn: ``64 * eps``).
FTOL = 64 * np.finfo(np.float64).eps
#: Bytes of (padded) features solved together; more are solved in groups.
BATCH_BYTES = 16 * 2**20
#: Rows and features are padded up to a multiple of this. Problems of one padded shape and
#: number of classes are solved together, and the arithmetic of each is then the same whichever
#: problems share its batch (the same result solved alone or with others, to the last bit).
PAD = 16
#: Original-gradient columns kept between full stopping tests of a row-space fit: the largest
#: entries of the last full test, checked first (a cheap proof of "not yet").
WATCHED = 64


@dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic regression.

    Attributes
    ----------
    coef : numpy.ndarray
        ``(K, d)`` softmax logits per class (``K = 2``: ``(-w / 2, w / 2)``).
    intercept : numpy.ndarray
        ``(K,)`` biases (``K = 2``: ``(-b / 2, b / 2)``).
    n_iter : int
        L-BFGS iterations.
    converged : bool
        False when ``max_iter`` or the line search ended the iteration first.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool


class _RowSpace:
    """An orthonormal basis ``Q`` of the row space of ``X`` ``(n, d)``, kept implicit:
    ``X = F Q^T`` with ``F = U sqrt(lam)`` and ``Q^T = lam^{-1/2} U^T X`` from
    ``X X^T = U diag(lam) U^T`` (eigenvalues at rounding level dropped)."""

    def __init__(self, X: np.ndarray) -> None:
        lam, U = np.linalg.eigh(X @ X.T)
        keep = lam > lam[-1] * max(X.shape) * np.finfo(np.float64).eps
        self.X, self.U, self.root = X, U[:, keep], np.sqrt(lam[keep])
        self.F = self.U * self.root  # (n, r)
        self.Q_watched = np.empty((0, self.root.size))  # rows of Q: the watched columns

    def to_original(self, V: np.ndarray) -> np.ndarray:
        """``V Q^T``: ``(K, r)`` -> ``(K, d)``."""
        return ((V / self.root) @ self.U.T) @ self.X

    def passes(self, gV: np.ndarray, tol: float) -> bool:
        """Whether ``max |g_V Q^T| <= tol``: first on the columns that were largest at the
        last full test (a cheap proof of "no"), then on all."""
        if len(self.Q_watched) and np.abs(gV @ self.Q_watched.T).max() > tol:
            return False
        worst = np.abs(self.to_original(gV)).max(axis=0)
        watched = np.argsort(worst)[-WATCHED:]
        self.Q_watched = (self.X[:, watched].T @ self.U) / self.root
        return bool(worst.max() <= tol)


class _Batch:
    """Independent problems of one padded shape, for one numpy call per step.

    Problem ``b`` has ``n_b`` rows and ``p_b`` features (``d``, or ``r_b`` in a row-space
    basis), padded to ``N`` and ``p`` (:func:`_padded`), and ``K`` classes. Parameters are
    ``(B, K, p + 1)``: weights then bias per class. Padded rows have zero features and zero
    weight in the loss; padded features have zero gradient and so stay zero; in a binomial
    batch class 0's row is held at zero.
    """

    def __init__(self, problems: Sequence[tuple[np.ndarray, np.ndarray]], C: float,
                 shape: tuple[int, int, int]) -> None:
        N, p, K = shape
        B = len(problems)
        self.XaT = np.zeros((B, p + 1, N))
        self.weight = np.zeros((B, N))
        self.counts = np.zeros((B, K, p + 1))
        self.l2 = np.empty((B, 1, 1))
        self.free = None
        if K == 2:
            self.free = np.ones((1, K, 1))
            self.free[0, 0] = 0.0
        for b, (F, codes) in enumerate(problems):
            n, pb = F.shape
            self.XaT[b, :pb, :n] = F.T
            self.XaT[b, p, :n] = 1.0
            self.weight[b, :n] = 1.0 / n
            onehot = np.zeros((K, n))
            onehot[np.asarray(codes), np.arange(n)] = 1.0 / n
            self.counts[b] = onehot @ self.XaT[b, :, :n].T
            self.l2[b] = 1.0 / (C * n)

    def take(self, keep: np.ndarray) -> None:
        """Keep only the problems ``keep`` (positions in the current arrays)."""
        for name in ("XaT", "weight", "counts", "l2"):
            setattr(self, name, getattr(self, name)[keep])

    def loss_grad(self, P: np.ndarray, rows: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``(B,)`` losses and ``(B, K, p + 1)`` gradients at parameters ``P`` (of every
        problem, or of the problems ``rows``)."""
        arrays = (self.XaT, self.weight, self.counts, self.l2)
        if rows is None:
            return _loss_grad(P, *arrays, self.free)
        # a few problems (those a line search backtracks): views of each, not a gathered copy
        parts = [_loss_grad(P[i:i + 1], *(a[b:b + 1] for a in arrays), self.free)
                 for i, b in enumerate(rows)]
        return np.concatenate([f for f, _ in parts]), np.concatenate([g for _, g in parts])


def _loss_grad(P, XaT, weight, counts, l2, free) -> tuple[np.ndarray, np.ndarray]:
    """Losses and gradients of a batch (the arrays of :class:`_Batch`)."""
    z = P @ XaT  # (B, K, N)
    top = z.max(axis=1)
    z -= top[:, None]
    np.exp(z, out=z)
    s = z.sum(axis=1)
    loss = ((np.log(s) + top) * weight).sum(axis=1)
    loss -= np.einsum("bkj,bkj->b", counts, P)
    z *= (weight / s)[:, None]  # the softmax, weighted by 1 / n
    # (B, K, p + 1); a contiguous (B, N, K) operand: 3x faster than a transposed view
    grad = np.swapaxes(XaT @ np.ascontiguousarray(np.swapaxes(z, 1, 2)), 1, 2)
    grad -= counts
    W = P[:, :, :-1]
    grad[:, :, :-1] += l2 * W
    if free is not None:  # a binomial batch: class 0's row stays zero
        grad *= free
    loss += 0.5 * l2[:, 0, 0] * np.einsum("bkj,bkj->b", W, W)
    return loss, grad


def _passes(batch: _Batch, order: np.ndarray, G: np.ndarray, tol: float) -> np.ndarray:
    """The stopping test on the original gradient of each current problem (``G`` holds the
    current problems' gradients, ``order`` their original indices)."""
    out = np.abs(G).reshape(len(G), -1).max(axis=1) <= tol
    rotated = [i for i, b in enumerate(order) if batch.bases[b] is not None]
    if rotated:
        # the biases are not rotated; a row's mean square is at most its largest entry
        d = np.array([batch.bases[order[i]].X.shape[1] for i in rotated])
        Gr = G[rotated]
        bias_ok = np.abs(Gr[:, :, -1]).max(axis=1) <= tol
        rms_ok = np.sqrt((Gr[:, :, :-1] ** 2).sum(axis=2).max(axis=1) / d) <= tol
        for i, ok in zip(rotated, bias_ok & rms_ok):
            b = order[i]
            out[i] = bool(ok) and batch.bases[b].passes(G[i, :, :batch.sizes[b]], tol)
    return out


class _Memory:
    """The L-BFGS correction pairs of every current problem, in compact form.

    ``H g`` with ``H`` the L-BFGS inverse Hessian of the last ``m`` pairs ``(s_i, y_i)`` and
    ``H_0 = gamma I`` (``gamma = s.y / y.y`` of the newest pair) is, in the compact form of
    Byrd, Nocedal & Schnabel (1994, eq. 3.13; Nocedal & Wright 2006, eq. 7.24)::

        H g = gamma g + S u - gamma Y w,   w = R^{-1} S^T g,
        u = R^{-T} (D w + gamma Y^T Y w - gamma Y^T g)

    with ``S``, ``Y`` the pairs, ``R`` the upper triangle (in the order the pairs were made)
    of ``S^T Y`` and ``D`` its diagonal: the two-loop recursion's result in a few batched
    products. Pairs sit in a ring of ``m`` slots. ``R^{-1}`` is kept up to date: dropping the
    oldest pair (the first row and column of a triangular matrix) leaves the rest of the
    inverse as it is, and a new pair adds the column ``-R^{-1} c / (s.y)``. An empty slot or a
    skipped pair is a zero pair with a unit pivot, which adds nothing.
    """

    def __init__(self, B: int, D: int) -> None:
        self.S, self.Y = np.zeros((B, MEMORY, D)), np.zeros((B, MEMORY, D))
        self.SY, self.YY = np.zeros((B, MEMORY, MEMORY)), np.zeros((B, MEMORY, MEMORY))
        self.Rinv = np.zeros((B, MEMORY, MEMORY))
        self.gamma = np.ones(B)
        self.made = 0

    def take(self, keep: np.ndarray) -> None:
        for name in ("S", "Y", "SY", "YY", "Rinv", "gamma"):
            setattr(self, name, getattr(self, name)[keep])

    def reset(self, rows: np.ndarray) -> None:
        """Forget the pairs of the problems ``rows`` (a restart from steepest descent)."""
        for name in ("S", "Y", "SY", "YY", "Rinv"):
            getattr(self, name)[rows] = 0.0
        self.gamma[rows] = 1.0

    def direction(self, g: np.ndarray) -> np.ndarray:
        """``-H g`` for each problem, ``g`` ``(B, D)``."""
        if self.made == 0:
            return -g
        gam = self.gamma[:, None]
        w = np.einsum("bij,bj->bi", self.Rinv, np.einsum("bmd,bd->bm", self.S, g))
        rhs = np.einsum("bii->bi", self.SY) * w
        rhs += gam * (np.einsum("bij,bj->bi", self.YY, w) - np.einsum("bmd,bd->bm", self.Y, g))
        u = np.einsum("bji,bj->bi", self.Rinv, rhs)
        Hg = gam * g
        Hg += np.einsum("bmd,bm->bd", self.S, u)
        Hg -= np.einsum("bmd,bm->bd", self.Y, gam * w)
        return -Hg

    def push(self, s: np.ndarray, y: np.ndarray) -> None:
        """Add the pair of this iteration in place of the oldest; a pair with
        ``s.y <= eps y.y`` is stored as a zero pair (it adds nothing)."""
        sy = np.einsum("bd,bd->b", s, y)
        yy = np.einsum("bd,bd->b", y, y)
        valid = sy > np.finfo(np.float64).eps * yy
        s, y = s * valid[:, None], y * valid[:, None]
        j = self.made % MEMORY
        for name in ("S", "Y"):  # the oldest pair leaves slot j
            getattr(self, name)[:, j] = 0.0
        for M in (self.SY, self.YY, self.Rinv):
            M[:, j, :] = M[:, :, j] = 0.0
        c = np.einsum("bmd,bd->bm", self.S, y)  # s_i . y_j of the older pairs
        self.SY[:, :, j] = c
        self.SY[:, j, :] = np.einsum("bd,bmd->bm", s, self.Y)
        self.SY[:, j, j] = sy * valid
        self.YY[:, j, :] = self.YY[:, :, j] = np.einsum("bmd,bd->bm", self.Y, y)
        self.YY[:, j, j] = yy * valid
        pivot = np.where(valid, sy, 1.0)
        self.Rinv[:, :, j] = -np.einsum("bij,bj->bi", self.Rinv, c) / pivot[:, None]
        self.Rinv[:, j, j] = 1.0 / pivot
        self.S[:, j], self.Y[:, j] = s, y
        self.gamma = np.where(valid, sy / np.where(valid, yy, 1.0), self.gamma)
        self.made += 1


def _lbfgs(batch: _Batch, n_params: tuple[int, int], max_iter: int, tol: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched L-BFGS from zero: final parameters, iterations and status (0 converged,
    1 ``max_iter``, 2 line search failed) per problem."""
    B = len(batch.l2)
    K, q = n_params
    D = K * q
    P_out = np.zeros((B, K, q))
    n_iter = np.zeros(B, dtype=np.int64)
    status = np.zeros(B, dtype=np.int64)
    order = np.arange(B)  # original index of each current problem
    x = np.zeros((B, D))
    f, G = batch.loss_grad(x.reshape(B, K, q))
    g = G.reshape(B, D)
    memory = _Memory(B, D)
    done = _passes(batch, order, G, tol)
    it = 0
    while True:
        if done.any() or it == max_iter:
            if it == max_iter:
                status[order[~done]] = 1
                done[:] = True
            P_out[order[done]] = x[done].reshape(-1, K, q)
            n_iter[order[done]] = it
            keep = np.flatnonzero(~done)
            if keep.size == 0:
                return P_out, n_iter, status
            batch.take(keep)
            memory.take(keep)
            order, x, f, g = order[keep], x[keep], f[keep], g[keep]
        A = len(order)
        d = memory.direction(g)
        gd = np.einsum("bd,bd->b", g, d)
        bad = np.flatnonzero(~(gd < 0))  # no descent (rounding): restart, steepest descent
        if bad.size:
            memory.reset(bad)
            d[bad] = -g[bad]
            gd[bad] = -np.einsum("bd,bd->b", g[bad], g[bad])
        t = np.ones(A) if it else 1.0 / np.sqrt(-gd)  # first step: unit length, as L-BFGS-B
        x_new = x + t[:, None] * d
        f_new, G_new = batch.loss_grad(x_new.reshape(A, K, q))
        ok = f_new <= f + ARMIJO * t * gd
        for _ in range(MAX_LINE_SEARCH - 1):  # backtrack the problems that failed, only
            fail = np.flatnonzero(~ok)
            if fail.size == 0:
                break
            tf = t[fail]
            curv = f_new[fail] - f[fail] - gd[fail] * tf
            with np.errstate(divide="ignore", invalid="ignore"):
                quad = -gd[fail] * tf**2 / (2.0 * curv)
            t[fail] = np.clip(np.nan_to_num(quad, nan=0.0), 0.1 * tf, 0.5 * tf)
            x_new[fail] = x[fail] + t[fail, None] * d[fail]
            f_new[fail], G_new[fail] = batch.loss_grad(x_new[fail].reshape(-1, K, q), fail)
            ok[fail] = f_new[fail] <= f[fail] + ARMIJO * t[fail] * gd[fail]
        it += 1
        g_new = G_new.reshape(A, D)
        f_new = np.where(ok, f_new, f)
        x_new[~ok], g_new[~ok] = x[~ok], g[~ok]  # a failed search keeps its point
        memory.push(x_new - x, g_new - g)
        small = (f - f_new) <= FTOL * np.maximum(np.maximum(np.abs(f), np.abs(f_new)), 1.0)
        x, f, g = x_new, f_new, g_new
        done = _passes(batch, order, g.reshape(A, K, q), tol) | (small & ok)
        status[order[~ok]] = 2
        done |= ~ok


def fit_logistic_many(problems: Sequence[tuple[np.ndarray, np.ndarray, int]], C: float = 1.0,
                      max_iter: int = 1000, tol: float = 1e-4) -> list[LogisticFit]:
    """Fit independent logistic regressions (the objective of the module docstring) together:
    each problem's result is the one :func:`fit_logistic` gives it alone.

    Parameters
    ----------
    problems : sequence of (X, codes, n_classes)
        ``X`` ``(n, d)`` features (standardised by the caller for a probe; used as float64),
        ``codes`` ``(n,)`` int class codes in ``0 .. n_classes - 1``, each present, and
        ``n_classes >= 2``.
    C : float
        Inverse penalty, ``> 0``.
    max_iter : int
        L-BFGS iteration limit; stopping short of convergence warns (``ConvergenceWarning``).
    tol : float
        Gradient tolerance (largest absolute entry).

    Returns
    -------
    list of LogisticFit
        One per problem, in order.
    """
    prepared = []  # (features in a row-space basis where d > n, codes, K, basis)
    for X, codes, k in problems:
        X = np.asarray(X, dtype=np.float64)
        basis = _RowSpace(X) if X.shape[1] > X.shape[0] else None
        prepared.append((X if basis is None else basis.F, np.asarray(codes), int(k), basis))
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (F, _, k, _) in enumerate(prepared):
        groups.setdefault((_padded(F.shape[0]), _padded(F.shape[1]), k), []).append(i)
    fits: list[LogisticFit | None] = [None] * len(prepared)
    for shape, members in groups.items():
        N, p, _ = shape
        step = max(1, BATCH_BYTES // ((p + 1) * N * 8))  # at most BATCH_BYTES of features
        for start in range(0, len(members), step):
            part = members[start:start + step]
            for i, fit in zip(part, _fit_batch([prepared[i] for i in part], shape, C,
                                               int(max_iter), float(tol))):
                fits[i] = fit
    failed = [fit for fit in fits if not fit.converged]
    if failed:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(f"logistic regression (L-BFGS) stopped after "
                      f"{max(fit.n_iter for fit in failed)} iterations without converging in "
                      f"{len(failed)} of {len(fits)} fit(s); raise max_iter (now {max_iter}) or "
                      "lower C.", ConvergenceWarning, stacklevel=2)
    return fits


def _padded(m: int) -> int:
    """``m`` rounded up to a multiple of :data:`PAD`."""
    return -(-m // PAD) * PAD


def _fit_batch(prepared, shape: tuple[int, int, int], C: float, max_iter: int, tol: float
               ) -> list[LogisticFit]:
    batch = _Batch([(F, codes) for F, codes, _, _ in prepared], C, shape)
    batch.bases = [basis for *_, basis in prepared]
    batch.sizes = [F.shape[1] for F, *_ in prepared]
    P, n_iter, status = _lbfgs(batch, batch.counts.shape[1:], max_iter, tol)
    fits = []
    for b, basis in enumerate(batch.bases):
        W, bias = P[b, :, :batch.sizes[b]], P[b, :, -1].copy()
        if basis is not None:
            W = basis.to_original(W)
        if shape[2] == 2:  # (0, z) -> (-z / 2, z / 2): the same softmax
            W, bias = W - W.mean(axis=0), bias - bias.mean()
        fits.append(LogisticFit(np.array(W), bias, int(n_iter[b]), bool(status[b] == 0)))
    return fits


def fit_logistic(X: np.ndarray, codes: np.ndarray, n_classes: int, C: float = 1.0,
                 max_iter: int = 1000, tol: float = 1e-4) -> LogisticFit:
    """Fit one logistic regression: :func:`fit_logistic_many` of one problem."""
    return fit_logistic_many([(X, codes, n_classes)], C, max_iter, tol)[0]
