"""One attention-input parser: every public attention function takes every documented form
and gives the same numbers; a list of per-layer arrays means layers, never images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from probing.attention import (
    attention_map_frame,
    attention_maps,
    mean_attention_distance,
    mean_attention_distance_per_image,
    rollout,
    rollout_map,
    stack_attentions,
)
from probing.attention.inputs import parse_attention
from probing.attention_frames import attention_frame
from probing.errors import ConfigError, DataError
from probing.layout import TokenLayout

LAYOUT = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=("reg", "cls"))
B, L, H = 3, 4, 2


def _attention() -> np.ndarray:
    a = np.random.default_rng(0).random((B, L, H, LAYOUT.n_tokens, LAYOUT.n_tokens)) ** 3
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def _batched_forms(a: np.ndarray) -> dict[str, object]:
    """Every documented form holding the same B images."""
    ids = np.arange(B)
    return {
        "array (B, L, H, N, N)": a,
        "torch (B, L, H, N, N)": torch.from_numpy(a),
        "list of (B, H, N, N)": [a[:, i] for i in range(L)],
        "tuple of torch (B, H, N, N)": tuple(torch.from_numpy(a[:, i]) for i in range(L)),
        "dict {block: (B, H, N, N)}": {i + 1: a[:, i] for i in range(L)},
        "attention frame": attention_frame({i + 1: a[:, i] for i in range(L)}, ids),
    }


def _one_image_forms(a: np.ndarray) -> dict[str, object]:
    """The forms without a batch axis, for image 0."""
    return {
        "array (L, H, N, N)": a[0],
        "list of (H, N, N)": [a[0, i] for i in range(L)],
        "tuple of torch (H, N, N)": tuple(torch.from_numpy(a[0, i]) for i in range(L)),
    }


FUNCTIONS = {
    "stack_attentions": lambda x: stack_attentions(x)[0],
    "attention_maps": lambda x: attention_maps(x, LAYOUT),
    "attention_map_frame": lambda x: attention_map_frame(x, LAYOUT)["value"].to_numpy(),
    "mean_attention_distance": lambda x: mean_attention_distance(
        x, LAYOUT)["distance_px"].to_numpy(),
    "mean_attention_distance_per_image": lambda x: mean_attention_distance_per_image(
        x, LAYOUT)["distance_px"].to_numpy(),
    "rollout": lambda x: np.asarray(rollout(x, LAYOUT, discard_ratio=0.2)),
    "rollout_map": lambda x: rollout_map(x, LAYOUT),
}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_takes_every_form_with_the_same_numbers(name):
    fn = FUNCTIONS[name]
    a = _attention()
    reference = fn(a)
    for form, value in _batched_forms(a).items():
        np.testing.assert_allclose(fn(value), reference, rtol=1e-6, atol=1e-9, err_msg=form)
    one = fn(a[:1])
    for form, value in _one_image_forms(a).items():
        np.testing.assert_allclose(fn(value), one, rtol=1e-6, atol=1e-9, err_msg=form)


def test_a_list_of_per_layer_arrays_is_layers_not_images():
    """Regression (issue 11, defect 3): ``rollout([a1..a5])`` with each ``(3, H, N, N)``
    stacked the list as a batch and returned 5 images."""
    rng = np.random.default_rng(1)
    per_layer = [rng.dirichlet(np.ones(LAYOUT.n_tokens), size=(3, H, LAYOUT.n_tokens))
                 for _ in range(5)]
    joint = rollout(per_layer)
    assert joint.shape == (3, LAYOUT.n_tokens, LAYOUT.n_tokens)
    np.testing.assert_allclose(joint, rollout(np.stack(per_layer, axis=1)))
    parsed = parse_attention(per_layer)
    assert parsed.labels.tolist() == [1, 2, 3, 4, 5]


def test_ambiguous_or_bad_forms_are_refused():
    a = _attention()
    with pytest.raises(DataError, match="each layer"):
        parse_attention([a, a])  # a list of 5-D arrays: layers of what?
    with pytest.raises(DataError, match="each layer"):
        parse_attention([a[0, 0], a[:, 0]])  # mixed (H, N, N) and (B, H, N, N)
    with pytest.raises(DataError, match="empty"):
        parse_attention([])
    with pytest.raises(DataError, match="different"):
        parse_attention([a[:, 0], a[:2, 1]])
    with pytest.raises(DataError, match="not an accepted form"):
        parse_attention(a[0, 0])


def test_frame_ids_and_labels_carry_through():
    a = _attention()
    frame = attention_frame({2: a[:, 0], 5: a[:, 1]}, np.array([10, 11, 12]))
    out = attention_map_frame(frame, LAYOUT)
    assert sorted(out["image_id"].unique()) == [10, 11, 12]
    assert sorted(out["layer"].unique()) == [2, 5]
    dist = mean_attention_distance_per_image(frame, LAYOUT)
    assert isinstance(dist, pd.DataFrame) and set(dist["image_id"]) == {10, 11, 12}


def test_layout_is_the_second_parameter_of_rollout():
    a = _attention()
    np.testing.assert_allclose(rollout(a, LAYOUT, "max", 0.3),
                               rollout(a, layout=LAYOUT, head_fusion="max", discard_ratio=0.3))
    with pytest.raises(ConfigError, match="not a TokenLayout"):
        rollout(a, "mean")  # the old positional order (head_fusion second)
