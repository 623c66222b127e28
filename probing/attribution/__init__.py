"""Attribution over the patch grid (captum), faithfulness curves and sanity checks.

The face of the package: every public name lives in one submodule and is re-exported here.

- :mod:`probing.attribution.inputs`: the images checked against the layout
  (:func:`~probing.attribution.inputs.prepare`) and the baselines (:func:`make_baseline`).
- :mod:`probing.attribution.methods`: :func:`attribution_maps` and :func:`attribute`, captum's
  methods and the attention methods behind one call.
- :mod:`probing.attribution.faithfulness`: deletion and insertion curves (Petsiuk et al. 2018).
- :mod:`probing.attribution.sanity`: cascading model-parameter randomisation (Adebayo et al.
  2018).
- Pixel-to-patch helpers shared with :mod:`probing.attention` (:func:`patch_feature_mask`,
  :func:`pixels_to_patches`) live in :mod:`probing.patchgrid`.

Where ``layout`` goes (the same rule in :mod:`probing.attention`): it comes right after the
inputs it describes, annotated ``TokenLayout`` (``TokenLayout | None = None`` where it is
optional and derived from the model and the images' size):

- third in every function that takes a model: ``(model, images, layout, ...)``
  (:func:`attribution_maps`, :func:`attribute`, :func:`deletion_curve`,
  :func:`insertion_curve`, :func:`faithfulness_curves`, :func:`cascading_randomization`);
  the curves take their ``maps=`` by keyword;
- second in every function that takes arrays only: ``(images, layout, ...)``
  (:func:`make_baseline`), ``(attributions, layout, ...)`` (:func:`pixels_to_patches`);
- first where the layout is the only input (:func:`patch_feature_mask`).

A ``device=`` is checked, never applied: a device other than the model's raises
:class:`~probing.errors.ConfigError` (move the model yourself with ``model.to(...)``); the
images follow the model's device.
"""

from __future__ import annotations

from ..patchgrid import patch_feature_mask, pixels_to_patches
from .faithfulness import (
    FaithfulnessResult,
    black_baseline,
    deletion_curve,
    faithfulness_curves,
    insertion_curve,
)
from .inputs import make_baseline
from .methods import (
    ATTENTION_METHODS,
    CAPTUM_METHODS,
    AttributionMaps,
    attribute,
    attribution_maps,
)
from .sanity import SanityResult, cascading_randomization

__all__ = [
    "ATTENTION_METHODS",
    "CAPTUM_METHODS",
    "AttributionMaps",
    "FaithfulnessResult",
    "SanityResult",
    "attribute",
    "attribution_maps",
    "black_baseline",
    "cascading_randomization",
    "deletion_curve",
    "faithfulness_curves",
    "insertion_curve",
    "make_baseline",
    "patch_feature_mask",
    "pixels_to_patches",
]
