"""Attention: one input parser; attention maps and mean distance; rollout and gradient rollout.

The face of the package: every public name lives in one submodule and is re-exported here.

- :mod:`probing.attention.inputs`: the one parser of attention input (:func:`parse_attention`)
  and the checks shared by maps and rollout.
- :mod:`probing.attention.maps`: :func:`attention_maps`, :func:`mean_attention_distance` (the
  summary over images), :func:`mean_attention_distance_per_image` (one row per image) and
  their frames.
- :mod:`probing.attention.rollout`: :func:`rollout`, :func:`rollout_map`,
  :func:`gradient_relevance`, :func:`gradient_rollout`.
- :mod:`probing.attention.ablation`: :func:`head_ablation` (head importance by zero / mean
  ablation, Michel et al. 2019), :func:`ablate_heads`, :func:`head_means`, :func:`head_sites`.
- Patch-grid helpers shared with :mod:`probing.attribution` (:func:`pairwise_patch_distances`,
  :func:`relevance_frame`) live in :mod:`probing.patchgrid`.

Every function is layout-aware: token positions come from a :class:`~probing.layout.TokenLayout`.

Where ``layout`` goes (the same rule in :mod:`probing.attribution`): it comes right after the
inputs it describes, annotated ``TokenLayout`` (``TokenLayout | None = None`` where it is
optional; functions that take a model then derive it from the model):

- second in every function that takes attention arrays: ``(attentions, layout, ...)``;
- third in every function that takes a model: ``(model, images, layout, ...)``
  (:func:`gradient_rollout`, :func:`gradient_relevance`);
- first where the layout is the only input (:func:`pairwise_patch_distances`).

Queries (``query=``) are ``None`` (CLS, or the mean over patch queries without CLS), ``"cls"``,
``"dist"``, ``"reg"``, ``"pooled"`` (the mean over patch queries, the toolkit's name of that
view) or a sequence position.
"""

from __future__ import annotations

from ..patchgrid import pairwise_patch_distances, relevance_frame
from .ablation import (
    ABLATION_COLUMNS,
    ALL_HEADS,
    AblationMode,
    ablate_heads,
    head_ablation,
    head_means,
    head_sites,
)
from .inputs import (
    ATTENTION_FORMS,
    AttentionInput,
    ParsedAttention,
    parse_attention,
    stack_attentions,
)
from .maps import (
    attention_map_frame,
    attention_maps,
    mean_attention_distance,
    mean_attention_distance_per_image,
)
from .rollout import (
    JointAttention,
    gradient_relevance,
    gradient_rollout,
    rollout,
    rollout_map,
)

__all__ = [
    "ABLATION_COLUMNS",
    "ALL_HEADS",
    "ATTENTION_FORMS",
    "AblationMode",
    "AttentionInput",
    "JointAttention",
    "ParsedAttention",
    "attention_map_frame",
    "ablate_heads",
    "attention_maps",
    "gradient_relevance",
    "gradient_rollout",
    "head_ablation",
    "head_means",
    "head_sites",
    "mean_attention_distance",
    "mean_attention_distance_per_image",
    "pairwise_patch_distances",
    "parse_attention",
    "relevance_frame",
    "rollout",
    "rollout_map",
    "stack_attentions",
]
