"""The bootstrap home (probing.stats) and the nulls built on it, against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probing.errors import ConfigError
from probing.posenc import (
    decay_2d,
    decay_null,
    decay_null_test,
    decay_slope,
    norm_matched_table,
    sincos_2d,
)
from probing.similarity import linear_cka
from probing.stats import (
    average_ranks,
    bootstrap_cka,
    bootstrap_frame,
    bootstrap_indices,
    bootstrap_mean,
    monte_carlo_p,
    percentile_interval,
    spearman_rows,
    t_interval,
)


def _hand_percentiles(reps, level=0.95):
    reps = np.asarray(reps, dtype=np.float64)
    return np.percentile(reps, 50 * (1 - level), axis=0), np.percentile(reps, 50 * (1 + level),
                                                                         axis=0)


def test_bootstrap_mean_equals_a_hand_loop_with_the_same_seed():
    values = np.random.default_rng(1).exponential(size=(37, 3))
    mean, low, high = bootstrap_mean(values, n_boot=300, seed=7, level=0.9)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 37, size=(300, 37))
    reps = [values[d].mean(axis=0) for d in draws]
    hl, hh = _hand_percentiles(reps, 0.9)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(low, hl, rtol=1e-12)
    np.testing.assert_allclose(high, hh, rtol=1e-12)
    assert np.all(low < mean) and np.all(mean < high)


def test_bootstrap_frame_resamples_images_paired_across_groups():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_id": np.repeat(np.arange(20) * 3 + 1, 2),
                          "layer": np.tile([1, 2], 20), "v": rng.normal(size=40)})
    shuffled = frame.sample(frac=1, random_state=4)
    out = bootstrap_frame(shuffled, ["layer"], "v", n_boot=100, seed=5).set_index("layer")
    wide = frame.pivot(index="image_id", columns="layer", values="v")  # ids sorted
    draws = np.random.default_rng(5).integers(0, 20, size=(100, 20))
    for layer in (1, 2):
        col = wide[layer].to_numpy()
        hl, hh = _hand_percentiles([col[d].mean() for d in draws])
        assert out.loc[layer, "value"] == pytest.approx(col.mean())
        assert out.loc[layer, "ci_low"] == pytest.approx(hl)
        assert out.loc[layer, "ci_high"] == pytest.approx(hh)


@pytest.mark.parametrize("two_models", [False, True])
def test_bootstrap_cka_equals_cka_recomputed_on_each_resample(two_models):
    rng = np.random.default_rng(2)
    n = 30
    base = rng.normal(size=(n, 4)) + 5.0  # an offset: centring must be redone per resample
    mats = [base, base @ rng.normal(size=(4, 6)) + 0.7 * rng.normal(size=(n, 6)),
            rng.normal(size=(n, 3))]
    other = [m + 0.5 * rng.normal(size=m.shape) for m in mats[:2]] if two_models else None
    low, high = bootstrap_cka(mats, other, n_boot=40, seed=9)
    second = other if two_models else mats
    reps = [[[linear_cka(a[i], b[i]) for b in second] for a in mats]
            for i in bootstrap_indices(n, 40, 9)]
    hl, hh = _hand_percentiles(reps)
    np.testing.assert_allclose(low, hl, atol=1e-10)
    np.testing.assert_allclose(high, hh, atol=1e-10)
    assert low.shape == (3, len(second))


def test_percentile_interval_and_errors():
    low, high = percentile_interval(np.arange(101.0)[:, None], level=0.9)
    assert (low[0], high[0]) == pytest.approx((5.0, 95.0))
    with pytest.raises(ConfigError):
        bootstrap_mean(np.ones(3), n_boot=0)
    with pytest.raises(ConfigError):
        percentile_interval(np.ones(3), level=1.5)


def test_monte_carlo_p_counts_the_observation_as_a_draw():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert monte_carlo_p(0.25, null, "less") == pytest.approx(3 / 5)
    assert monte_carlo_p(0.25, null, "greater") == pytest.approx(3 / 5)
    assert monte_carlo_p(0.0, null, "less") == pytest.approx(1 / 5)
    with pytest.raises(ConfigError):
        monte_carlo_p(0.0, null, "two-sided")


def test_norm_matched_table_keeps_shape_and_row_norms_and_is_seeded():
    table = sincos_2d((5, 6), 32) * np.linspace(0.5, 2.0, 30)[:, None]
    null = norm_matched_table(table, (5, 6), 3)
    assert null.shape == table.shape
    np.testing.assert_allclose(np.linalg.norm(null, axis=1), np.linalg.norm(table, axis=1))
    np.testing.assert_array_equal(null, norm_matched_table(table, (5, 6), 3))
    assert not np.allclose(null, norm_matched_table(table, (5, 6), 4))
    # draw 0 of decay_null is norm_matched_table with the same seed
    first = decay_null(table, (5, 6), n_null=2, seed=3).query("draw == 0").drop(columns="draw")
    pd.testing.assert_frame_equal(first.reset_index(drop=True),
                                  decay_2d(null, (5, 6), by="distance"))


def test_decay_slope_is_the_weighted_least_squares_fit_of_the_near_half():
    frame = decay_2d(sincos_2d((6, 6), 32), (6, 6), by="distance")
    near = frame[(frame["distance"] > 0)
                 & (frame["distance"] <= frame["distance"].max() / 2 + 1e-9)]
    w = near["n_pairs"].to_numpy(float)
    slope = np.polyfit(near["distance"], near["cosine_mean"], 1, w=np.sqrt(w))[0]
    assert decay_slope(frame) == pytest.approx(slope, rel=1e-10)
    assert decay_slope(frame) < 0


def test_sincos_table_is_distinguishable_from_its_null_and_a_null_draw_is_not():
    grid = (6, 6)
    table = sincos_2d(grid, 32)
    _, null, observed, p = decay_null_test(table, grid, decay_slope, n_null=49, seed=0)
    assert observed < null.min() and p == pytest.approx(1 / 50)
    random_table = norm_matched_table(table, grid, 123)
    *_, p_random = decay_null_test(random_table, grid, decay_slope, n_null=49, seed=0)
    assert p_random > 0.05


def test_average_ranks_and_spearman_rows_equal_scipy_with_ties_and_nan():
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (40, 25)).astype(float)  # many ties
    y = rng.normal(size=(40, 25))
    np.testing.assert_array_equal(average_ranks(x), rankdata(x, axis=1))
    np.testing.assert_array_equal(average_ranks(x[0]), rankdata(x[0]))
    want = [spearmanr(a, b)[0] for a, b in zip(x, y)]
    np.testing.assert_allclose(spearman_rows(x, y), want, rtol=1e-12, atol=1e-14)
    x[1, 3], x[2] = np.nan, 7.0  # a NaN, and a constant row: undefined
    rho = spearman_rows(x, y)
    assert np.isnan(rho[1]) and np.isnan(rho[2]) and np.isnan(average_ranks(x)[1]).all()
    np.testing.assert_allclose(rho[3:], want[3:], rtol=1e-12, atol=1e-14)


def test_t_interval_uses_the_student_t_quantile():
    from scipy import stats

    v = np.array([1.0, 2.0, 4.0, 8.0, 3.5])
    mean, low, high = t_interval(v, level=0.9)
    half = stats.t.ppf(0.95, 4) * v.std(ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(v.mean()) and high - mean == pytest.approx(half, rel=1e-12)
    assert mean - low == pytest.approx(half, rel=1e-12)
