"""Package faces that import their modules on first use.

A face (``probing/__init__.py``, ``probing/run/__init__.py``) states where each public name
lives; :func:`lazy_face` makes the package import the home module the first time a name is read,
and a submodule the first time it is read as an attribute (``probing.probes``). ``import
probing`` and ``probing --help`` therefore load neither torch, timm, captum, scikit-learn nor
matplotlib; ``from probing import load_model`` imports what ``load_model`` needs.
:func:`import_without` imports a library without a package it imports only optionally (captum
without IPython outside a notebook).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["import_without", "lazy_face"]


def lazy_face(package: str, homes: Mapping[str, str]) -> None:
    """Make the (already imported) package ``package`` a lazy face.

    Parameters
    ----------
    package : str
        The package's ``__name__``; call this from its ``__init__.py``.
    homes : mapping
        Public name -> its home module, relative to the package (``"load_model": ".models"``).

    Notes
    -----
    A public name may be spelled like a submodule (``probing.extract``, the function, lives in
    the module ``probing.extract``). Python's import system sets the submodule as an attribute
    of the package once it is imported; the face refuses that assignment, so the public name
    keeps meaning the function whatever was imported first.
    """
    homes = dict(homes)

    class LazyFace(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name in homes:
                value = getattr(importlib.import_module(homes[name], package), name)
            elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}"):
                value = importlib.import_module(f".{name}", package)
            else:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            self.__dict__[name] = value  # read once; later reads do not come back here
            return value

        def __setattr__(self, name: str, value: Any) -> None:
            if name in homes and isinstance(value, types.ModuleType) \
                    and value.__name__ == f"{package}.{name}":
                return  # a submodule spelled like a public name: the public name wins
            super().__setattr__(name, value)

        def __dir__(self) -> list[str]:
            return sorted({*self.__dict__, *homes})

    sys.modules[package].__class__ = LazyFace


def import_without(name: str, optional: str) -> types.ModuleType:
    """Import ``name`` as though the top-level package ``optional`` were not installed, unless
    it is imported already (then nothing is hidden).

    For a library that imports an optional package it only uses in another setting: captum
    imports IPython (half a second) only to show text attributions in a notebook, where IPython
    is imported already. Later imports of ``optional`` work as usual.

    Parameters
    ----------
    name : str
        Module to import (``"captum.attr"``).
    optional : str
        Top-level package it may import optionally (inside ``try: ... except ImportError``).

    Returns
    -------
    module
        ``name``, imported.
    """
    if name in sys.modules or optional in sys.modules:
        return importlib.import_module(name)
    sys.modules[optional] = None  # type: ignore[assignment]  # "import optional" -> ImportError
    try:
        return importlib.import_module(name)
    finally:
        if sys.modules.get(optional, 0) is None:
            del sys.modules[optional]
