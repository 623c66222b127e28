"""Linear probes per layer, with the controls that make them trustworthy (the face).

- :mod:`.layers`: :func:`probe_layers` (every layer x kind x target, grouped CV, control tasks,
  random-init baseline, MDL), :func:`resolve_solver` (the solver per kind) and
  :func:`control_labels`;
- :mod:`.linear`: :class:`LinearProbe`, a scikit-learn estimator (ridge or logistic);
- :mod:`.moments`: the sufficient statistics of the ridge path (numpy only);
- :mod:`.logistic`: the one logistic solver (scikit-learn's lbfgs objective, batched L-BFGS);
- :mod:`.cv`: grouped folds and the per-fold sweeps shared by every layer;
- :mod:`.mdl`: the online code of Voita & Titov (2020).

Design matrices come from :mod:`probing.views`; intervals from :mod:`probing.stats`. Each name
is imported from its module on first use (:func:`probing.lazy.lazy_face`): the sweeps of
:func:`probe_layers` never import scikit-learn (about 0.8 s with the scipy modules it loads);
:class:`LinearProbe` and MDL do.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_face

if TYPE_CHECKING:
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

_HOMES = {
    **dict.fromkeys(("fold_sweep", "fold_sweeps", "group_folds"), ".cv"),
    **dict.fromkeys(("AUTO_RIDGE_ROWS", "PROBE_COLUMNS", "SolverChoice", "control_labels",
                     "probe_layers", "resolve_solver"), ".layers"),
    "LinearProbe": ".linear",
    **dict.fromkeys(("MDL_FRACTIONS", "online_codelength"), ".mdl"),
}

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

lazy_face(__name__, _HOMES)
