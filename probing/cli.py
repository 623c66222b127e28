"""The ``probing`` command.

Every error caused by input is one line on stderr and a non-zero exit status (2); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from .constraints import MAX_COUNT, SEED, Interval, Layers, Name, check, respell
from .errors import ProbingError

__all__ = ["main"]


class _State:
    debug = False
    quiet = False


def _guard(fn: Callable) -> Callable:
    """Turn ProbingErrors (and unexpected errors) into one-line messages unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ProbingError as exc:
            if _State.debug:
                raise
            click.echo(f"error: {respell(exc, 'cli')}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `probing list | head`: the reader left; say nothing more
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, as a command the signal stopped
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if _State.debug:
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for "
                       "the traceback and please report it)", err=True)
            sys.exit(1)

    return wrapper


class _StderrHandler(logging.Handler):
    """The CLI's handler of the ``probing`` logger: one line per record on the stderr of the
    moment (looked up at each record, so click's test runner captures it too), warnings and
    errors prefixed by their level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            if record.exc_info and _State.debug:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            click.echo(text, err=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure_logging(quiet: bool = False, debug: bool = False) -> logging.Logger:
    """Show the ``probing`` logger on stderr: INFO by default, WARNING when ``quiet``, DEBUG
    when ``debug``. Calling it again replaces the handler (no line is shown twice)."""
    logger = logging.getLogger("probing")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors and debug messages.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress messages "
              "(warnings and errors still show).")
@click.version_option(package_name="probing", message="probing %(version)s")
def main(debug: bool, quiet: bool) -> None:
    """Look inside Vision Transformers: embeddings, positional encodings, attention."""
    _State.debug, _State.quiet = debug, quiet
    configure_logging(quiet=quiet, debug=debug)
    if not debug:
        warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (ours and third parties', e.g. PIL's DecompressionBombWarning) as one line on
    stderr, without the source line that Python's default format prints; ``--debug`` keeps
    the default format."""
    text = " ".join(str(message).split())
    click.echo(f"warning: {text} ({category.__name__})", err=True)


class _Integer(click.ParamType):
    """An integer flag whose unparsable text reaches the command unchanged, so that
    :func:`_check_flags` reports it in one line naming the flag (not click's usage block)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return int(value)
        except (TypeError, ValueError):
            return value


INTEGER = _Integer()

# value rules of the flags that are not extraction arguments: {parameter: (rule, example)}
_FLAG_RULES = {
    "workers": (Interval(int, 1, MAX_COUNT), 4),
    "processes": (Interval(int, 1, MAX_COUNT), 2),
    "epochs": (Interval(int, 1, None), 12),
    "seed": (SEED, 0),
}


def _check_flags(rules: dict | None = None, **values) -> None:
    """Check flag values (keyword = the command's parameter name) before anything runs; the
    message names the flag (``--n-images``) and a valid value. ``rules`` defaults to
    :data:`_FLAG_RULES`."""
    rules = _FLAG_RULES if rules is None else rules
    for key, value in values.items():
        rule, example = rules[key]
        check(Name.flag("--" + key.replace("_", "-")), value, rule, example)


_processes_option = click.option(
    "--processes", type=INTEGER, default=None,
    help="Processes for the analyses of an in-process run (default $PROBING_PROCESSES, "
         "else decided by free CPUs; 1: one after another; see the README's 'Parallel "
         "analyses').")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _layers(text: str) -> str | list:
    if text == "all":
        return "all"
    out: list = []
    for t in _split(text) or []:
        try:
            out.append(int(t))
        except ValueError:
            out.append(t)
    return out


def _option_value(text: str) -> object:
    """A ``--mapping-option`` value: comma-separated numbers become a tuple, one number a
    number (int when integral in form), anything else stays a string."""
    def scalar(t: str) -> object:
        for cast in (int, float):
            try:
                return cast(t)
            except ValueError:
                pass
        return t

    parts = [t.strip() for t in text.split(",")]
    return tuple(scalar(t) for t in parts if t) if len(parts) > 1 else scalar(text.strip())


def _key_values(flag: str, pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs of a repeatable ``flag`` (``--mapping-option``, ``--preprocessing``)
    as a dict."""
    from .errors import ConfigError

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r} is not KEY=VALUE; pass e.g. {flag} mean=0.5.")
        out[key.strip()] = _option_value(value)
    return out


def _model_flags(fn: Callable) -> Callable:
    """The ``--mapping`` / ``--mapping-option`` / ``--preprocessing`` options of commands that
    load a model."""
    fn = click.option("--preprocessing", "preprocessing", multiple=True, metavar="KEY=VALUE",
                      help="Replace a key of the model's preprocessing (repeatable): mean, std, "
                           "interpolation, crop_pct, crop_mode; e.g. mean=0.1307 std=0.3081, "
                           "a list as mean=0.5,0.5,0.5.")(fn)
    fn = click.option("--mapping-option", "mapping_option", multiple=True, metavar="KEY=VALUE",
                      help="Option of the mapping (repeatable), e.g. mean=0.1307 std=0.3081 "
                           "act=relu; a list as mean=0.5,0.5,0.5.")(fn)
    return click.option("--mapping", default=None,
                        help="Key mapping of a foreign state dict, e.g. 'lucidrains' (needs "
                             "--mapping-option mean=... and std=...).")(fn)


def _model_options(mapping, mapping_option, preprocessing) -> dict:
    """The :func:`probing.models.load_model` keywords of :func:`_model_flags`."""
    return {"mapping": mapping,
            "mapping_options": _key_values("--mapping-option", mapping_option),
            "preprocessing": _key_values("--preprocessing", preprocessing)}


@main.command()
@click.option("--model", "model_spec", required=True, help="timm name, checkpoint path or 'demo'.")
@click.option("--data", "data_spec", required=True,
              help="'shapes', 'digits', an image folder or a CSV/parquet manifest.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Store directory: new, empty, or a probing store (then it resumes).")
@click.option("--layers", default="all", show_default=True,
              help="'all' or comma-separated layers (negative from the end, 'embed', 'norm').")
@click.option("--kinds", default="cls,patch", show_default=True,
              help="Comma-separated token kinds: cls, reg, dist, patch, pooled.")
@click.option("--attention", is_flag=True, help="Also store post-softmax attention.")
@click.option("--batch-size", default=64, show_default=True, type=INTEGER,
              help="Images per forward pass (1 or more).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--n-images", default=None, type=INTEGER,
              help="Use only the first N images (1 or more).")
@click.option("--no-pretrained", is_flag=True, help="Random-init timm weights (no download).")
@click.option("--arch", default=None, help="timm architecture of a checkpoint file.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise",
              show_default=True, help="Unreadable images: fail, or skip and record them.")
@_model_flags
@_guard
def extract(model_spec, data_spec, out, layers, kinds, attention, batch_size, device, n_images,
            no_pretrained, arch, on_error, mapping, mapping_option, preprocessing) -> None:
    """Extract token vectors (and attention) into a parquet store."""
    from .data import open_source
    from .extract import ARGUMENT_RULES
    from .extract import extract as run_extract
    from .models import load_model

    _check_flags(ARGUMENT_RULES, batch_size=batch_size, n_images=n_images)
    parsed = _layers(layers)
    check(Name.flag("--layers"), parsed, Layers(), "all", shown=layers)
    loaded = load_model(model_spec, pretrained=not no_pretrained, arch=arch, device=device,
                        **_model_options(mapping, mapping_option, preprocessing))
    opts = {} if data_spec in ("shapes", "digits") or data_spec.startswith(("shapes:", "digits:")) \
        else {"on_error": on_error}
    source = open_source(data_spec, **opts)
    store = run_extract(loaded, source, layers=parsed, kinds=_split(kinds),
                        attention=attention, store=out, batch_size=batch_size, n_images=n_images,
                        progress=None if not _State.quiet else False)
    if not _State.quiet:
        from .selection import to_selection

        click.echo(f"wrote {store.path} (kinds {', '.join(store.kinds())}; layers "
                   f"{', '.join(map(str, to_selection(store.layers())))})")


@main.command()
@click.argument("spec")
@click.option("--no-pretrained", is_flag=True, help="Random-init timm weights (no download).")
@click.option("--arch", default=None, help="timm architecture of a checkpoint file.")
@_model_flags
@_guard
def info(spec, no_pretrained, arch, mapping, mapping_option, preprocessing) -> None:
    """Print a model's token layout and preprocessing."""
    from .models import load_model

    click.echo(load_model(spec, pretrained=not no_pretrained, arch=arch,
                          **_model_options(mapping, mapping_option, preprocessing)).describe())


@main.command("list")
@_guard
def list_cmd() -> None:
    """List the available analyses, built-in models and datasets."""
    from .run.registry import catalog

    click.echo("analyses:")
    for name, mod in sorted(catalog().items()):
        click.echo(f"  {name:22s} {mod.description}")
    click.echo("models:\n  demo                   built-in ViT trained on 'shapes' (any timm name "
               "or checkpoint path also works)")
    click.echo("datasets:\n  shapes                 generated shapes with known factors "
               "(shapes:n=512,seed=0)\n  digits                 scikit-learn's 8x8 handwritten "
               "digits (1,797 images)")


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report directory (overrides the spec's output): new, empty or a probing "
              "report folder.")
@click.option("--workers", type=INTEGER, default=None,
              help="Run on a local Dask cluster of N workers (1 or more).")
@click.option("--scheduler", default=None,
              help="Run on an existing Dask scheduler ADDRESS (tcp://host:8786); gives up after "
                   "PROBING_SCHEDULER_TIMEOUT seconds (default 20) without an answer.")
@click.option("--force", is_flag=True, help="Recompute analyses and report even if up to date.")
@_processes_option
@_guard
def run(spec, out, workers, scheduler, force, processes) -> None:
    """Run a TOML spec: extract (or reuse the store), analyse, write the report."""
    from .run.runner import run_spec

    if workers is not None:
        _check_flags(workers=workers)
    if processes is not None:
        _check_flags(processes=processes)
    result = run_spec(spec, out=out, workers=workers, scheduler=scheduler, quiet=_State.quiet,
                      force=force, processes=processes)
    click.echo(f"report: {result.report_dir / 'index.html'}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report directory (default reports/demo): new, empty or a probing report "
              "folder.")
@click.option("--force", is_flag=True, help="Recompute analyses and report even if up to date.")
@_processes_option
@_guard
def demo(out, force, processes) -> None:
    """Run the demo spec on the built-in model and data (offline) and write its report."""
    from .run.runner import demo_spec_path, run_spec

    if processes is not None:
        _check_flags(processes=processes)
    result = run_spec(demo_spec_path(), out=out, quiet=_State.quiet, force=force,
                      processes=processes)
    click.echo(f"report: {result.report_dir / 'index.html'}")


@main.command("train-demo")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder to write the weights to (default ./demo-model; never the package).")
@click.option("--epochs", default=12, show_default=True, type=INTEGER)
@click.option("--seed", default=0, show_default=True, type=INTEGER)
@_guard
def train_demo(out, epochs, seed) -> None:
    """Retrain the built-in demo model from a fixed seed (about 30 minutes on 2 CPU cores)."""
    _check_flags(epochs=epochs, seed=seed)
    from .demo.train import train_demo as train

    train(out=out, epochs=epochs, seed=seed)


def entry() -> None:
    """The ``probing`` command (and ``python -m probing.cli``): :func:`main`, then
    :func:`quick_exit` with its exit status."""
    try:
        main()  # standalone: ends with SystemExit
    except SystemExit as exc:
        quick_exit(exc.code)
    quick_exit(0)


def quick_exit(code: object) -> None:
    """End the process with exit status ``code`` (as ``sys.exit(code)``) once the command
    is done, without the interpreter's teardown of every module and object.

    That teardown (torch with ``torch._dynamo``, timm, pandas, pyarrow, matplotlib) took 1.1-1.3
    s after every command that ran a model, on 2 cores, and does nothing for the user: the
    command's files are written and closed by then. What Python's exit does that matters still
    happens: every ``atexit`` handler runs (logging's flush, multiprocessing's child cleanup,
    executors, Dask), then stdout and stderr are flushed, then ``os._exit``. With another
    non-daemon thread still running, or without CPython's ``atexit._run_exitfuncs``, this is
    a plain ``sys.exit(code)``.
    """
    import atexit
    import os
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit: the message on stderr, status 1
        sys.stderr.write(f"{code}\n")
        status = 1
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    if others or run_exitfuncs is None:
        sys.exit(status)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``probing list | head``) or stream
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
