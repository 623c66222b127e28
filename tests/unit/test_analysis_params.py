"""Analysis parameters come from run()'s signature: defaults, rules, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from probing import AnalysisError, ConfigError
from probing.constraints import Interval, Is, Items, Layers, Options
from probing.run.registry import discover, get_analysis
from probing.run.spec import check_params

HEADER = '''
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from probing.constraints import Interval, Layers, Options

if TYPE_CHECKING:  # the context's annotation is never resolved
    from probing.not_a_module import RunContext

NEEDS = {"kinds": ["cls"]}
'''

GOOD = HEADER + '''
def run(ctx: RunContext,
        target: str = "label",
        cv: Annotated[int, Interval(int, 2, None)] = 5,
        layers: Annotated[str | int | list, Layers()] = "all",
        ratio: float = 0.5,
        count: int = 3,
        mdl: bool = False,
        solver: Literal["logistic", "ridge"] = "logistic",
        kinds: list[str] = ("cls",),
        limit: int | None = None,
        fusion: Annotated[str, Options("mean", "max")] = "mean"):
    """A test analysis."""
'''


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "an"
    path.mkdir()
    monkeypatch.setenv("PROBING_ANALYSES_PATH", str(path))
    return path


def test_defaults_and_rules_come_from_the_signature(folder):
    (folder / "sig.py").write_text(GOOD)
    module = get_analysis("sig")
    assert module.defaults == {"target": "label", "cv": 5, "layers": "all", "ratio": 0.5,
                               "count": 3, "mdl": False, "solver": "logistic",
                               "kinds": ("cls",), "limit": None, "fusion": "mean"}
    assert module.rules == {
        "target": Is(str), "cv": Interval(int, 2, None), "layers": Layers(),
        "ratio": Interval(float), "count": Interval(int), "mdl": Is(bool),
        "solver": Options("logistic", "ridge"), "kinds": Items(Is(str)),
        "limit": (Interval(int), None), "fusion": Options("mean", "max")}
    assert discover()["sig"].params == module.params
    merged = check_params("sig", {"cv": 3, "ratio": 1, "kinds": ["cls", "patch"]}, module.params)
    assert merged == {**module.defaults, "cv": 3, "ratio": 1, "kinds": ["cls", "patch"]}


@pytest.mark.parametrize("key, value, fragment", [
    ("cv", 1, "[analyses.sig] cv = 1 is invalid: it must be an integer >= 2; write e.g. cv = 5 "
              "in the run spec."),
    ("cv", 2.5, "[analyses.sig] cv = 2.5 is invalid"),
    ("mdl", "yes", '[analyses.sig] mdl = "yes" is invalid: it must be true or false'),
    ("count", True, "[analyses.sig] count = true is invalid: it must be an integer;"),
    ("solver", "lbfgs", "it must be one of 'logistic', 'ridge'; write e.g. solver = "
                        '"logistic"'),
    ("kinds", ["cls", 3], "it must be a list of strings"),
    ("target", ["label"], "it must be a string"),
])
def test_a_bad_spec_value_is_refused_naming_the_key(folder, key, value, fragment):
    (folder / "sig.py").write_text(GOOD)
    with pytest.raises(ConfigError) as info:
        check_params("sig", {key: value}, get_analysis("sig").params)
    assert fragment in str(info.value)


def test_unknown_parameter_suggests_the_close_one(folder):
    (folder / "sig.py").write_text(GOOD)
    with pytest.raises(ConfigError, match="unknown parameter 'solvr' of analysis 'sig'. "
                                          "Did you mean 'solver'?"):
        check_params("sig", {"solvr": "ridge"}, get_analysis("sig").params)


@pytest.mark.parametrize("code, fragment", [
    ('PARAMS = {"k": 3}\n\ndef run(ctx, k: int = 3):\n    pass\n',
     "defines PARAMS, which is no longer read; move each parameter into run()'s signature"),
    ("def run(ctx, k: int):\n    pass\n", "parameter 'k' of run() in {path} has no default"),
    ("def run(ctx, k: int = 3, **params):\n    pass\n",
     "run() in {path} takes **params, which hides its parameters"),
    ("def run(ctx, *layers):\n    pass\n", "run() in {path} takes *layers"),
    ("def run(ctx, k=3):\n    pass\n", "parameter 'k' of run() in {path} states no rule"),
    ("from typing import Any\n\ndef run(ctx, k: Any = 3):\n    pass\n", "states no rule"),
    ("def run(ctx, k: int = None):\n    pass\n",
     "the default None of parameter 'k' of run() in {path} breaks its rule (an integer)"),
    ("from typing import Annotated\nfrom probing.constraints import Interval\n\n"
     "def run(ctx, k: Annotated[int, Interval(int, 1, None)] = 0):\n    pass\n",
     "breaks its rule (an integer >= 1)"),
    ("def run(ctx, k: Missing = 3):\n    pass\n", "cannot be resolved"),
])
def test_a_bad_declaration_is_an_analysis_error_naming_the_file(folder, code, fragment):
    path = folder / "bad.py"
    path.write_text("from __future__ import annotations\n\n" + code)
    with pytest.raises(AnalysisError) as info:
        get_analysis("bad")
    message = str(info.value)
    assert fragment.format(path=path) in message and str(path) in message, message
    assert "\n" not in message
    with pytest.raises(AnalysisError):
        discover(strict=True)
    with pytest.warns(UserWarning, match="bad.py"):
        assert "bad" not in discover()


@pytest.mark.parametrize("name", ["attention_maps", "rollout"])
def test_the_old_query_name_mean_is_refused_with_its_new_name(name):
    params = get_analysis(name).params
    with pytest.raises(ConfigError) as info:
        check_params(name, {"query": "mean"}, params)
    assert (f'[analyses.{name}] query = "mean" is invalid (did you mean \'pooled\'?): '
            in str(info.value))
    assert 'write e.g. query = "pooled"' in str(info.value)
    assert check_params(name, {"query": "pooled"}, params)["query"] == "pooled"
