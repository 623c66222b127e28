"""Linear probes per layer, with the controls that make them trustworthy.

Methods and sources
-------------------
- Linear probes: Alain & Bengio (2016), "Understanding intermediate layers using linear
  classifier probes" (:class:`LinearProbe`).
- Control tasks and selectivity: Hewitt & Liang (2019), "Designing and Interpreting Probes with
  Control Tasks". Each *type* gets a fixed random label drawn from the task's empirical label
  distribution, the same for every row of that type; selectivity = task accuracy - control
  accuracy, computed per fold (paired) and then summarised.
- MDL, online code: Voita & Titov (2020) (:func:`online_codelength`).
- Random-init baseline: the same probe on features of a randomly initialised copy of the
  architecture (the caller extracts that frame and passes it as ``random_frame``).

Cross-validation is grouped (default by ``image_id``): all rows of one group sit in the same fold,
so tokens of one image never appear on both sides of a split. Folds are drawn once per call from
the frame's groups and ``seed`` (groups dealt round-robin in a seeded random order, so fold sizes
differ by at most one group) and shared by every layer, kind, control and the random-init
frame. Intervals are Student-t intervals across folds (``n_folds - 1`` degrees of freedom).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..frames import POSITION_COLUMNS, require_label_column
from ..progress import progress_bar
from ..selection import VIEW_KINDS, LayerLabels, LayerSelection, resolve_view_kind
from ..stats import t_interval
from ..views import FrameViews, ViewKind, align_rows
from .cv import SweepJob, fold_sweeps, group_folds
from .mdl import online_codelength
from .moments import Solver

__all__ = ["AUTO_RIDGE_ROWS", "PROBE_COLUMNS", "SolverChoice", "control_labels", "probe_layers",
           "resolve_solver"]

#: Columns of the frame :func:`probe_layers` returns.
PROBE_COLUMNS = (
    "layer", "kind", "probe", "metric", "value", "ci_low", "ci_high", "n", "n_folds", "target",
    "solver",
)
TaskName = Literal["auto", "classification", "regression"]
#: A solver for every kind, ``"auto"``, or ``{kind: solver}`` (kinds left out are ``"auto"``).
SolverChoice = Solver | Literal["auto"] | Mapping[str, str]
#: With ``solver="auto"``, per-patch probes over more rows than this use ridge: a logistic
#: per-patch probe over 98k rows ran 27 min on two cores, ridge 54 s.
AUTO_RIDGE_ROWS = 20_000
_SOLVERS = ("logistic", "ridge")


def resolve_solver(solver: SolverChoice, kind: str, n_rows: int) -> Solver:
    """The classification solver of one kind's probe.

    Parameters
    ----------
    solver : "logistic", "ridge", "auto" or mapping
        One solver for every kind, ``"auto"``, or ``{kind: solver}`` (e.g.
        ``{"cls": "logistic", "patch": "ridge"}``; kinds it leaves out are ``"auto"``).
        ``"auto"``: logistic for ``cls`` and ``pooled``; for ``patch`` ridge above
        :data:`AUTO_RIDGE_ROWS` rows, else logistic.
    kind : str
        The view kind probed.
    n_rows : int
        Rows of the probe's design matrix.

    Raises
    ------
    ConfigError
        When a solver or a mapping's kind is unknown.
    """
    if isinstance(solver, Mapping):
        unknown = [k for k in solver if k not in VIEW_KINDS]
        if unknown:
            raise ConfigError(f"solver names kinds {unknown}; use kinds of {list(VIEW_KINDS)}, "
                              "e.g. {cls = 'logistic', patch = 'ridge'}.")
        chosen = solver.get(kind, "auto")
    else:
        chosen = solver
    if chosen not in (*_SOLVERS, "auto"):
        raise ConfigError(f"solver {chosen!r} is unknown; use 'logistic', 'ridge' or 'auto' (or "
                          "a table of them per kind).")
    if chosen == "auto":
        return "ridge" if kind == "patch" and n_rows > AUTO_RIDGE_ROWS else "logistic"
    return chosen

#: Most rows a logistic probe fits (per layer and kind); above it, ``solver="ridge"``.
LOGISTIC_MAX_ROWS = 200_000


def control_labels(
    types: np.ndarray, y: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A Hewitt & Liang (2019) control task: one fixed random label per type.

    Each distinct type draws the label of a uniformly random row, so control labels follow the
    task's empirical label distribution, and every row of a type gets its type's label.

    Parameters
    ----------
    types : numpy.ndarray
        ``(n,)`` type of each row (e.g. the image class, or the image id).
    y : numpy.ndarray
        ``(n,)`` or ``(n, k)`` task labels (or regression targets).
    seed : int
        Seed of the draw.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The sorted distinct types ``(T,)`` and their control labels ``(T,)`` / ``(T, k)``;
        map rows with ``np.searchsorted(types_sorted, types)``.
    """
    uniq = np.unique(types)
    draw = np.random.default_rng(seed).integers(0, len(y), size=uniq.size)
    return uniq, np.asarray(y)[draw]


#: One layer's token rows on demand: ``layer -> frame`` (e.g. a store read of that layer).
LayerFrames = Callable[[int], pd.DataFrame]


def probe_layers(
    frame: pd.DataFrame | LayerFrames,
    target: str | Sequence[str],
    kind: ViewKind | Sequence[ViewKind] = "cls",
    *,
    task: TaskName = "auto",
    layers: LayerSelection | None = None,
    cv: int = 5,
    groups: str = "image_id",
    solver: SolverChoice = "logistic",
    alpha: float = 1.0,
    C: float = 1.0,
    seed: int = 0,
    control: bool = True,
    control_by: Literal["image", "label"] = "image",
    mdl: bool = False,
    random_frame: pd.DataFrame | LayerFrames | None = None,
    level: float = 0.95,
    max_iter: int = 1000,
    n_threads: int | None = 1,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Cross-validated linear probes of every layer, with controls, as a tidy frame.

    Parameters
    ----------
    frame : pandas.DataFrame or callable
        A token frame (:mod:`probing.frames`) holding ``target`` (and ``groups``) columns, or
        a function ``layer -> frame`` giving one layer's rows (e.g.
        ``lambda k: store.read(kind, layers=[k])``): the sweep then holds one layer's rows at
        a time, and ``layers`` must be :class:`~probing.selection.LayerLabels` (or stored
        labels). Every layer must hold the same images (folds are drawn from the first one).
    target : str or sequence of str
        Label column(s). Image-level (``label``) or per-row (a patch label, ``row``, ``col``).
        Several columns mean multi-output regression.
    kind : {"cls", "pooled", "patch"} or a sequence of them
        Which vectors to probe: CLS rows; the ``pooled`` rows, or else the mean of the patch
        rows per image; every patch row.
    task : {"auto", "classification", "regression"}
        ``"auto"``: regression for several targets or non-integer floats, else classification.
    layers : layer selection or LayerLabels, optional
        Layers to probe, in the forms every ``layers=`` takes (``"all"`` = every block the
        frame holds, block numbers, ``"embed"``, ``"norm"``, lists of these, or
        :class:`~probing.selection.LayerLabels`; :func:`probing.selection.select_layers`);
        every layer of the frame when None. A frame does not record its model's depth, so
        negative ints (``-1`` = the model's last block) raise ConfigError: pass
        ``resolve_layers(sel, model.depth)``.
    cv : int
        Number of grouped folds.
    groups : str
        Column whose values must not be split across folds.
    solver : {"logistic", "ridge", "auto"} or mapping of kind to solver
        Classification solver (:class:`LinearProbe`), for every kind or per kind
        (``{"cls": "logistic", "patch": "ridge"}``); ``"ridge"`` is the fast closed form, the
        better choice for per-patch probes over many rows; ``"auto"`` picks it for those
        (:func:`resolve_solver`); logistic is refused above :data:`LOGISTIC_MAX_ROWS` rows.
        Regression is always ridge.
    alpha, C : float
        Ridge penalty / inverse logistic penalty on standardised features.
    seed : int
        Seed of the folds, the control labels and the MDL order.
    control : bool
        Add the control task and selectivity rows (Hewitt & Liang 2019).
    control_by : {"image", "label"}
        The control task's type. ``"image"`` (default): each image draws one random label for
        all its rows, so the control can only be memorised per image, and grouped folds leave it
        at chance on held-out images unless the probe is expressive enough to exploit
        structure that is not the task. ``"label"``: each distinct target value (e.g. image
        class) draws a random label; that control is a fixed function of the task label (a
        merge of classes), so it is learnable wherever the task is, and its chance level differs
        from the task's when classes merge.
    mdl : bool
        Add the online-code MDL rows (classification only; logistic probe).
    random_frame : pandas.DataFrame, optional
        The same kind of frame extracted from a random-initialised copy of the model; adds
        ``random_init`` rows (or a function ``layer -> frame``, as ``frame``). Its rows are
        matched to ``frame`` on ``(image_id, token)``, so its targets are taken from
        ``frame``.
    level : float
        Confidence level of the t-intervals across folds.
    max_iter : int
        lbfgs iteration limit (logistic).
    n_threads : int or None
        BLAS threads (threadpoolctl); None leaves them alone.
    progress : bool or None
        Progress bar over (kind, layer) probes (None: only when stderr is a terminal).

    Returns
    -------
    pandas.DataFrame
        One row per (layer, kind, probe, metric), columns :data:`PROBE_COLUMNS`. ``probe`` is
        ``task``, ``majority`` (training-fold majority class; training-fold mean for regression),
        ``control``, ``random_init`` or ``mdl``; ``metric`` is ``accuracy`` or ``r2``,
        ``selectivity`` (on the control rows), ``codelength_bits`` or ``compression`` (MDL rows,
        no interval). ``value`` is the mean over folds, ``ci_low``/``ci_high`` its t-interval,
        ``n`` the number of rows probed, ``n_folds`` the number of folds and ``solver`` the
        classification solver used (``ridge`` for regression).
    """
    targets = [target] if isinstance(target, str) else list(target)
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        resolve_view_kind(k)
    at_layer, chosen = _layer_source(frame, layers)
    random_at = None if random_frame is None else _layer_source(random_frame, chosen)[0]
    first_views = at_layer(chosen[0])  # reused at the first layer: each layer read once
    first = first_views.frame
    _check_options(first, targets, groups, task, control_by, cv)
    task = _resolve_task(first, targets, task)
    if mdl and task == "regression":
        raise ConfigError("mdl=True needs a classification target; set mdl=False for regression.")
    first_random = None if random_at is None else random_at(chosen[0])
    fold_map = _fold_map(first if callable(frame) else frame,
                         None if first_random is None else (
                             first_random.frame if callable(random_frame)
                             else random_frame), groups, cv, seed)
    for k in kinds:  # an unknown solver fails before any fit
        resolve_solver(solver, k, 0)
    settings = dict(task=task, solver=solver, alpha=alpha, C=C, max_iter=max_iter,
                    n_threads=n_threads)
    first = None
    records: dict[tuple[int, int], list[dict]] = {}
    controls: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for li, layer in enumerate(progress_bar(chosen, "probes", progress=progress, unit="layer")):
        if li == 0:  # then let go of them: one layer's rows held at a time
            views, random_views, first_views, first_random = first_views, first_random, None, None
        else:
            views = at_layer(layer)
            random_views = None if random_at is None else random_at(layer)
        per_kind = _probe_layer(views, random_views, layer, kinds, targets, groups, task,
                                fold_map, controls, control, control_by, mdl, seed, cv, level,
                                settings)
        for ki, recs in enumerate(per_kind):
            records[ki, li] = recs
    ordered = [r for key in sorted(records) for r in records[key]]
    return pd.DataFrame.from_records(ordered, columns=list(PROBE_COLUMNS))


def _layer_source(source: pd.DataFrame | LayerFrames, layers: LayerSelection | None
                  ) -> tuple[Callable[[int], FrameViews], LayerLabels]:
    """``layer -> FrameViews`` of a frame (one set of views shared by every layer) or of a
    per-layer function (one layer's views built per call), and the chosen layers."""
    if callable(source):
        if layers is None:
            raise ConfigError("probe_layers with frame as a function of the layer needs "
                              "layers=: pass the stored labels (LayerLabels) to probe.")
        chosen = LayerLabels(layers) if not isinstance(layers, LayerLabels) else layers
        return (lambda layer: FrameViews(source(layer))), chosen
    views = FrameViews(source)
    return (lambda layer: views), views.select(layers)


@dataclass
class _Probe:
    """One (layer, kind) probe: its sweeps (task + control, and the random-init control), and
    what its records need."""

    base: dict
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    jobs: list[SweepJob]


def _prepare(views, random_views, layer, k, targets, groups, task, fold_map, controls,
             control, control_by, seed, settings) -> _Probe:
    """The sweeps of one (layer, kind): task and control targets on its rows, and the task on
    the random-init rows."""
    X, meta = views.get(layer, k, [*targets, groups])
    keep = ~meta[targets].isna().any(axis=1).to_numpy()
    X, meta = X[keep], meta[keep].reset_index(drop=True)
    y = _encode(meta, targets, task)
    fold = fold_map(meta[groups])
    ys = {"task": y}
    if control:
        types = meta[targets[0]] if control_by == "label" else meta["image_id"]
        types = types.to_numpy()
        if k not in controls:  # drawn once per kind, at the first layer
            controls[k] = control_labels(types, y, seed)
        ys["control"] = controls[k][1][np.searchsorted(controls[k][0], types)]
    used = "ridge" if task == "regression" else resolve_solver(settings["solver"], k, len(y))
    if task == "classification" and used == "logistic" and len(y) > LOGISTIC_MAX_ROWS:
        raise ConfigError(
            f"solver='logistic' on {len(y):,} {k!r} rows (layer {layer}) exceeds "
            f"{LOGISTIC_MAX_ROWS:,} rows, where lbfgs over every row runs for a long time; pass "
            "solver='ridge' (closed form, linear in the rows) or probe fewer images."
        )
    jobs: list[SweepJob] = [(X, ys, fold)]
    if random_views is not None:
        rX, rmeta = random_views.get(layer, k)
        here, there = align_rows(meta, rmeta)
        if here.size < len(meta):
            raise DataError(
                f"random_frame lacks {len(meta) - here.size} of the probed rows at layer "
                f"{layer}; extract it from the same images and tokens as frame."
            )
        jobs.append((rX[there], {"task": y[here]}, fold[here]))
    base = dict(layer=layer, kind=k, n=len(y), n_folds=settings["cv"],
                target=",".join(targets), solver=used)
    return _Probe(base, X, y, meta[groups].to_numpy(), jobs)


def _records(probe: _Probe, scores: list[dict], control, mdl, seed, level, settings, task
             ) -> list[dict]:
    """The records of one (layer, kind): task, majority, control, random_init, mdl."""
    base, records = probe.base, []
    metric = "r2" if task == "regression" else "accuracy"
    for name in ("task", "majority", "control"):
        if name in scores[0]:
            records.append(_record(base, name, metric, scores[0][name], level))
    if control:
        records.append(_record(
            base, "control", "selectivity", scores[0]["task"] - scores[0]["control"], level
        ))
    if len(scores) > 1:
        records.append(_record(base, "random_init", metric, scores[1]["task"], level))
    if mdl:
        code = online_codelength(probe.X, probe.y, groups=probe.groups, seed=seed,
                                 C=settings["C"], max_iter=settings["max_iter"],
                                 n_threads=settings["n_threads"])
        for name in ("codelength_bits", "compression"):
            records.append({**base, "probe": "mdl", "metric": name,
                            "value": code[name], "ci_low": np.nan, "ci_high": np.nan})
    return records


def _probe_layer(views, random_views, layer, kinds, targets, groups, task, fold_map, controls,
                 control, control_by, mdl, seed, cv, level, settings) -> list[list[dict]]:
    """The records of every kind of one layer; the sweeps of all kinds that share a solver
    (and their random-init controls) run together (:func:`fold_sweeps`)."""
    settings = {**settings, "cv": cv}
    probes = [_prepare(views, random_views, layer, k, targets, groups, task, fold_map,
                       controls, control, control_by, seed, settings) for k in kinds]
    scores: list[list[dict]] = [[] for _ in probes]
    for used in dict.fromkeys(p.base["solver"] for p in probes):
        mine = [i for i, p in enumerate(probes) if p.base["solver"] == used]
        got = iter(fold_sweeps(
            [job for i in mine for job in probes[i].jobs], cv, task=task, solver=used,
            alpha=settings["alpha"], C=settings["C"], max_iter=settings["max_iter"],
            n_threads=settings["n_threads"]))
        for i in mine:
            scores[i] = [next(got) for _ in probes[i].jobs]
    return [_records(p, sc, control, mdl, seed, level, settings, task)
            for p, sc in zip(probes, scores)]


def _record(base: dict, probe: str, metric: str, values: np.ndarray, level: float) -> dict:
    mean, low, high = t_interval(values, level)
    return {**base, "probe": probe, "metric": metric, "value": mean, "ci_low": low,
            "ci_high": high}


def _check_options(frame, targets, groups, task, control_by, cv) -> None:
    for column in targets:
        require_label_column(frame.columns, column, "target", also=POSITION_COLUMNS)
    require_label_column(frame.columns, groups, "groups", also=("image_id",))
    if task not in ("auto", "classification", "regression"):
        raise ConfigError(
            f"task {task!r} is unknown; use 'auto', 'classification' or 'regression'."
        )
    if control_by not in ("label", "image"):
        raise ConfigError(f"control_by {control_by!r} is unknown; use 'label' or 'image'.")
    if not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ConfigError(f"cv={cv!r} is invalid; pass an integer number of folds >= 2.")


def _resolve_task(frame: pd.DataFrame, targets: list[str], task: str) -> str:
    if task != "auto":
        if task == "classification" and len(targets) > 1:
            raise ConfigError("classification takes one target column; pass a single target.")
        return task
    if len(targets) > 1:
        return "regression"
    column = frame[targets[0]]
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.dropna().to_numpy(dtype=np.float64)
        if not np.all(values == np.round(values)):
            return "regression"
    return "classification"


def _encode(meta: pd.DataFrame, targets: list[str], task: str) -> np.ndarray:
    if task == "regression":
        try:
            return meta[targets].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(
                f"target column(s) {targets} are not numeric; use task='classification'."
            ) from err
    classes, codes = np.unique(meta[targets[0]].to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"target column {targets[0]!r} has {len(classes)} class(es) "
            f"{[str(c) for c in classes]}; a classification probe needs at least two: pick "
            "another target or more data."
        )
    return codes.ravel().astype(np.int64)


def _fold_map(frame, random_frame, groups, cv, seed):
    values = frame[groups]
    if random_frame is not None and groups in random_frame.columns:
        values = pd.concat([values, random_frame[groups]], ignore_index=True)
    per_group = values.drop_duplicates().to_numpy()
    fold = group_folds(per_group, cv, seed)
    lookup = pd.Series(fold, index=pd.Index(per_group))

    def fold_of(column: pd.Series) -> np.ndarray:
        return lookup.reindex(column.to_numpy()).to_numpy(dtype=np.int64)

    return fold_of
