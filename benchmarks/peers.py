"""Peer table: our time against the tool a user would otherwise pick, same inputs, same process.

``python -m benchmarks.peers [--quick] [--markdown]``. Every row times ours and the peer
(:func:`benchmarks._common.interleaved_clocks`: one warm-up round, then medians of the
repeats) and checks the two outputs equal before the times count: ``diff`` is the max
absolute difference, ``tol`` the stated tolerance, and a row whose outputs differ beyond it is
a failure ("outputs differ"), not a timing.

Timing: every row runs with ONE intra-op thread on both sides (``torch.set_num_threads(1)``
and ``threadpoolctl`` for numpy's BLAS, :data:`THREADS`), and the measure is process CPU
time (:func:`time.process_time`): on a shared, loaded machine wall time mostly measures the
wait for a core, and multi-threaded regions spin while they wait for a descheduled thread.
The wall times of the same runs stand next to it (``wall (s)``: ours / peer, and their ratio).
``ratio`` is peer time / our time (higher is better) for the peer rows, and our time /
baseline time (lower is better) for the floor rows ("/" in the figure).

Rows (models have random weights, seeded; CPU):

1. CLS + patch tokens of every block of ``vit_small_patch16_224`` (224 px, batch 16) into a
   token frame: :func:`probing.extract` vs timm ``forward_intermediates`` and an ``nnsight``
   trace saving every block's output, each peer's tensors turned into the same frame with
   probing.frames' public builder (``token_table`` + ``frame_from_table``: the columns our
   extraction builds with ``token_columns``, one layer at a time); and vs the plain fused
   forward (the floor).
2. The same plus every block's attention weights: vs timm ``AttentionExtract`` (hooks on each
   block and its ``attn_drop``) and ``nnsight``, attention turned into the attention frame with
   ``probing.attention_frames.attention_table``. Floor: the plain NON-fused forward (timm's
   ``fused_attn = False``, the only path on which the weights exist: the ``<= 1.10`` target
   applies to it); the plain fused forward is shown for context.
3. Linear CKA 12 x 12 layers, n = 10,000, d = 768 on Gaussian features with layer structure:
   :mod:`probing.similarity` vs ``ckatorch.cka_base`` over every layer pair (its full-n
   linear CKA; ckatorch's hook pipeline ``CKA.__call__`` keeps only the last minibatch's value,
   so it does not compute full-n CKA), vs ``torch-cka``'s hook pipeline (a wrapper model whose
   layers emit the stored features, a dataloader of row indices; it estimates CKA from
   minibatches with the unbiased HSIC: timed and checked against
   :func:`probing.similarity.minibatch_cka_matrix`, the same estimator on the same batches;
   our full-n matrix, the exact quantity it estimates, is shown beside it as context: at
   full size it does more arithmetic than the estimate, ``n (L d)^2 / 2`` multiply-adds against
   about ``n L b (2 d + 2 b L)``), and vs a cached-Gram float64 implementation written here.
4. Layer probe sweep, 12 layers x 5 grouped folds, on CLS features of a random-init
   ``vit_small`` over the ``shapes`` images (48 px): our ridge sweep vs scikit-learn
   ``RidgeClassifierCV`` (standardised, the same alpha: identical predictions) and vs
   ``LogisticRegression`` (standardised); our logistic sweep vs ``LogisticRegression``.
   The sklearn logistic fits are slow: they are timed on the first, middle and last layer and
   the per-layer mean scaled to 12 layers (said in the figure).
5. Full N x N rollout and the CLS-row map (vit_small, 224 px, batch 8) vs a textbook loop as
   popular rollout code writes it (per image, per layer: mean over heads, ``+ I``, renormalise
   rows, matmul); both also against one plain forward.
6. Integrated gradients, 50 steps, one image of ``vit_tiny_patch16_224`` (224 px): ours
   (:func:`probing.attribution.attribution_maps`) vs captum ``IntegratedGradients`` called
   directly (+ the same per-patch sum).
7. Deletion curve (zero baseline, one patch per step, vit_tiny at 96 px, batch 4) vs
   ``quantus.PixelFlipping`` with ``features_in_step`` = one patch and a patch-constant map
   (the same metric: softmax probability of the target after each deleted patch; quantus
   flips a patch over one step per channel, its every C-th point is compared). The
   randomisation sanity check has no peer row: quantus' ``MPRT`` re-initialises layers with
   their own initialisers, not the same redraw, so no output of it can be checked equal.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from benchmarks._common import (
    Row,
    cached_gram_cka,
    interleaved_clocks,
    print_rows,
    random_vit,
    vit_cls_features,
)

#: Intra-op threads of every row (torch and, through threadpoolctl, numpy's BLAS): one, so
#: that ours and the peer do the same single-threaded work and CPU time measures it.
THREADS = 1

#: Threads of the one multi-thread row per group.
MULTI = 2

Clock = tuple[float, float]  # (median CPU seconds, median wall seconds) of one callable


def _keep(box: list):
    """A callable storing its argument's result in ``box[0]`` (for checking outputs)."""
    def call(fn):
        def run():
            box[0] = fn()
        return run
    return call


def _clocks(*fns, repeat: int) -> list[Clock]:
    """CPU and wall medians of the callables run round-robin (one warm-up round)."""
    return interleaved_clocks(list(fns), repeat)


def _threads(n: int, fn):
    """``fn`` run with ``n`` intra-op threads (torch and BLAS), for the multi-thread rows."""
    def run():
        from threadpoolctl import threadpool_limits

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            with threadpool_limits(limits=n):
                return fn()
        finally:
            torch.set_num_threads(before)
    return run


def _multi(figure, ours, peer, repeat: int, target: str) -> Row:
    """The one multi-thread row of a group: ours and the peer each with :data:`MULTI` threads
    (outputs already checked by the group's single-thread row)."""
    t_ours, t_peer = _clocks(_threads(MULTI, ours), _threads(MULTI, peer), repeat=repeat)
    return _peer(f"{figure}, {MULTI} threads", t_ours, t_peer, target, None, None)


def _peer(figure, ours: Clock, peer: Clock, target, diff, tol) -> Row:
    """A peer row: ratio = peer / ours in CPU time (wall alongside)."""
    return Row(figure, ours[0], peer[0], "s CPU", target, ratio=peer[0] / ours[0], diff=diff,
               tol=tol, wall=ours[1], wall_baseline=peer[1], wall_ratio=peer[1] / ours[1])


def _floor(figure, ours: Clock, base: Clock, target) -> Row:
    """A floor row: ratio = ours / baseline in CPU time (wall alongside)."""
    return Row(figure, ours[0], base[0], "s CPU", target, wall=ours[1], wall_baseline=base[1],
               wall_ratio=ours[1] / base[1])


# ----------------------------------------------------------------------- 1 + 2: extraction
def _token_frame(blocks: list[torch.Tensor], layout):
    """Peers' conversion: per-block ``(B, N, D)`` tensors -> token frame, one builder for all."""
    import pyarrow as pa

    from probing.frames import frame_from_table, token_table

    ids = np.arange(blocks[0].shape[0])
    tables = [token_table(b.numpy(), layout, layer, ids, None, None)
              for layer, b in enumerate(blocks, start=1)]
    return frame_from_table(pa.concat_tables(tables))


def _attention_frame(attn: list[torch.Tensor]):
    import pyarrow as pa

    from probing.attention_frames import attention_table
    from probing.frames import frame_from_table

    ids = np.arange(attn[0].shape[0])
    return frame_from_table(pa.concat_tables(
        [attention_table(a.numpy(), layer, ids) for layer, a in enumerate(attn, start=1)]))


def _tokens_of(frame) -> np.ndarray:
    """Dense ``(layers, images, tokens, D)`` of a token frame (any row order)."""
    from probing.frames import embedding_matrix

    f = frame.sort_values(["layer", "image_id", "token"], kind="stable")
    n_l, n_i = f["layer"].nunique(), f["image_id"].nunique()
    return embedding_matrix(f).reshape(n_l, n_i, -1, embedding_matrix(f.iloc[:1]).shape[1])


def _attn_of(frame) -> np.ndarray:
    from probing.attention_frames import attention_array

    return attention_array(frame)[0]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _nnsight_blocks(nn_model, x: torch.Tensor, depth: int, attention: bool):
    """Every block's output (and attention) with an nnsight trace."""
    outs, attn = [], []
    with torch.inference_mode():
        with nn_model.trace(x):
            for i in range(depth):
                if attention:
                    attn.append(nn_model.blocks[i].attn.attn_drop.output.save())
                outs.append(nn_model.blocks[i].output.save())
    return outs, attn


def _extraction_rows(quick: bool) -> list[Row]:
    from nnsight import NNsight
    from timm.utils import AttentionExtract

    from probing import extract
    from probing.layout import TokenLayout

    size, batch, repeat = (96, 8, 5) if quick else (224, 16, 7)
    model = random_vit("vit_small_patch16_224", img_size=size)
    layout = TokenLayout.from_model(model)
    depth = len(model.blocks)
    layers = list(range(1, depth + 1))
    x = torch.randn(batch, 3, size, size)
    nn_model = NNsight(model)
    tag = f"vit_small {size}px, batch {batch}, {depth} blocks"

    def plain():
        with torch.inference_mode():
            model(x)

    def ours():
        return extract(model, x, layers=layers, kinds=("cls", "patch"), batch_size=batch,
                       progress=False)

    def timm_tokens():
        with torch.inference_mode():
            inter = model.forward_intermediates(x, indices=depth, norm=False, output_fmt="NLC",
                                                intermediates_only=True,
                                                return_prefix_tokens=True)
        return _token_frame([torch.cat([prefix, patch], 1) for patch, prefix in inter], layout)

    def nnsight_tokens():
        return _token_frame(_nnsight_blocks(nn_model, x, depth, False)[0], layout)

    # one round-robin per row: plain, ours, each peer (every ratio from the same rounds)
    ref, g_timm, g_nn = [None], [None], [None]
    t_plain, t_ours, t_timm, t_nn = _clocks(
        plain, _keep(ref)(ours), _keep(g_timm)(timm_tokens), _keep(g_nn)(nnsight_tokens),
        repeat=repeat)
    ours_arr = _tokens_of(ref[0])
    rows = [_floor(f"(1) tokens -> frame / plain fused forward ({tag})", t_ours, t_plain,
                   "<= 1.05")]
    for name, t_peer, got in (("timm forward_intermediates", t_timm, g_timm),
                              ("nnsight trace", t_nn, g_nn)):
        rows.append(_peer(f"(1) tokens -> frame vs {name} ({tag})", t_ours, t_peer, ">= 1.0",
                          _max_diff(ours_arr, _tokens_of(got[0])), 1e-5))
    rows.append(_multi(f"(1) tokens -> frame vs timm forward_intermediates ({tag})", ours,
                       timm_tokens, repeat, ">= 1.0"))

    # 2: + attention; the peers need the non-fused attention path to see the weights
    def ours_attn():
        return extract(model, x, layers=layers, kinds=("cls", "patch"), attention=True,
                       batch_size=batch, progress=False)

    extractor = AttentionExtract(model, names=[r"blocks\.\d+$", r"blocks\.\d+\.attn\.attn_drop$"],
                                 method="hook", use_regex=True)

    def unfused(fn):
        def run():
            flags = [b.attn.fused_attn for b in model.blocks]
            for b in model.blocks:
                b.attn.fused_attn = False
            try:
                return fn()
            finally:
                for b, f in zip(model.blocks, flags):
                    b.attn.fused_attn = f
        return run

    def timm_attn():
        with torch.inference_mode():
            out = extractor(x)
        blocks = [out[f"blocks.{i}"] for i in range(depth)]
        attn = [out[f"blocks.{i}.attn.attn_drop"] for i in range(depth)]
        return _token_frame(blocks, layout), _attention_frame(attn)

    def nnsight_attn():
        blocks, attn = _nnsight_blocks(nn_model, x, depth, True)
        return _token_frame(blocks, layout), _attention_frame(attn)

    t_plain, t_unfused, t_ours, t_timm, t_nn = _clocks(
        plain, unfused(plain), _keep(ref)(ours_attn), _keep(g_timm)(unfused(timm_attn)),
        _keep(g_nn)(unfused(nnsight_attn)), repeat=repeat)
    ours_tok, ours_att = _tokens_of(ref[0][0]), _attn_of(ref[0][1])
    # the weights exist only on timm's non-fused path (softmax(q k^T) materialised): the
    # non-fused plain forward is the floor the target applies to; the fused one is context
    rows.append(_floor(f"(2) + attention / plain NON-fused forward, the floor ({tag})", t_ours,
                       t_unfused, "<= 1.10"))
    rows.append(_floor(f"(2) + attention / plain fused forward (context, no target) ({tag})",
                       t_ours, t_plain, ""))
    for name, t_peer, got in (("timm AttentionExtract", t_timm, g_timm),
                              ("nnsight trace", t_nn, g_nn)):
        diff = max(_max_diff(ours_tok, _tokens_of(got[0][0])),
                   _max_diff(ours_att, _attn_of(got[0][1])))
        rows.append(_peer(f"(2) + attention vs {name} ({tag})", t_ours, t_peer, ">= 1.0", diff,
                          1e-5))
    return rows


# ----------------------------------------------------------------------------------- 3: CKA
def _cka_features(n: int, d: int, layers: int, seed: int = 0) -> list[np.ndarray]:
    """Gaussian features with layer structure: each layer a noisy rotation-free drift of the
    previous one (neighbouring layers similar, far ones less)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    mats = []
    for _ in range(layers):
        X = 0.8 * X + 0.6 * rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d))
        mats.append(X.astype(np.float32))
    return mats


class _StoredLayers(torch.nn.Module):
    """A model whose "layers" emit stored features of the rows it is given (for torch-cka)."""

    def __init__(self, mats: list[np.ndarray]):
        super().__init__()
        self.layers = torch.nn.ModuleList(_Emit(torch.from_numpy(m)) for m in mats)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            out = layer(idx)
        return out


class _Emit(torch.nn.Module):
    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def _cka_rows(quick: bool) -> list[Row]:
    import warnings

    import ckatorch
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    from probing.similarity import _cka_matrix, _Reps, minibatch_cka_matrix

    layers, n, d = (4, 2000, 256) if quick else (12, 10000, 768)
    mats = _cka_features(n, d, layers)
    L = len(mats)
    rows = []
    tag = f"{L}x{L} layers, n={n}, d={d}"

    def ours():
        return _cka_matrix(_Reps(mats), None, False, "auto")

    def cached_gram():
        return cached_gram_cka(mats)

    tensors = [torch.from_numpy(m) for m in mats]

    def ckatorch_pairs():
        out = np.eye(L)
        for i in range(L):
            for j in range(i + 1, L):
                out[i, j] = out[j, i] = float(ckatorch.cka_base(tensors[i], tensors[j]))
        return out

    ref, got = [None], [None]
    reps = 3 if quick else 1
    t_ours, t_gram = _clocks(_keep(ref)(ours), _keep(got)(cached_gram), repeat=reps)
    rows.append(_peer(f"(3) linear CKA {tag} vs cached-Gram float64", t_ours, t_gram, ">= 2.5",
                      _max_diff(ref[0], got[0]), 1e-6))
    rows.append(_multi(f"(3) linear CKA {tag} vs cached-Gram float64", ours, cached_gram, reps,
                       ">= 2.5"))
    t_ours, t_peer = _clocks(ours, _keep(got)(ckatorch_pairs), repeat=reps)
    rows.append(_peer(f"(3) linear CKA {tag} vs ckatorch.cka_base per pair", t_ours, t_peer,
                      ">= 5", _max_diff(ref[0], got[0]), 1e-6))

    # torch-cka: its hook pipeline over a dataloader of row indices, in the order our
    # minibatch_cka shuffles them into (same batches, same estimator)
    batch = 256
    order = torch.from_numpy(np.random.default_rng(0).permutation(n))
    loader = DataLoader(TensorDataset(order), batch_size=batch, shuffle=False)
    wrapper = _StoredLayers(mats)
    names = [f"layers.{i}" for i in range(L)]

    def torch_cka():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cka = CKA(wrapper, wrapper, "a", "b", names, names)
            with torch.no_grad():
                cka.compare(loader)
            for module in wrapper.modules():  # torch-cka never removes its hooks
                module._forward_hooks.clear()
        return cka.hsic_matrix.double().numpy()

    # the same estimator on the same batches: our minibatch CKA matrix (every layer's Gram
    # once per batch) vs torch-cka's pipeline, outputs compared over the whole matrix
    def ours_minibatch():
        return minibatch_cka_matrix(mats, batch_size=batch, seed=0)

    t_ours, t_peer = _clocks(_keep(ref)(ours_minibatch), _keep(got)(torch_cka), repeat=reps)
    rows.append(_peer(f"(3) minibatch linear CKA {tag} vs torch-cka hook pipeline (batch "
                      f"{batch}: the same batches and estimator)", t_ours, t_peer, ">= 5",
                      _max_diff(ref[0], got[0]), 1e-6))
    # context: our full-n matrix (the exact quantity torch-cka estimates) vs the same pipeline
    t_full, t_peer = _clocks(ours, torch_cka, repeat=reps)
    rows.append(_peer(f"(3) full-n linear CKA {tag} vs torch-cka's minibatch estimate (context: "
                      "a costlier, exact quantity; no target)", t_full, t_peer, "", None, None))
    return rows


# ------------------------------------------------------------------------------- 4: probes
def _probe_rows(quick: bool) -> list[Row]:
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    from probing.probes.cv import fold_sweep, fold_sweeps, group_folds

    n, folds = (300, 5) if quick else (10000, 5)
    mats, y = vit_cls_features(n)
    L, d = len(mats), mats[0].shape[1]
    fold = group_folds(np.arange(n), folds, seed=0)
    codes = np.unique(y, return_inverse=True)[1]

    def sk_fit(X, model):
        acc = np.empty(folds)
        for f in range(folds):
            tr, te = fold != f, fold == f
            sc = StandardScaler().fit(X[tr])
            acc[f] = model().fit(sc.transform(X[tr]), codes[tr]).score(sc.transform(X[te]),
                                                                      codes[te])
        return acc

    def ours_ridge():
        return np.stack([fold_sweep(X, {"y": codes}, fold, folds, solver="ridge")["y"]
                         for X in mats])

    def sk_ridge():
        return np.stack([sk_fit(X, lambda: RidgeClassifierCV(alphas=[1.0])) for X in mats])

    rows = []
    ref, got = [None], [None]
    repeat = 3 if quick else 7
    t_ours, t_peer = _clocks(_keep(ref)(ours_ridge), _keep(got)(sk_ridge), repeat=repeat)
    tag = f"{L} layers x {folds} grouped folds, n={n}, d={d}, vit_small CLS on shapes"
    per_fold = 1.0 / np.bincount(fold).min()  # one test prediction
    rows.append(_peer(f"(4) ridge sweep vs sklearn RidgeClassifierCV ({tag}; accuracy)",
                      t_ours, t_peer, ">= 1.0", _max_diff(ref[0], got[0]), per_fold))
    ridge_acc = ref[0]

    sampled = sorted({0, L // 2, L - 1})

    def logistic():
        return LogisticRegression(max_iter=1000)

    def sk_logistic():
        return np.stack([sk_fit(mats[k], logistic) for k in sampled])

    def ours_logistic():  # the sampled layers' sweeps in one call, as probe_layers batches
        return np.stack([r["y"] for r in fold_sweeps(
            [(mats[k], {"y": codes}, fold) for k in sampled], folds, solver="logistic")])

    t_log, t_sk = _clocks(_keep(ref)(ours_logistic), _keep(got)(sk_logistic),
                          repeat=1 if not quick else 2)
    # ours ridge over all L layers vs sklearn logistic scaled from the sampled layers to L
    t_sk_all = (t_sk[0] / len(sampled) * L, t_sk[1] / len(sampled) * L)
    row = _peer(f"(4) ridge sweep vs sklearn LogisticRegression ({tag}; sklearn timed on "
                f"layers {sampled}, x {L}/{len(sampled)}; accuracy is another model's)",
                t_ours, t_sk_all, ">= 10", float(np.max(np.abs(ridge_acc[sampled] - got[0]))),
                None)
    rows.append(row)
    rows.append(_peer(f"(4) logistic sweep vs sklearn LogisticRegression (layers {sampled}; "
                      "accuracy)", t_log, t_sk, ">= 1.0", _max_diff(ref[0], got[0]),
                      2 * per_fold))
    return rows


# ------------------------------------------------------------------------------ 5: rollout
def _textbook_rollout(attn: list[torch.Tensor]) -> np.ndarray:
    """Rollout as popular code writes it: per image, per layer, mean heads, + I, renormalise
    rows, matmul (later layers on the left)."""
    b, _, n, _ = attn[0].shape
    out = np.empty((b, n, n))
    eye = torch.eye(n)
    for i in range(b):
        result = torch.eye(n)
        for a in attn:
            fused = a[i].mean(dim=0)
            fused = (fused + eye) / 2
            fused = fused / fused.sum(dim=-1, keepdim=True)
            result = torch.matmul(fused, result)
        out[i] = result.double().numpy()
    return out


def _rollout_rows(quick: bool) -> list[Row]:
    from probing.attention import rollout, rollout_map
    from probing.attention_hooks import capture_attention
    from probing.layout import TokenLayout

    size = 96 if quick else 224
    batch, repeat = 8, (5 if quick else 9)
    model = random_vit("vit_small_patch16_224", img_size=size)
    layout = TokenLayout.from_model(model)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad(), capture_attention(model) as store:
        model(x)
    attn = dict(store)
    attn_list = [torch.as_tensor(np.asarray(attn[k])) for k in sorted(attn)]

    def forward():
        with torch.inference_mode():
            model(x)

    def loop_map():
        cls = _textbook_rollout(attn_list)[:, 0, len(layout.prefix):]
        m = cls.reshape(batch, layout.rows, layout.cols)
        return m / m.max(axis=(1, 2), keepdims=True)

    tag = f"vit_small {size}px, batch {batch}, N={layout.n_tokens}"
    ref, got = [None], [None]
    t_ours, t_loop = _clocks(_keep(ref)(lambda: rollout(attn, layout=layout)),
                             _keep(got)(lambda: _textbook_rollout(attn_list)), repeat=repeat)
    rows = [_peer(f"(5) full NxN rollout vs textbook loop ({tag})", t_ours, t_loop, ">= 1.0",
                  _max_diff(np.asarray(ref[0]), got[0]), 1e-5)]
    rows.append(_multi(f"(5) full NxN rollout vs textbook loop ({tag})",
                       lambda: rollout(attn, layout=layout),
                       lambda: _textbook_rollout(attn_list), repeat, ">= 1.0"))
    t_map, t_loop_map = _clocks(_keep(ref)(lambda: rollout_map(attn, layout)),
                                _keep(got)(loop_map), repeat=repeat)
    rows.append(_peer(f"(5) CLS-row rollout map vs textbook loop ({tag})", t_map, t_loop_map,
                      ">= 1.0", _max_diff(ref[0], got[0]), 1e-5))
    t_roll, t_fwd = _clocks(lambda: rollout(attn, layout=layout), forward, repeat=repeat)
    rows.append(_floor(f"(5) full rollout / one plain forward ({tag})", t_roll, t_fwd, "<= 0.05"))
    t_map, t_fwd = _clocks(lambda: rollout_map(attn, layout), forward, repeat=repeat)
    rows.append(_floor(f"(5) CLS-row map / one plain forward ({tag})", t_map, t_fwd, "<= 0.02"))
    # any CLS-row map reads every weight at least once: one sum over them is its floor
    arrays = [np.asarray(attn[k]) for k in sorted(attn)]
    t_read, t_fwd = _clocks(lambda: [a.sum() for a in arrays], forward, repeat=repeat)
    rows.append(_floor(f"(5) one read of every weight (sum), the floor of any map, / one plain "
                       f"forward ({tag}; {sum(a.nbytes for a in arrays) / 1e6:.0f} MB)", t_read,
                       t_fwd, ""))
    return rows


# ------------------------------------------------------------------------- 6 + 7: attribution
def _ig_rows(quick: bool) -> list[Row]:
    from captum.attr import IntegratedGradients

    from probing.attribution import attribution_maps
    from probing.layout import TokenLayout

    size = 96 if quick else 224
    repeat = 7  # IG varies +-10% run to run on a shared machine: 7 rounds even in quick
    model = random_vit("vit_tiny_patch16_224", img_size=size)
    layout = TokenLayout.from_model(model)
    x = torch.randn(1, 3, size, size)
    ph, pw = layout.patch_size

    def ours():
        got = attribution_maps(model, x, layout, "integrated_gradients", target=0, n_steps=50)
        return np.concatenate([got.maps.ravel(), got.delta])

    def captum():  # the same outputs as ours: patch sums and captum's convergence delta
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=0, n_steps=50,
            return_convergence_delta=True)
        a = attr.sum(1).reshape(1, layout.rows, ph, layout.cols, pw).sum((2, 4))
        return np.concatenate([a.double().detach().numpy().ravel(),
                               delta.double().detach().numpy()])

    ref, got = [None], [None]
    t_ours, t_peer = _clocks(_keep(ref)(ours), _keep(got)(captum), repeat=repeat)
    scale = float(np.max(np.abs(got[0]))) or 1.0
    row = _floor(f"(6) integrated gradients, 50 steps, with convergence delta, / captum "
                 f"directly (vit_tiny {size}px, 1 image; diff relative to max |attr|)", t_ours,
                 t_peer, "<= 1.05")
    row.diff, row.tol = _max_diff(ref[0], got[0]) / scale, 1e-5
    t_ours, t_peer = _clocks(_threads(MULTI, ours), _threads(MULTI, captum), repeat=repeat)
    multi = _floor(f"(6) integrated gradients / captum directly, {MULTI} threads", t_ours,
                   t_peer, "<= 1.05")
    return [row, multi]


def _deletion_rows(quick: bool) -> list[Row]:
    import warnings

    import quantus

    from probing.attribution import deletion_curve
    from probing.layout import TokenLayout

    size, batch = (64, 2) if quick else (96, 4)
    repeat = 3 if quick else 7
    model = random_vit("vit_tiny_patch16_224", img_size=size)
    layout = TokenLayout.from_model(model)
    x = torch.randn(batch, 3, size, size)
    rng = np.random.default_rng(0)
    maps = rng.permutation(batch * layout.num_patches).reshape(
        batch, layout.rows, layout.cols).astype(np.float64) + 1.0  # distinct, positive
    ph, pw = layout.patch_size
    with torch.no_grad():
        target = model(x).argmax(1).numpy()
    a_batch = np.repeat(np.repeat(maps, ph, 1), pw, 2)[:, None].astype(np.float32)

    def ours():
        return deletion_curve(model, x, layout, maps=maps, baseline="zero",
                              target=target.tolist(), batch_size=64)

    def peer():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.PixelFlipping(features_in_step=ph * pw, perturb_baseline=0.0,
                                           normalise=False, disable_warnings=True)
            curves = metric(model=model, x_batch=x.numpy(), y_batch=target, a_batch=a_batch,
                            channel_first=True, softmax=True, device="cpu", batch_size=64)
        return np.asarray(curves, dtype=np.float64)

    ref, got = [None], [None]
    t_ours, t_peer = _clocks(_keep(ref)(ours), _keep(got)(peer), repeat=repeat)
    # quantus spreads the map over the channels and flips features_in_step values at a time,
    # which must divide H * W: one patch is deleted over C steps, so every C-th point of its
    # curve is ours after one more patch (ours starts at the intact image). Its C x more
    # forward passes are part of its time: it cannot delete a whole patch per step.
    c = x.shape[1]
    return [_peer(f"(7) deletion curve vs quantus PixelFlipping (vit_tiny {size}px, batch "
                  f"{batch}, {layout.num_patches} patches; quantus needs {c} steps a patch)",
                  t_ours, t_peer, ">= 1.0", _max_diff(ref[0][:, 1:], got[0][:, c - 1::c]),
                  1e-5)]


def run(quick: bool = False) -> list[Row]:
    """Every peer row; ``quick`` uses small sizes and fewer repeats (minutes).

    Runs with :data:`THREADS` intra-op threads in torch and in the BLAS libraries (restored
    after)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    rows: list[Row] = []
    try:
        with threadpool_limits(limits=THREADS):
            for part in (_extraction_rows, _cka_rows, _probe_rows, _rollout_rows, _ig_rows,
                         _deletion_rows):
                t0 = time.perf_counter()
                rows.extend(part(quick))
                print(f"{part.__name__}: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                      flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print_rows(result, markdown="--markdown" in sys.argv)
    if "--json" in sys.argv:
        print(json.dumps([r.as_dict() for r in result], indent=2))
