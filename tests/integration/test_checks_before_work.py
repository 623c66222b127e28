"""Every analysis parameter is checked against the data, the model and the capture before
anything is extracted: a typo fails at once, no model forward runs and no store is written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import probing.run.runner as runner
from probing import ConfigError, LayoutError
from probing.cli import main
from probing.run.runner import run_spec

SPEC = ('output = "{out}"\nstore = "{store}"\n[model]\nspec = "demo"\n[data]\nsource = "shapes"\n'
        'n = 8\n[capture]\n{capture}[analyses.{analysis}]\n{params}')


@pytest.fixture()
def no_work(monkeypatch):
    """Counts model loads and forwards and fails on extraction: the checks must come first."""
    work = SimpleNamespace(loads=[], forwards=[])
    load = runner.load_model

    def counted_load(*args, **kwargs):
        work.loads.append(args)
        loaded = load(*args, **kwargs)
        loaded.model.register_forward_pre_hook(lambda *_: work.forwards.append(1))
        return loaded

    def no_extract(*args, **kwargs):
        raise AssertionError("extraction ran before the parameters were checked")

    monkeypatch.setattr(runner, "load_model", counted_load)
    monkeypatch.setattr(runner, "extract", no_extract)
    return work


def _spec(tmp: Path, analysis: str, params: str, capture: str = "") -> Path:
    path = tmp / "spec.toml"
    path.write_text(SPEC.format(out=(tmp / "report").as_posix(),
                                store=(tmp / "stores").as_posix(), capture=capture,
                                analysis=analysis, params=params))
    return path


def _nothing_written(tmp: Path) -> bool:
    stores = tmp / "stores"
    return not (tmp / "report").exists() and (not stores.exists() or not any(stores.iterdir()))


@pytest.mark.parametrize("analysis", ["layer_probes", "embedding_map"])
def test_a_typo_label_column_fails_before_any_work(tmp_path, no_work, analysis):
    key = "target" if analysis == "layer_probes" else "color"
    with pytest.raises(ConfigError) as info:
        run_spec(_spec(tmp_path, analysis, f'{key} = "shpe"\n'), quiet=True)
    msg = str(info.value)
    assert f'[analyses.{analysis}] {key} = "shpe" is not a label column' in msg
    assert "Did you mean 'shape_id'?" in msg or "Did you mean 'shape'?" in msg
    listed = msg.split("pick one of ")[1].split(".")[0].split(", ")
    assert listed == ["label", "shape_id", "hue", "colour", "center_row", "center_col", "size",
                      "rotation", "background", "split"]  # label columns only, never row/col
    assert no_work.loads == [] and _nothing_written(tmp_path)  # not even the model was loaded


def test_position_targets_and_a_blank_patch_target_pass_the_check(tmp_path, no_work):
    # row / col are valid probe targets (declared by the rule's `also`), "" means "= target"
    with pytest.raises(AssertionError, match="extraction ran"):
        run_spec(_spec(tmp_path, "layer_probes", 'target = "label"\npatch_target = "row"\n'),
                 quiet=True)


def test_layers_beyond_the_model_fail_before_any_work(tmp_path, no_work):
    with pytest.raises(LayoutError) as info:
        run_spec(_spec(tmp_path, "cka", "layers = [40]\n"), quiet=True)
    msg = str(info.value)
    assert "[analyses.cka] layers = [40] does not fit model demo (4 blocks)" in msg
    assert no_work.forwards == [] and _nothing_written(tmp_path)


def test_layers_the_capture_leaves_out_fail_before_any_work(tmp_path, no_work):
    with pytest.raises(ConfigError) as info:
        run_spec(_spec(tmp_path, "layer_probes", "layers = [3, -1]\n",
                       capture="layers = [0, 2, 4]\n"), quiet=True)
    msg = str(info.value)
    assert "[analyses.layer_probes] layers = [3, -1] asks for layers 3, which the capture " \
           "leaves out ([capture] layers = [0, 2, 4])" in msg
    assert no_work.forwards == [] and _nothing_written(tmp_path)


def test_kinds_the_capture_leaves_out_fail_before_any_work(tmp_path, no_work):
    with pytest.raises(ConfigError) as info:
        run_spec(_spec(tmp_path, "layer_probes", 'kinds = ["cls", "patch"]\n',
                       capture='kinds = ["cls"]\n'), quiet=True)
    assert 'add "patch" to [capture] kinds' in str(info.value)
    assert no_work.forwards == [] and _nothing_written(tmp_path)


def test_the_cli_reports_a_typo_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["run", str(_spec(tmp_path, "layer_probes",
                                                     'target = "shpe"\n'))])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "is not a label column" in lines[0]
    assert "extracting" not in res.stderr and _nothing_written(tmp_path)
