"""Loading models: ``load_model(spec)`` -> :class:`LoadedModel`.

Spec forms
----------
- a timm model name, e.g. ``"vit_small_patch16_224"`` (``pretrained=True`` by default: weights come
  from the user's Hugging Face / timm cache; with ``HF_HUB_OFFLINE=1`` nothing is downloaded);
- a local checkpoint path: ``.safetensors`` (preferred) or ``.pt`` / ``.pth`` (read only with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects), for a timm
  architecture named by ``arch=`` (or by a timm name in the safetensors metadata key ``"arch"``);
- a foreign state dict with ``mapping=`` one of :data:`probing.foreign.FOREIGN_MAPPINGS`;
- ``"demo"``: the built-in model trained on the ``shapes`` dataset;
- an ``nn.Module`` (a timm ViT instance), used as it is.

Ownership: probing never changes a module the caller passed in. A model it builds itself (from
a name, a checkpoint or ``"demo"``) is put on ``device=`` and into eval mode; a module (or a
:class:`LoadedModel`) passed in keeps its device and its training flags. Asking for another
device than the one it is on is a :class:`~probing.errors.ConfigError` (move it yourself with
``model.to(...)``), and code that runs it (extraction, attention, attribution) switches it to
eval mode only for the call, with :func:`eval_mode`, restoring every submodule's flag after.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constraints import suggesting
from .errors import ConfigError, ModelError
from .layout import TokenLayout
from .preprocessing import override_preprocessing
from .seeding import seeded

__all__ = ["LoadedModel", "check_device", "eval_mode", "load_model", "module_device",
           "random_init_copy", "resolve_device"]

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass
class LoadedModel:
    """A model ready for extraction.

    Attributes
    ----------
    model : torch.nn.Module
        The timm ViT: in eval mode when probing built it; a module the caller passed in keeps
        its own training flags (code that runs it uses :func:`eval_mode`).
    layout : TokenLayout
        Its token layout.
    data_config : dict
        Preprocessing in timm's data-config keys (``input_size``, ``mean``, ``std``,
        ``interpolation``, ``crop_pct``, ``crop_mode``).
    name : str
        What the model was loaded from (a timm name, a path, ``"demo"``, or a class name).
    arch : dict
        How to build the same architecture again: ``{"kind": "timm", "name": ..., "kwargs": ...}``
        or ``{"kind": "factory"}`` when only a deep copy is possible.
    """

    model: nn.Module
    layout: TokenLayout
    data_config: dict
    name: str
    arch: dict = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.model.blocks)

    @property
    def embed_dim(self) -> int:
        """Width of the residual stream."""
        return int(getattr(self.model, "embed_dim", getattr(self.model, "num_features", 0)))

    @property
    def fingerprint(self) -> str:
        """SHA-256 over parameter names, shapes and values (first 16 hex digits)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in self.model.state_dict().items():
                h.update(name.encode())
                h.update(str(tuple(tensor.shape)).encode())
                h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> str:
        """Multi-line summary: name, depth, width, heads, preprocessing and token layout."""
        heads = getattr(getattr(self.model.blocks[0], "attn", None), "num_heads", "?")
        cfg = self.data_config
        return "\n".join([
            f"model             {self.name} ({type(self.model).__name__})",
            f"depth x width     {self.depth} blocks x {self.embed_dim}, {heads} heads",
            f"input             {tuple(cfg.get('input_size', ()))}, mean {cfg.get('mean')}, "
            f"std {cfg.get('std')}",
            self.layout.describe(),
        ])


def load_model(
    spec: str | os.PathLike | nn.Module | LoadedModel,
    *,
    pretrained: bool = True,
    arch: str | None = None,
    mapping: str | None = None,
    mapping_options: dict | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **timm_kwargs: Any,
) -> LoadedModel:
    """Load a Vision Transformer for probing.

    Parameters
    ----------
    spec : str, path, torch.nn.Module or LoadedModel
        See the module docstring.
    pretrained : bool
        For timm names: load pretrained weights from the local cache.
    arch : str, optional
        timm architecture name for a local checkpoint.
    mapping : str, optional
        Name of a foreign key mapping (``"lucidrains"``) for another codebase's state dict.
    mapping_options : dict, optional
        Options of the mapping (e.g. ``{"act": "relu", "mean": (0.1307,), "std": (0.3081,)}``);
        ``mean`` and ``std`` are required, since a foreign state dict carries no preprocessing.
    num_classes : int, optional
        Head size; for checkpoints it is read from the checkpoint's head so the classifier is
        never silently re-initialised.
    device : str or torch.device, optional
        Where a model probing builds is put (the CPU when None). A module or LoadedModel
        passed in is never moved: ``device`` must then be None or the device it is on.
    preprocessing : mapping, optional
        Replaces keys of the resolved preprocessing: ``mean``, ``std`` (per channel, or one
        value), ``interpolation``, ``crop_pct``, ``crop_mode`` (see
        :mod:`probing.preprocessing`); e.g. ``{"mean": (0.1307,), "std": (0.3081,)}`` for a
        checkpoint trained with other normalisation than its architecture's pretrained tag.
        A LoadedModel passed in is not changed (a new one is returned).
    **timm_kwargs
        Passed to ``timm.create_model`` (e.g. ``img_size``, ``dynamic_img_size``).

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelError
        Each with its own message: an unknown name or pretrained tag, options timm cannot build
        with, an architecture or module that is not a ViT, pretrained weights missing (offline
        or unreachable), a corrupt or unreadable weights file, a checkpoint that does not fit,
        or one holding non-floating or non-finite weights.
    ConfigError
        Unknown, missing or malformed ``mapping_options`` (a foreign mapping needs ``mean`` and
        ``std``: a state dict carries no preprocessing); a ``device`` other than the one a
        module passed in is on (probing does not move the caller's module); an unknown or
        out-of-range ``preprocessing`` key.
    """
    loaded = _load(spec, pretrained, arch, mapping, mapping_options, num_classes, device,
                   timm_kwargs)
    if not preprocessing:
        return loaded
    return replace(loaded, data_config=override_preprocessing(loaded.data_config,
                                                              preprocessing))


def _load(spec, pretrained: bool, arch: str | None, mapping: str | None,
          mapping_options: dict | None, num_classes: int | None, device,
          timm_kwargs: dict) -> LoadedModel:
    """:func:`load_model` without the ``preprocessing`` override."""
    if isinstance(spec, LoadedModel):
        check_device(spec.model, device)
        return spec
    if isinstance(spec, nn.Module):
        check_device(spec, device)
        return LoadedModel(model=spec, layout=TokenLayout.from_model(spec),
                           data_config=_module_config(spec), name=type(spec).__name__,
                           arch={"kind": "factory"})
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelError(
            f"model spec {spec!r} is not a timm name, a checkpoint path, 'demo' or an nn.Module; "
            "pass one of those."
        )
    if mapping_options and mapping is None:
        raise ConfigError(
            f"mapping_options {sorted(mapping_options)} were given without a mapping; pass "
            "mapping='lucidrains' (CLI: --mapping lucidrains) or drop the options."
        )
    text = os.fspath(spec)
    if text == "demo":
        return _load_demo(device)
    path = Path(text).expanduser()
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES or path.exists() or mapping is not None:
        return _load_checkpoint(path, arch, mapping, mapping_options or {}, num_classes,
                                device, timm_kwargs)
    return _load_timm(text, pretrained, num_classes, device, timm_kwargs)


# --------------------------------------------------------------------------- helpers
def _finish(model: nn.Module, name: str, config: dict, arch: dict, device) -> LoadedModel:
    """Wrap a model probing built itself (so it may move it and switch it to eval mode)."""
    layout = TokenLayout.from_model(model)
    try:
        if device is not None:
            model = model.to(resolve_device(device))
        model = model.eval()
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"device {device!r} is not available; use 'cpu' or 'cuda'.") from exc
    return LoadedModel(model=model, layout=layout, data_config=config, name=name, arch=arch)


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but CUDA is not available; use 'cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(
            f"device {device!r} does not exist ({torch.cuda.device_count()} GPU(s)); "
            "use a smaller index."
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"device {device!r} is not supported; use 'cpu' or 'cuda'.")
    return dev


def module_device(module: nn.Module, default: str | torch.device | None = None
                  ) -> torch.device | None:
    """The device of ``module``'s first parameter (or buffer): the one home of "the model's
    device" (attention, attribution and extraction move their inputs there).

    Parameters
    ----------
    module : torch.nn.Module
        Any module (a model passed in, a loaded model's ``.model``).
    default : str or torch.device, optional
        Returned (as a ``torch.device``) when the module has neither parameters nor buffers;
        inputs for such a module go there (``"cpu"``). None by default.
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):  # lazily: the first
        return tensor.device
    return None if default is None else torch.device(default)


def _same_device(want: torch.device, have: torch.device) -> bool:
    if want.type != have.type:
        return False
    if want.index is None:
        return want.type != "cuda" or have.index == torch.cuda.current_device()
    return want.index == (have.index or 0)


def check_device(module: nn.Module, device: str | torch.device | None) -> None:
    """Refuse to run the caller's ``module`` on another ``device`` than the one it is on.

    probing does not move a module it did not build (``module.to`` works in place, so the
    caller's model would move too); the message says how to do it oneself.

    Raises
    ------
    ModelError
        When ``device`` is not a usable torch device.
    ConfigError
        When ``module`` is on another device than ``device``.
    """
    if device is None:
        return
    want = resolve_device(device)
    have = module_device(module)
    if have is None or _same_device(want, have):
        return
    raise ConfigError(
        f"device={str(device)!r} was asked for but the model passed in is on {have}, and "
        f"probing does not move a model it did not load; move it yourself with "
        f"model.to({str(want)!r}) and pass device=None (or pass a model name or path)."
    )


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode while inside; restore every submodule's training flag on
    exit (also on error), so the caller's module is left as it was."""
    # only the submodules in training mode are switched and restored: a model already in eval
    # mode (the usual case) costs no attribute writes (nn.Module.__setattr__ is slow)
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield module
    finally:
        for m in training:
            m.training = True


def _module_config(model: nn.Module) -> dict:
    from timm.data import resolve_data_config

    TokenLayout.from_model(model)  # a ModelError naming what is missing when not a ViT
    pe = model.patch_embed
    size = tuple(int(s) for s in (getattr(pe, "img_size", None) or (224, 224)))
    chans = _input_channels(model)
    try:
        config = dict(resolve_data_config({}, model=model))
    except Exception:  # noqa: BLE001 - any model without timm metadata gets defaults
        config = {"interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                  "mean": (0.5,) * chans, "std": (0.5,) * chans}
    # the size the model was built for wins over its pretrained config's default size
    if tuple(config.get("input_size", ())) != (chans, *size):
        config["input_size"] = (chans, *size)
        config["crop_pct"] = 1.0
    if len(config.get("mean", ())) != chans:
        config["mean"], config["std"] = (0.5,) * chans, (0.5,) * chans
    return config


def _input_channels(model: nn.Module) -> int:
    """Image channels the model takes: ``in_chans`` where timm records it, else the input
    channels of the first convolution of the stem (a hybrid's ``patch_embed.proj`` reads the
    backbone's features, not the image)."""
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int) and chans > 0:
        return chans
    for module in model.patch_embed.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 3


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _create(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    import timm
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if arch not in _timm_names():
        close = difflib.get_close_matches(arch, _timm_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"model {name!r} is neither a timm model name, an existing checkpoint file nor "
            f"'demo'; check the spelling (timm.list_models() lists names).{hint}"
        )
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise ModelError(
            f"timm model {arch!r} has no pretrained tag {tag!r}; use one of its tagged names "
            f"({tags}) or the bare name {arch!r}."
        )
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ModelError(f"timm model {name!r} does not accept options {kwargs}: {exc}.") from exc


def _load_timm(name, pretrained, num_classes, device, kwargs) -> LoadedModel:
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    # build the architecture on the meta device first (no memory, no weights): bad options and
    # non-ViT architectures are reported as such, never as missing weights
    try:
        with torch.device("meta"):
            TokenLayout.from_model(_create(name, False, kwargs))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - timm raises many types for bad options
        raise ModelError(
            f"timm cannot build {name!r} with options {kwargs} ({type(exc).__name__}: {exc}); "
            "fix or drop those options."
        ) from exc
    try:
        with _offline_from_env():
            model = _create(name, pretrained, kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, cache, file and hub errors
        raise _pretrained_error(name, exc) from exc
    arch = {"kind": "timm", "name": name, "kwargs": {k: v for k, v in kwargs.items()}}
    return _finish(model, name, _module_config(model), arch, device)


def _pretrained_error(name: str, exc: Exception) -> ModelError:
    """The ModelError for a failure of ``timm.create_model(name, pretrained=True)``: weights
    missing (offline or unreachable), a corrupt weights file, weights of another shape, or
    anything else, each said as such."""
    import pickle

    from safetensors import SafetensorError

    text = str(exc)
    if isinstance(exc, (SafetensorError, pickle.UnpicklingError, EOFError)) or (
            isinstance(exc, RuntimeError)
            and any(s in text for s in ("PytorchStreamReader", "weights_only", "zip archive",
                                        "magic number"))):
        return ModelError(
            f"the pretrained weights file of {name!r} is corrupt or unreadable "
            f"({type(exc).__name__}: {text[:200]}); delete it from the Hugging Face / torch "
            "cache and download it again, or pass a good local file with arch=."
        )
    if isinstance(exc, RuntimeError) and "loading state_dict" in text:
        return suggesting(ModelError(
            f"the pretrained weights of {name!r} do not fit the architecture built with the "
            f"options given ({text.splitlines()[0]} ...); drop the options that change "
            "parameter shapes (depth, embed_dim, patch_size) or pass pretrained=False."
        ), pretrained=False)
    if isinstance(exc, OSError):  # FileNotFoundError, hub / connection errors, offline mode
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        return suggesting(ModelError(
            f"pretrained weights for {name!r} are not available "
            f"{'offline (HF_HUB_OFFLINE is set)' if offline else 'locally or from the hub'}; "
            "download them into the Hugging Face cache on a connected machine, give a local "
            f"weights file with arch={name!r}, or use random-init weights with "
            "pretrained=False."
        ), arch=name, pretrained=False)
    return suggesting(ModelError(
        f"timm failed to load the pretrained weights of {name!r} ({type(exc).__name__}: "
        f"{text[:200]}); pass pretrained=False, or a local checkpoint with arch={name!r}."
    ), arch=name, pretrained=False)


@contextmanager
def _offline_from_env() -> Iterator[None]:
    """Make huggingface_hub honour ``HF_HUB_OFFLINE`` as set now (it reads it at import)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - timm depends on it
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON",
                                                                               "YES", "TRUE")
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _load_demo(device) -> LoadedModel:
    from . import demo

    if not demo.WEIGHTS.exists():
        raise ModelError(
            f"the demo weights {demo.WEIGHTS} are missing from the installed package; reinstall "
            "probing or run 'probing train-demo'."
        )
    model = _create("vit_tiny_patch16_224", False, dict(demo.ARCH))
    _load_state(model, _read_state(demo.WEIGHTS), str(demo.WEIGHTS))
    arch = {"kind": "timm", "name": "vit_tiny_patch16_224", "kwargs": dict(demo.ARCH)}
    loaded = _finish(model, "demo", dict(demo.DATA_CONFIG), arch, device)
    return loaded


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by key; refuses unreadable files and non-finite weights."""
    return _check_finite(_read_tensors(path), path)


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Raise ModelError naming the first floating tensor of ``state`` with a NaN or inf."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(
                f"checkpoint {path} tensor {key!r} holds {bad} NaN/inf value(s), so every "
                "embedding would be non-finite; use an intact checkpoint (a training run that "
                "diverged saves such weights)."
            )
    return state


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; check the path.")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"checkpoint {path} is not a readable safetensors file (truncated or corrupt: "
                f"{exc}); re-download or re-export it."
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError ...
        raise ModelError(
            f"checkpoint {path} cannot be read safely (torch.load with weights_only=True refused "
            "or failed: it holds arbitrary Python objects or is corrupt); save a plain "
            "state_dict, preferably as .safetensors."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"checkpoint {path} does not hold a state dict of tensors; save model.state_dict()."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _safetensors_arch(path: Path) -> str | None:
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - unreadable files are reported by _read_state
        return None
    arch = meta.get("arch") or meta.get("arch_name")
    if arch and arch.lstrip().startswith("{"):
        return None  # a JSON record of keyword arguments, not a timm name
    return arch


def _load_checkpoint(path, arch, mapping, mapping_options, num_classes, device, kwargs):
    from .foreign import FOREIGN_MAPPINGS

    state = _read_state(path)
    if mapping is not None:
        if mapping not in FOREIGN_MAPPINGS:
            raise ModelError(
                f"mapping {mapping!r} is unknown; use one of {', '.join(FOREIGN_MAPPINGS)}."
            )
        foreign = FOREIGN_MAPPINGS[mapping](state, **_mapping_options(mapping, mapping_options))
        model = foreign.build()
        _load_state(model, foreign.state_dict, str(path))
        config = {**_module_config(model), **foreign.data_config}
        return _finish(model, str(path), config, {"kind": "foreign", "mapping": mapping,
                                                  "path": str(path)}, device)
    arch = arch or _safetensors_arch(path)
    if arch is None:
        raise ModelError(
            f"checkpoint {path} does not say which architecture it is; pass arch='timm_name' "
            "(or mapping='lucidrains' for a vit-pytorch state dict)."
        )
    head = state.get("head.weight")
    if num_classes is None:
        num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
    kwargs = {**kwargs, "num_classes": num_classes}
    model = _create(arch, False, kwargs)
    _load_state(model, _adapt(state, model), str(path))
    spec = {"kind": "timm", "name": arch, "kwargs": kwargs}
    return _finish(model, str(path), _module_config(model), spec, device)


def _mapping_options(mapping: str, options: dict) -> dict:
    """``options`` checked against the keyword arguments of the mapping function."""
    import inspect

    from .foreign import FOREIGN_MAPPINGS

    if not isinstance(options, dict):
        raise ConfigError(
            f"mapping_options {options!r} is not a table; pass e.g. "
            "mapping_options = {mean = [0.5], std = [0.5]}."
        )
    known = [n for n in inspect.signature(FOREIGN_MAPPINGS[mapping]).parameters
             if n != "state_dict"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"mapping {mapping!r} has no option(s) {', '.join(map(repr, unknown))}; use "
            f"{', '.join(known)}."
        )
    return options


def _adapt(state: dict, model: nn.Module) -> dict:
    """Resample a positional table of another grid size the way timm does for new resolutions."""
    pos = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pos is None or own is None or pos.shape == own.shape:
        return state
    try:
        from timm.models.vision_transformer import checkpoint_filter_fn

        return checkpoint_filter_fn(state, model)
    except Exception:  # noqa: BLE001 - shape errors are reported by _load_state
        return state


def _load_state(model: nn.Module, state: dict, source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    # load_state_dict would silently cast an int/bool tensor into a float parameter
    dtypes = [k for k in own if k in state and own[k].is_floating_point()
              and not state[k].is_floating_point()]
    if dtypes:
        k = dtypes[0]
        raise ModelError(
            f"checkpoint {source} tensor for {k!r} is {state[k].dtype}, not a floating dtype "
            f"({len(dtypes)} such tensor(s)); loading would cast the weights, so export the "
            "checkpoint with floating-point (float32/float16/bfloat16) weights."
        )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)} not {tuple(own[k].shape)}")
        raise ModelError(
            f"checkpoint {source} does not fit the architecture ({'; '.join(parts)}); pass the "
            "matching arch= or a mapping= for a foreign state dict."
        )
    model.load_state_dict(state, strict=True)


def random_init_copy(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """A copy of the same architecture with freshly initialised parameters.

    Built again from its timm name when known (timm's own initialisation, seeded by ``seed``
    without changing the caller's global torch RNG state);
    otherwise a deep copy whose parameters are re-initialised by each module's
    ``reset_parameters`` (and timm's ``init_weights`` where the model has it).

    Returns
    -------
    LoadedModel
        Same layout and preprocessing, name ``"<name> (random init, seed N)"``.

    Raises
    ------
    ModelError
        When the copy equals the model tensor for tensor (a random-init model built from the
        same ``seed``): such a "control" would compare the model with itself.
    """
    arch = loaded.arch
    with seeded(seed):  # the caller's global torch RNG state is left as it was
        if arch.get("kind") == "timm":
            model = _create(arch["name"], False, dict(arch.get("kwargs", {})))
        else:
            model = copy.deepcopy(loaded.model)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            if hasattr(model, "init_weights"):
                model.init_weights()
    source = loaded.model.state_dict()
    if all(torch.equal(v.cpu(), source[k].cpu()) for k, v in model.state_dict().items()
           if k in source and v.is_floating_point()):
        raise ModelError(
            f"the random-init copy of {loaded.name} with seed {seed} equals the model itself (it "
            "is a random-init model built from that seed); pass another seed for the copy."
        )
    dev = module_device(loaded.model, "cpu")
    return LoadedModel(
        model=model.to(dev).eval(),
        layout=loaded.layout,
        data_config=dict(loaded.data_config),
        name=f"{loaded.name} (random init, seed {seed})",
        arch=dict(arch),
    )
