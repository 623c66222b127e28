"""Where ``layout`` goes in every public function of probing.attention and probing.attribution.

The rule (stated in both packages' docstrings and the README): ``layout`` comes right after
the inputs it describes: third after a model and its images ``(model, images, layout, ...)``,
second after arrays ``(attentions, layout, ...)`` / ``(images, layout, ...)``, first where it
is the only input; it is annotated ``TokenLayout``, or ``TokenLayout | None = None`` where it
is optional (always so for functions that take a model, which derive it from the model).
"""

from __future__ import annotations

import importlib
import inspect
import typing

import numpy as np
import pytest
import torch
from torch import nn

from probing.errors import ConfigError
from probing.layout import TokenLayout

FACES = ("probing.attention", "probing.attribution")
LAYOUT = TokenLayout(grid=(2, 3), patch_size=(4, 4), prefix=())


def _with_layout() -> dict[str, object]:
    out = {}
    for face in FACES:
        module = importlib.import_module(face)
        for name in module.__all__:
            fn = getattr(module, name)
            if inspect.isfunction(fn) and "layout" in inspect.signature(fn).parameters:
                out[f"{face}.{name}"] = fn
    return out


FUNCTIONS = _with_layout()
TAKES_A_MODEL = {
    "probing.attention.gradient_relevance", "probing.attention.gradient_rollout",
    "probing.attribution.attribute", "probing.attribution.attribution_maps",
    "probing.attribution.cascading_randomization", "probing.attribution.deletion_curve",
    "probing.attribution.faithfulness_curves", "probing.attribution.insertion_curve",
}


def test_the_check_sees_every_function_it_should():
    assert TAKES_A_MODEL <= set(FUNCTIONS)
    assert {"probing.attention.rollout", "probing.attention.attention_maps",
            "probing.attention.mean_attention_distance_per_image",
            "probing.attribution.make_baseline"} <= set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_layout_position_and_annotation_follow_the_rule(name):
    fn = FUNCTIONS[name]
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    layout = params[names.index("layout")]
    assert layout.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
    if names[0] == "model":
        assert name in TAKES_A_MODEL
        assert names[:3] == ["model", "images", "layout"], (name, names)
    elif names[0] == "layout":  # the layout is the only input: nothing else is required
        assert all(p.default is not inspect.Parameter.empty for p in params[1:]), name
    else:
        assert names[1] == "layout", (name, names)
    hint = typing.get_type_hints(fn)["layout"]
    optional = set(typing.get_args(hint)) == {TokenLayout, type(None)}
    assert hint is TokenLayout or optional, (name, hint)
    # optional exactly when it defaults to None; required for none that takes a model
    assert optional == (layout.default is None), (name, hint, layout.default)
    if name in TAKES_A_MODEL:
        assert optional, name


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 12, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_the_old_positional_orders_are_refused_by_name():
    """An argument in the old slot (method, maps, target, baseline) lands on ``layout`` and
    is refused with the fix instead of being used silently."""
    from probing.attention import gradient_rollout
    from probing.attribution import (
        attribution_maps,
        cascading_randomization,
        deletion_curve,
        faithfulness_curves,
        make_baseline,
    )

    model, x = _Linear(), torch.rand(2, 3, 8, 12)
    maps = np.ones((2, 2, 3))
    calls = [
        lambda: attribution_maps(model, x, "saliency"),
        lambda: cascading_randomization(model, x, ("saliency",)),
        lambda: gradient_rollout(model, x, 0),
        lambda: deletion_curve(model, x, maps, maps=maps),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="third argument"):
            call()
    # the curves take their maps by keyword: the old third positional is no longer accepted
    for call in (lambda: deletion_curve(model, x, maps),
                 lambda: faithfulness_curves(model, x, {"m": maps})):
        with pytest.raises(TypeError, match="keyword-only argument: 'maps'"):
            call()
    with pytest.raises(ConfigError, match="second argument"):
        make_baseline(x, "zero", LAYOUT)
    # the new order and keywords give the same maps
    a = attribution_maps(model, x, LAYOUT, "saliency", 0).maps
    b = attribution_maps(model, images=x, method="saliency", target=0, layout=LAYOUT).maps
    np.testing.assert_array_equal(a, b)
    assert torch.equal(make_baseline(x, LAYOUT, "zero"), torch.zeros_like(x))
