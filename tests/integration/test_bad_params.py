"""Numbers and options out of range, through the Python API, the run spec and the CLI.

Every case is a ProbingError whose one-line message names the parameter as the user spelled it
(``n_images=``, ``[data] n``, ``--n-images``) and a valid value, raised before any model is
loaded or image extracted: the CLI exits with status 2, one line on stderr, no traceback and no
store or report folder left behind. The ``--scheduler`` cases use only sockets the test opens on
127.0.0.1.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import probing
from probing import ConfigError, DataError, ProbingError
from probing.cli import main
from probing.constraints import Interval, Items, Options, accepts, describe, example_of
from probing.data import DigitsSource, iter_batches, open_source
from probing.run.registry import discover
from probing.run.runner import run_spec
from probing.run.spec import check_params, load_spec


# ------------------------------------------------------------------------- rule language
def test_rules_accept_and_describe_exactly_their_range():
    count = Interval(int, 1, 10)
    assert [count.accepts(v) for v in (0, 1, 10, 11, 2.0, True, "3")] == \
        [False, True, True, False, False, False, False]
    ratio = Interval(float, 0, 1, closed="left")
    assert [ratio.accepts(v) for v in (0, 0.5, 1.0, -0.1, float("nan"))] == \
        [True, True, False, False, False]
    assert describe(count) == "an integer from 1 to 10"
    assert describe(ratio) == "a number in [0, 1)"
    assert describe((Interval(int, 1, None), None)) == "an integer >= 1 or absent"
    assert describe(Items(Options("a", "b"), min_len=1)) == \
        "a non-empty list of values from 'a', 'b'"
    assert accepts(Options(-1), -1) and not accepts(Options(1), True)
    for rule in (count, ratio, Interval(float, 0, None, closed="neither"),
                 Items(Interval(int, 1, None), 2, 2), Options("x", "y")):
        assert accepts(rule, example_of(rule)), rule


def test_every_analysis_parameter_has_a_default_and_a_rule_from_its_signature():
    found = discover(strict=True)
    assert len(found) >= 10
    for name, module in found.items():
        signature = inspect.signature(module.run)
        declared = list(signature.parameters.values())[1:]  # after the context
        assert list(module.params) == [p.name for p in declared], name
        for p in declared:
            param = module.params[p.name]
            assert param.default is not inspect.Parameter.empty, f"{name}.{p.name}"
            assert param.default is p.default, f"{name}.{p.name}"
            assert accepts(param.rule, param.default), f"{name}.{p.name}"
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
                # numbers state their range, not just their type (the string annotation,
                # evaluated alone: the context's annotation names a type-checking import)
                hint = module.run.__annotations__[p.name]
                hint = eval(hint, module.run.__globals__) if isinstance(hint, str) else hint
                assert typing.get_origin(hint) is typing.Annotated, \
                    f"{name}.{p.name} has no range rule"
                assert not accepts(param.rule, True), f"{name}.{p.name}"
        assert check_params(name, {}, module.params) == module.defaults


# ------------------------------------------------------------------------- shared files
SPEC = ('output = "{out}"\nstore = "{store}"\n{top}[model]\nspec = "demo"\n[data]\n'
        'source = "shapes"\n{data}[capture]\n{capture}[analyses.{analysis}]\n{params}')


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params")
    pd.DataFrame({"path": [1, 2], "label": ["a", "b"]}).to_csv(path / "numeric.csv", index=False)
    return path


def _spec(tmp: Path, name: str, *, top: str = "", data: str = "n = 8\n", capture: str = "",
          analysis: str = "embedding_map", params: str = 'methods = ["pca"]\n') -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(SPEC.format(out=tmp / f"report-{name}", store=tmp / f"stores-{name}",
                                top=top, data=data, capture=capture, analysis=analysis,
                                params=params))
    return path


def _left_behind(tmp: Path, name: str) -> list[Path]:
    return [p for p in (tmp / f"report-{name}", tmp / f"stores-{name}", tmp / f"store-{name}")
            if p.exists()]


# (id, API call or None, CLI args or None, error class, API fragment, CLI fragment)
Case = tuple[str, "Callable[[Path], object] | None", "Callable[[Path], list[str]] | None", type,
             str, str]


def _extract_args(tmp: Path, name: str, *extra: str, data: str = "shapes:n=4") -> list[str]:
    return ["extract", "--model", "demo", "--data", data, "--out", str(tmp / f"store-{name}"),
            *extra]


def _spec_case(name: str, fragment: str, **spec) -> Case:
    """A run-spec case: load_spec / run_spec raise it; ``probing run`` reports it."""
    return (name, lambda t: run_spec(_spec(t, name, **spec), quiet=True),
            lambda t: ["run", str(_spec(t, name + "-cli", **spec))], ConfigError, fragment,
            fragment)


def cases() -> list[Case]:
    ext = _extract_args
    return [
        ("batch_size_huge",
         lambda t: probing.extract("demo", "shapes:n=4", batch_size=10**20),
         lambda t: ext(t, "batch_size_huge", "--batch-size", "99999999999999999999"),
         ConfigError, "batch_size=100000000000000000000 is invalid",
         "--batch-size 99999999999999999999 is invalid"),
        ("batch_size_not_a_number", lambda t: probing.extract("demo", "shapes:n=4",
                                                              batch_size="abc"),
         lambda t: ext(t, "batch_size_not_a_number", "--batch-size", "abc"), ConfigError,
         "batch_size='abc' is invalid", "--batch-size abc is invalid"),
        ("n_images_negative", lambda t: probing.extract("demo", "shapes:n=4", n_images=-3),
         lambda t: ext(t, "n_images_negative", "--n-images", "-3"), ConfigError,
         "n_images=-3 is invalid", "--n-images -3 is invalid"),
        ("n_images_zero",
         lambda t: probing.extract("demo", "shapes:n=4", n_images=0,
                                   store=t / "store-n_images_zero"),
         lambda t: ext(t, "n_images_zero", "--n-images", "0"), ConfigError,
         "n_images=0 is invalid", "--n-images 0 is invalid"),
        ("layers_not_a_layer", lambda t: probing.extract("demo", "shapes:n=4", layers=[1.5]),
         lambda t: ext(t, "layers_not_a_layer", "--layers", "1.5"), ConfigError,
         "layers=[1.5] is invalid", "--layers 1.5 is invalid"),
        ("shard_size_zero",
         lambda t: probing.extract("demo", "shapes:n=4", shard_size=0,
                                   store=t / "store-shard_size_zero"),
         None, ConfigError, "shard_size=0 is invalid", ""),
        ("num_workers_negative",
         lambda t: probing.extract("demo", "shapes:n=4", num_workers=-1), None, ConfigError,
         "num_workers=-1 is invalid", ""),
        ("lock_timeout_negative",
         lambda t: probing.extract("demo", "shapes:n=4", lock_timeout=-1,
                                   store=t / "store-lock_timeout_negative"),
         None, ConfigError, "lock_timeout=-1 is invalid", ""),
        ("iter_batches_batch_size_zero",
         lambda t: next(iter_batches(open_source("shapes:n=2"), {"input_size": (3, 8, 8)}, 0)),
         None, ConfigError, "batch_size=0 is invalid", ""),
        ("subset_zero", lambda t: open_source("shapes:n=4").subset(0), None, ConfigError,
         "n=0 is invalid", ""),
        ("shapes_n_not_a_number", lambda t: open_source("shapes:n=abc"),
         lambda t: ext(t, "shapes_n_not_a_number", data="shapes:n=abc"), DataError,
         "shapes option n='abc' is invalid", "shapes option n='abc' is invalid"),
        ("shapes_seed_negative", lambda t: probing.ShapesSource(n=4, seed=-1),
         lambda t: ext(t, "shapes_seed_negative", data="shapes:n=4,seed=-1"), DataError,
         "shapes option seed=-1 is invalid", "shapes option seed=-1 is invalid"),
        ("shapes_size_tiny", lambda t: open_source("shapes:size=2"), None, DataError,
         "shapes option size=2 is invalid", ""),
        ("digits_n_negative", lambda t: DigitsSource(n=-1),
         lambda t: ext(t, "digits_n_negative", data="digits:n=-1"), DataError,
         "digits option n=-1 is invalid", "digits option n=-1 is invalid"),
        ("digits_n_beyond_the_set", lambda t: DigitsSource(n=5000), None, DataError,
         "digits option n=5000 is invalid", ""),
        ("manifest_numeric_path_column", lambda t: open_source(t / "numeric.csv"),
         lambda t: ext(t, "manifest_numeric_path_column", data=str(t / "numeric.csv")),
         DataError, "not an image file path", "not an image file path"),
        ("manifest_path_column_not_text",
         lambda t: probing.ManifestSource(t / "numeric.csv", path_column=3), None, DataError,
         "path_column=3 is invalid", ""),
        ("workers_negative", lambda t: run_spec(_spec(t, "workers_negative"), workers=-1,
                                                quiet=True),
         lambda t: ["run", str(_spec(t, "workers_negative-cli")), "--workers", "-1"],
         ConfigError, "workers=-1 is invalid", "--workers -1 is invalid"),
        ("train_demo_epochs_zero", None,
         lambda t: ["train-demo", "--epochs", "0", "--out", str(t / "store-train")],
         ConfigError, "", "--epochs 0 is invalid"),
        ("train_demo_seed_negative", None,
         lambda t: ["train-demo", "--seed", "-1", "--out", str(t / "store-train")],
         ConfigError, "", "--seed -1 is invalid"),
        _spec_case("spec_seed_negative", "seed = -1 is invalid", top="seed = -1\n"),
        _spec_case("spec_seed_too_large", "seed = 4294967296 is invalid",
                   top="seed = 4294967296\n"),
        _spec_case("spec_n_zero", "[data] n = 0 is invalid", data="n = 0\n"),
        _spec_case("spec_shard_size_zero", "[capture] shard_size = 0 is invalid",
                   capture="shard_size = 0\n"),
        _spec_case("spec_batch_size_huge", "[capture] batch_size = 99999999999999999999",
                   capture="batch_size = 99999999999999999999\n"),
        _spec_case("spec_num_workers_negative", "[capture] num_workers = -1 is invalid",
                   capture="num_workers = -1\n"),
        _spec_case("spec_kind_unknown", "[capture] kinds = [\"clss\"] is invalid",
                   capture='kinds = ["clss"]\n'),
        _spec_case("spec_style_typo", "style key 'font.szie' is not a matplotlib rc setting; "
                   "did you mean 'font.size'?",
                   top='style = { "font.szie" = 8 }\n'),
        _spec_case("spec_style_bad_value", "style 'font.size' = 'huge' is not a valid value",
                   top='style = { "font.size" = "huge" }\n'),
        _spec_case("cka_k_negative", "[analyses.cka] k = -1 is invalid", analysis="cka",
                   params="k = -1\n"),
        _spec_case("embedding_map_max_points_negative",
                   "[analyses.embedding_map] max_points = -1 is invalid",
                   params="max_points = -1\n"),
        _spec_case("rollout_discard_ratio_one", "[analyses.rollout] discard_ratio = 1.0",
                   analysis="rollout", params="discard_ratio = 1.0\n"),
        _spec_case("layer_probes_one_fold", "[analyses.layer_probes] cv = 1 is invalid",
                   analysis="layer_probes", params="cv = 1\n"),
        _spec_case("attribution_no_steps", "[analyses.attribution] n_steps = 0 is invalid",
                   analysis="attribution", params="n_steps = 0\n"),
        _spec_case("attention_distance_no_images",
                   "[analyses.attention_distance] max_images = 0 is invalid",
                   analysis="attention_distance", params="max_images = 0\n"),
        _spec_case("pe_decay_grid_of_one", "[analyses.pe_decay] resample_grid = [3] is invalid",
                   analysis="pe_decay", params="resample_grid = [3]\n"),
        _spec_case("position_probes_float_cv", "[analyses.position_probes] cv = 2.5 is invalid",
                   analysis="position_probes", params="cv = 2.5\n"),
        _spec_case("attention_maps_unknown_query",
                   "[analyses.attention_maps] query = \"clz\" is invalid",
                   analysis="attention_maps", params='query = "clz"\n'),
    ]


CASES = {c[0]: c for c in cases()}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[1] is not None])
def test_api_raises_one_sentence_naming_the_argument(tmp, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, call, _, error, fragment, _ = CASES[name]
    t = time.perf_counter()
    with pytest.raises(error) as info:
        call(tmp)
    message = str(info.value)
    assert fragment.lower() in message.lower(), message
    assert "\n" not in message and isinstance(info.value, ProbingError)
    assert "e.g." in message or "did you mean" in message.lower() or "point" in message
    assert time.perf_counter() - t < 20, "the check came after loading or extracting"
    assert not _left_behind(tmp, name)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] is not None])
def test_cli_exit_2_one_line_naming_the_flag(tmp, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, _, args, _, _, fragment = CASES[name]
    res = CliRunner().invoke(main, args(tmp))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
    assert not _left_behind(tmp, name) and not _left_behind(tmp, name + "-cli")
    assert not (tmp / "store-train").exists()


def test_valid_boundary_values_still_run(tmp):
    """The smallest accepted values work (a rule must not reject what the code handles)."""
    frame = probing.extract("demo", "shapes:n=3", n_images=1, batch_size=1, layers=[-1],
                            kinds="cls", progress=False)
    assert len(frame) == 1
    assert len(DigitsSource(n=1797)) == 1797 and len(open_source("digits:n=1")) == 1
    spec = load_spec(_spec(tmp, "boundary", top="seed = 4294967295\n", data="n = 1\n",
                           capture="shard_size = 1\nnum_workers = 0\n",
                           params="max_points = 3\nperplexity = 0.5\n"))
    assert spec.data.n == 1 and spec.seed == 2**32 - 1


# ------------------------------------------------------------------------- --scheduler
class _Server:
    """A TCP port on 127.0.0.1 that never answers (``"silent"``: connections queue in the
    backlog, never accepted) or answers garbage (``"garbage"``: an HTTP reply)."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = None
        if mode == "garbage":
            self.thread = threading.Thread(target=self._garbage, daemon=True)
            self.thread.start()

    def _garbage(self) -> None:
        conns = []
        for _ in range(200):  # bounded: at most 40 s
            if self.stop.is_set():
                break
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conns.append(conn)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
        for conn in conns:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
        self.sock.close()


@pytest.fixture(params=["silent", "garbage"])
def bad_scheduler(request):
    pytest.importorskip("distributed")
    server = _Server(request.param)
    yield request.param, server.address
    server.close()


def test_scheduler_that_never_answers_or_answers_garbage(tmp, bad_scheduler, monkeypatch):
    mode, address = bad_scheduler
    monkeypatch.setenv("PROBING_SCHEDULER_TIMEOUT", "2")
    expected = "did not answer within 2 s" if mode == "silent" else "is not a Dask scheduler"
    name = f"scheduler-{mode}"
    t = time.perf_counter()
    with pytest.raises(ConfigError, match=expected) as info:
        run_spec(_spec(tmp, name), scheduler=address, quiet=True)
    assert time.perf_counter() - t < 15
    assert "\n" not in str(info.value) and "EiB" not in str(info.value)
    t = time.perf_counter()
    res = CliRunner().invoke(main, ["run", str(_spec(tmp, name + "-cli")), "--scheduler",
                                    address])
    assert time.perf_counter() - t < 15
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in res.stderr
    assert not _left_behind(tmp, name) and not _left_behind(tmp, name + "-cli")


def test_scheduler_timeout_setting_is_checked(tmp, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("PROBING_SCHEDULER_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="PROBING_SCHEDULER_TIMEOUT=soon is invalid"):
        run_spec(_spec(tmp, "timeout-setting"), scheduler="tcp://127.0.0.1:1", quiet=True)


def test_a_real_scheduler_still_connects_through_the_probe(monkeypatch):
    distributed = pytest.importorskip("distributed")
    import logging

    from probing.run.distributed import dask_client

    monkeypatch.setenv("PROBING_SCHEDULER_TIMEOUT", "10")
    cluster = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    try:
        with dask_client(scheduler=cluster.scheduler_address) as client:
            assert client.scheduler_info()["type"] == "Scheduler"
    finally:
        cluster.close()


def test_a_bad_source_option_is_reported_before_the_model_loads(tmp_path, monkeypatch):
    from probing.run import runner

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the data options were checked")

    monkeypatch.setattr(runner, "load_model", no_model)
    spec = tmp_path / "s.toml"
    spec.write_text('[model]\nspec = "demo"\n[data]\nsource = "shapes"\n'
                    'options = { n = -1 }\n[analyses.embedding_map]\n')
    with pytest.raises(DataError, match="n"):
        runner.run_spec(spec, out=tmp_path / "r", quiet=True)
