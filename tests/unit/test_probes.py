"""Linear probes: estimator contract, known accuracies, grouped folds, controls and MDL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from probing.errors import ConfigError
from probing.frames import to_frame
from probing.layout import TokenLayout
from probing.probes import (
    LinearProbe,
    control_labels,
    group_folds,
    online_codelength,
    probe_layers,
)

LAYOUT = TokenLayout(grid=(2, 3), patch_size=(4, 4))  # 1 CLS + 6 patches, non-square grid


@parametrize_with_checks(
    [LinearProbe(), LinearProbe(solver="ridge"), LinearProbe(task="regression")]
)
def test_sklearn_estimator_checks(estimator, check):
    # Every applicable check runs; sklearn itself skips check_array_api_input (needs
    # SCIPY_ARRAY_API), which does not concern a numpy-only estimator.
    check(estimator)


def _blobs(n=300, d=12, k=3, sep=10.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * sep
    return rng.normal(size=(n, d)) + centres[y], y


@pytest.mark.parametrize("solver", ["logistic", "ridge"])
def test_separable_classes_are_decoded_perfectly(solver):
    X, y = _blobs()
    probe = LinearProbe(solver=solver).fit(X[:200], y[:200])
    assert probe.score(X[200:], y[200:]) == 1.0


def test_standardisation_inside_makes_scale_irrelevant():
    X, y = _blobs(sep=1.0)
    scaled = X * np.logspace(-3, 3, X.shape[1])
    a = LinearProbe(solver="ridge").fit(X, y).decision_function(X)
    b = LinearProbe(solver="ridge").fit(scaled, y).decision_function(scaled)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)


def test_ridge_matches_sklearn_ridge_on_standardised_features():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 6)) * 3 + 100.0  # large offset: the shift must prevent cancellation
    Y = rng.normal(size=(80, 2))
    ours = LinearProbe(task="regression", alpha=2.5).fit(X, Y).predict(X)
    Z = StandardScaler().fit_transform(X)
    ref = Ridge(alpha=2.5).fit(Z, Y).predict(Z)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_regression_r2_near_one_on_linear_targets():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 10))
    Y = X @ rng.normal(size=(10, 2)) + 0.01 * rng.normal(size=(400, 2))
    probe = LinearProbe(task="regression", alpha=1e-3).fit(X[:300], Y[:300])
    assert probe.score(X[300:], Y[300:]) > 0.999


def test_binary_logistic_matches_sklearn_probabilities():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs(k=2, sep=0.5)
    ours = LinearProbe(tol=1e-10).fit(X, y).predict_proba(X)
    Z = StandardScaler().fit_transform(X)
    ref = LogisticRegression(max_iter=1000, tol=1e-10).fit(Z, y).predict_proba(Z)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_bad_options_raise_config_error():
    X, y = _blobs(n=20)
    with pytest.raises(ConfigError, match="solver"):
        LinearProbe(solver="svm").fit(X, y)
    with pytest.raises(ConfigError, match="alpha"):
        LinearProbe(alpha=-1).fit(X, y)


# ------------------------------------------------------------------ folds and controls
def test_group_folds_never_split_a_group_and_are_seeded():
    groups = np.repeat(np.arange(23), 7)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(groups)
    fold = group_folds(shuffled, 5, seed=3)
    for g in np.unique(groups):
        assert np.unique(fold[shuffled == g]).size == 1
    counts = np.bincount(fold)
    assert counts.max() - counts.min() <= 7
    by_group = dict(zip(shuffled, fold))
    again = group_folds(groups, 5, seed=3)  # row order does not matter
    assert all(by_group[g] == f for g, f in zip(groups, again))
    with pytest.raises(ConfigError, match="cv"):
        group_folds(np.arange(3), 5)


def test_control_labels_are_consistent_per_type():
    types = np.array([3, 1, 3, 2, 1, 3])
    y = np.array([0, 1, 0, 2, 1, 0])
    uniq, labels = control_labels(types, y, seed=0)
    mapped = labels[np.searchsorted(uniq, types)]
    for t in np.unique(types):
        assert np.unique(mapped[types == t]).size == 1
    assert set(mapped) <= set(y)


def _frame(n=120, d=12, layers=3, signal_layer=2, seed=0, signal=True):
    """Synthetic token frame: the CLS token and one patch carry the class at signal_layer."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, d)) * 8
    parts = []
    for layer in range(layers):
        tokens = rng.normal(size=(n, LAYOUT.n_tokens, d)).astype(np.float32)
        if signal and layer == signal_layer:
            tokens[:, LAYOUT.cls_index] += centres[labels]
        tokens[:, LAYOUT.patch_slice, 0] += 5.0 * LAYOUT.grid_coords()[:, 1]  # col is linear
        parts.append(to_frame(tokens, LAYOUT, layer, np.arange(n) + 1000,
                              labels=pd.DataFrame({"label": labels})))
    return pd.concat(parts, ignore_index=True)


def test_probe_layers_finds_the_layer_with_signal():
    frame = _frame()
    out = probe_layers(frame, "label", kind="cls", solver="ridge")
    task = out[(out.probe == "task") & (out.metric == "accuracy")].set_index("layer")["value"]
    majority = out[out.probe == "majority"].set_index("layer")["value"]
    assert task[2] == 1.0
    assert task[0] < 0.6 and task[1] < 0.6
    assert (majority < 0.6).all()
    expected = {"layer", "kind", "probe", "metric", "value", "ci_low", "ci_high", "n"}
    assert set(out.columns) >= expected
    assert (out.n == 120).all()
    rows = out.dropna(subset=["ci_low"])
    assert ((rows.ci_low <= rows["value"] + 1e-12) & (rows["value"] <= rows.ci_high + 1e-12)).all()


def test_selectivity_near_zero_on_random_features():
    frame = _frame(n=400, signal=False, layers=1)
    out = probe_layers(frame, "label", kind="cls", control_by="image", solver="ridge")
    sel = out[(out.probe == "control") & (out.metric == "selectivity")]["value"].iloc[0]
    assert abs(sel) < 0.1


def test_selectivity_high_when_the_task_is_encoded():
    frame = _frame(n=300, layers=3)
    out = probe_layers(frame, "label", kind="cls", layers=[2], control_by="image")
    sel = out[(out.probe == "control") & (out.metric == "selectivity")]["value"].iloc[0]
    assert sel > 0.5


def test_random_init_rows_use_the_random_frame():
    frame = _frame(layers=3)
    noise = _frame(layers=3, signal=False, seed=5).drop(columns="label")
    out = probe_layers(frame, "label", kind="cls", layers=[2], random_frame=noise,
                       solver="ridge", control=False)
    task = out[out.probe == "task"]["value"].iloc[0]
    rand = out[out.probe == "random_init"]["value"].iloc[0]
    assert task == 1.0 and rand < 0.6


def test_patch_probe_of_column_and_mean_kind():
    frame = _frame(layers=1)
    out = probe_layers(frame, "col", kind="patch", task="regression", control=False)
    r2 = out[(out.probe == "task") & (out.metric == "r2")]["value"].iloc[0]
    assert r2 > 0.9 and out.n.iloc[0] == 120 * LAYOUT.num_patches
    mean = probe_layers(frame, "label", kind="pooled", control=False, solver="ridge")
    assert (mean.n == 120).all()


def test_grouped_cv_is_deterministic_with_seed():
    frame = _frame(layers=1)
    a = probe_layers(frame, "label", kind="cls", seed=4, solver="ridge")
    b = probe_layers(frame.sample(frac=1.0, random_state=0), "label", kind="cls", seed=4,
                     solver="ridge")
    pd.testing.assert_frame_equal(a, b)


def test_missing_target_column_is_a_config_error_listing_label_columns():
    from probing import ConfigError

    frame = _frame(layers=1)
    with pytest.raises(ConfigError, match="target='nolabel' is not a label column") as err:
        probe_layers(frame, "nolabel")
    labels = [c for c in frame.columns if c not in ("image_id", "layer", "kind", "token", "emb")]
    shown = str(err.value).split("pick one of ")[1]
    assert all(c in shown for c in labels if c not in ("row", "col"))
    assert "emb" not in shown and "image_id" not in shown  # label columns only


# ------------------------------------------------------------------ MDL
def test_mdl_learnable_task_compresses_random_does_not():
    X, y = _blobs(n=600, k=4, sep=3.0)
    learn = online_codelength(X, y, seed=0)
    assert learn["codelength_bits"] < learn["uniform_bits"]
    assert learn["compression"] > 2
    noise = online_codelength(np.random.default_rng(9).normal(size=X.shape), y, seed=0)
    assert noise["compression"] < 1.1
    assert learn["uniform_bits"] == pytest.approx(600 * np.log2(4))


def test_probe_layers_mdl_rows():
    out = probe_layers(_frame(n=200, layers=3), "label", layers=[2], mdl=True, control=False,
                       solver="ridge")
    comp = out[(out.probe == "mdl") & (out.metric == "compression")]["value"].iloc[0]
    bits = out[(out.probe == "mdl") & (out.metric == "codelength_bits")]["value"].iloc[0]
    assert comp > 1 and bits < 200 * np.log2(3)


def test_plot_probe_layers_draws_one_line_per_probe_and_kind():
    from probing.plots.probes import plot_probe_layers

    frame = _frame(layers=2)
    out = probe_layers(frame, "label", kind=["cls", "pooled"], solver="ridge", random_frame=frame)
    fig = plot_probe_layers(out)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 * 2  # task, control, random_init, majority x (cls, mean)
    assert ax.get_ylabel() == "held-out accuracy" and "layer" in ax.get_xlabel()


def test_mdl_blocks_never_split_a_group():
    from probing.probes.mdl import _random_order, _snap_to_groups

    groups = np.repeat(np.arange(200), 10)
    ordered = groups[_random_order(groups.size, groups, seed=3)]
    ends = _snap_to_groups(np.array([2, 4, 8, 16, 125, 2000]), ordered)
    assert ends[-1] == groups.size
    for end in ends[:-1]:
        assert ordered[end - 1] != ordered[end]
