"""Linear probes per layer, with the controls that make them trustworthy (the face).

- :mod:`.layers`: :func:`probe_layers` (every layer x kind x target, grouped CV, control tasks,
  random-init baseline, MDL), :func:`resolve_solver` (the solver per kind) and
  :func:`control_labels`;
- :mod:`.linear`: :class:`LinearProbe`, a scikit-learn estimator (ridge or logistic);
- :mod:`.logistic`: the one logistic solver (scikit-learn's lbfgs objective, batched L-BFGS);
- :mod:`.cv`: grouped folds and the per-fold sweeps shared by every layer;
- :mod:`.mdl`: the online code of Voita & Titov (2020).

Design matrices come from :mod:`probing.views`; intervals from :mod:`probing.stats`.
"""

from .cv import fold_sweep, fold_sweeps, group_folds
from .layers import (
    AUTO_RIDGE_ROWS,
    PROBE_COLUMNS,
    SolverChoice,
    control_labels,
    probe_layers,
    resolve_solver,
)
from .linear import LinearProbe
from .mdl import MDL_FRACTIONS, online_codelength

__all__ = [
    "AUTO_RIDGE_ROWS",
    "MDL_FRACTIONS",
    "PROBE_COLUMNS",
    "LinearProbe",
    "SolverChoice",
    "control_labels",
    "fold_sweep",
    "fold_sweeps",
    "group_folds",
    "online_codelength",
    "probe_layers",
    "resolve_solver",
]
