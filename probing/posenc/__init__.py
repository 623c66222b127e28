"""Positional encodings: tables, similarity grids, decay with distance, PE-content subspaces.

Tables (all float64)
--------------------
- :func:`sincos_1d` — Vaswani et al. (2017), "Attention Is All You Need":
  ``PE(pos, 2i) = sin(pos w_i)``, ``PE(pos, 2i+1) = cos(pos w_i)``, ``w_i = base^(-2i/d)``.
- :func:`sincos_2d` — MAE (He et al. 2022) and timm ``build_sincos2d_pos_embed``: half the
  columns encode the row, half the column, ``w_i = base^(-i/(d/4))``; layouts ``"timm"``,
  ``"timm_interleave"``, ``"mae"``.
- :func:`learned_table` — ViT (Dosovitskiy et al. 2021) learned absolute table, prefix rows
  included unless timm's ``no_embed_class``.
- :func:`relpos_bias` — relative position bias (Shaw et al. 2018; timm ``vit_relpos_*``).
- :func:`rope_frequencies` — rotary embedding (Su et al. 2021; EVA-02, Fang et al. 2023).
- :func:`resample` — bicubic resizing of a patch table to a new grid, as timm does.

A *table frame* has columns ``token`` (sequence position), ``kind``, ``row``, ``col`` (null for
prefix tokens) and ``emb`` (``pd.ArrowDtype(pa.list_(pa.float64(), D))``), patch rows
row-major; build one from vectors with :func:`table_frame`. Analyses accept a table frame or a
``(rows * cols, D)`` array of patch rows.

Analyses
--------
- :func:`similarity_grid` / :func:`similarity_frame` — ViT paper Fig. 7 (centre).
- :func:`decay_1d`, :func:`decay_2d`, :func:`halving_distance` — similarity vs offset/distance.
- :func:`principal_angles`, :func:`principal_subspace`, :func:`variance_fraction`,
  :func:`subspace_overlap` — does position live in a subspace apart from content?
"""

from __future__ import annotations

from .analysis import (
    decay_1d,
    decay_2d,
    decay_null,
    decay_null_test,
    decay_slope,
    halving_distance,
    norm_matched_table,
    similarity_frame,
    similarity_grid,
)
from .models import learned_table, relpos_bias, rope_frequencies
from .subspace import (
    principal_angles,
    principal_subspace,
    subspace_overlap,
    variance_fraction,
)
from .tables import (
    patch_matrix,
    resample,
    sincos_1d,
    sincos_2d,
    table_frame,
    worked_example,
)

__all__ = [
    "decay_1d",
    "decay_2d",
    "decay_null",
    "decay_null_test",
    "decay_slope",
    "halving_distance",
    "learned_table",
    "norm_matched_table",
    "patch_matrix",
    "principal_angles",
    "principal_subspace",
    "relpos_bias",
    "resample",
    "rope_frequencies",
    "similarity_frame",
    "similarity_grid",
    "sincos_1d",
    "sincos_2d",
    "subspace_overlap",
    "table_frame",
    "variance_fraction",
    "worked_example",
]
