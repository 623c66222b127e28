"""A model's preprocessing overridden (probing.preprocessing, load_model(preprocessing=...)):
the keys replaced, checked, and what extraction then feeds the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from probing import load_model
from probing.data import make_transform
from probing.errors import ConfigError
from probing.preprocessing import override_preprocessing

CONFIG = {"input_size": (3, 8, 8), "interpolation": "bicubic", "mean": (0.5,) * 3,
          "std": (0.5,) * 3, "crop_pct": 0.875, "crop_mode": "center"}


def test_keys_are_replaced_one_value_per_channel_and_the_config_is_not_changed():
    got = override_preprocessing(CONFIG, {"mean": 0.1, "std": [0.1, 0.2, 0.3],
                                          "interpolation": "bilinear", "crop_pct": 1,
                                          "crop_mode": "squash"})
    assert got == {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.1,) * 3,
                   "std": (0.1, 0.2, 0.3), "crop_pct": 1.0, "crop_mode": "squash"}
    assert CONFIG["mean"] == (0.5,) * 3 and CONFIG["crop_pct"] == 0.875
    assert override_preprocessing(CONFIG, None) == CONFIG == override_preprocessing(CONFIG, {})


@pytest.mark.parametrize("bad, match", [
    ({"men": 0.5}, "'men' is not one that can be set; did you mean 'mean'"),
    ({"input_size": (3, 16, 16)}, "the input size is the model's own"),
    ({"mean": [0.1, 0.2]}, "has 2 values but the model takes 3 input channel"),
    ({"mean": "grey"}, "is not a number or a list of numbers"),
    ({"std": [0.5, 0.0, 0.5]}, "std=.* must be positive"),
    ({"mean": float("nan")}, "is not finite"),
    ({"crop_pct": 0}, r"not in \(0, 1\]"),
    ({"crop_pct": True}, r"not in \(0, 1\]"),
    ({"interpolation": "cubic"}, "is not one of nearest, bilinear, bicubic"),
    ({"crop_mode": "centre"}, "is not one of center, squash, border"),
])
def test_a_bad_key_or_value_is_one_clear_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        override_preprocessing(CONFIG, bad)


def test_the_model_is_fed_pixels_normalised_with_the_given_mean_and_std():
    plain = load_model("demo")
    custom = load_model(plain, preprocessing={"mean": [0.2, 0.4, 0.6], "std": 0.25})
    assert plain.data_config["mean"] == (0.5,) * 3  # the LoadedModel passed in is unchanged
    assert custom.model is plain.model and custom.fingerprint == plain.fingerprint
    rgb = np.array([51, 102, 204], np.uint8)  # 0.2, 0.4, 0.8 of 255
    image = Image.fromarray(np.broadcast_to(rgb, (32, 32, 3)).copy())
    x = make_transform(custom.data_config)(image)
    want = (torch.tensor(rgb / 255.0) - torch.tensor([0.2, 0.4, 0.6])) / 0.25
    torch.testing.assert_close(x[:, 5, 7].double(), want, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="did you mean 'std'"):
        load_model("demo", preprocessing={"stdev": 0.5})
