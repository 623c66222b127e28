"""Shared statistics: intervals over folds or images.

Conventions: inputs are 1-D arrays of per-fold (or per-image) values; intervals are two-sided at
``level`` (0.95 by default). A Student-t interval uses ``n - 1`` degrees of freedom and the
sample standard deviation (``ddof=1``); with fewer than two values its bounds are NaN.
"""

from __future__ import annotations

import numpy as np

__all__ = ["t_interval"]


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` Student-t interval of ``values`` (NaN bounds for fewer than 2)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return mean, mean - float(half), mean + float(half)
