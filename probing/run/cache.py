"""A cache of analysis results (report sections), so a rerun recomputes only what changed.

An entry is one pickle file ``<store>/analyses-cache/<key>.pkl`` holding the analysis's
:class:`~probing.sections.Section` as it returned it (matplotlib figures included: figures pickle
with their data, through :func:`probing.figpickle.dumps` so that they unpickle with working
transforms, and the report writer draws them as it draws fresh ones, to the same bytes).
``key`` hashes what the section depends on (:func:`section_key`): the store's identity and
shard markers, the analysis name, its resolved parameters, the seed and figure style, the
analysis file's bytes, probing's source and the versions of the libraries a pickle depends on.
An entry is written atomically (temporary name, then ``os.replace``); an entry that cannot be
read back (corrupt, truncated, from another matplotlib) is ignored and recomputed, never an
error. Deleting the folder only costs time.

Entries are pickles, so an entry is signed: the file is an HMAC-SHA256 tag of the pickle bytes
followed by those bytes, keyed by a secret of this user (``~/.config/probing/cache-key``, or
``$XDG_CONFIG_HOME/probing/cache-key``, made on first use with mode 0600). An entry whose tag does
not verify (written by someone else, copied from another machine, tampered with) is ignored before
anything is unpickled, so a store folder from an untrusted source cannot run code through its
cache. Without a usable key (a read-only home) results are simply not cached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..figpickle import dumps
from ..sections import Section
from ..store import EmbeddingStore, atomic_write_bytes

__all__ = ["CACHE_DIR", "load_section", "package_digest", "save_section", "section_key"]

log = logging.getLogger("probing")

CACHE_DIR = "analyses-cache"
_FORMAT = 2  # 2: figures pickled by probing.figpickle.dumps


@lru_cache(maxsize=4)
def package_digest(suffixes: tuple[str, ...] = (".py",)) -> str:
    """Hash of probing's own source files with these suffixes (names and bytes)."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in suffixes and p.is_file()):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str | None]:
    # looked up once a process (each lookup scans the installed distributions)
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("matplotlib", "numpy", "pandas", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def section_key(store_id: str, name: str, params: dict, analysis_file: Path,
                context: dict[str, Any]) -> str:
    """The cache key of one analysis's section.

    Parameters
    ----------
    store_id : str
        The store's identity and content (:meth:`probing.store.EmbeddingStore.content_key`:
        its manifest and its shard markers).
    name : str
        Analysis name.
    params : dict
        Its resolved parameters.
    analysis_file : path
        The analysis module's file (its bytes are hashed).
    context : dict
        Run settings the section depends on beyond the store (seed, figure style, device,
        batch size), JSON-able.

    Returns
    -------
    str
        32 hex digits.
    """
    import platform

    blob = json.dumps({"format": _FORMAT, "store": store_id, "analysis": name, "params": params,
                       "context": context, "python": platform.python_version(),
                       "versions": _library_versions()}, sort_keys=True, default=str)
    h = hashlib.sha256(blob.encode())
    h.update(Path(analysis_file).read_bytes())
    h.update(package_digest().encode())
    return h.hexdigest()[:32]


def _key_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "probing" / "cache-key"


@lru_cache(maxsize=4)
def _signing_key(path: Path) -> bytes | None:
    """This user's secret for signing cache entries (made on first use), or None."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("analysis results are not cached: cannot read %s (%s)", path, exc)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    except FileExistsError:
        pass  # another process made it first
    except OSError as exc:
        log.warning("analysis results are not cached: cannot create %s (%s)", path, exc)
        return None
    return path.read_bytes()


def _tag(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def _entry(store: EmbeddingStore, key: str) -> Path:
    return store.path / CACHE_DIR / f"{key}.pkl"


def load_section(store: EmbeddingStore, key: str) -> Section | None:
    """The cached section under ``key``, or None when there is none or it cannot be read."""
    path = _entry(store, key)
    secret = _signing_key(_key_file())
    if secret is None or not path.is_file():
        return None
    try:
        blob = path.read_bytes()
    except OSError as exc:
        log.warning("ignoring unreadable analysis cache entry %s (%s)", path, exc)
        return None
    tag, data = blob[:32], blob[32:]
    if not hmac.compare_digest(tag, _tag(secret, data)):
        log.warning("ignoring analysis cache entry %s: not signed by this user's key", path)
        return None
    try:
        entry = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
        log.warning("ignoring unreadable analysis cache entry %s (%s)", path, exc)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key \
            or not isinstance(entry.get("section"), Section):
        log.warning("ignoring analysis cache entry %s: not a cached section", path)
        return None
    return entry["section"]


def save_section(store: EmbeddingStore, key: str, section: Section) -> bool:
    """Cache ``section`` under ``key``; returns whether it was written.

    A section that cannot be pickled (a figure holding a lambda) or a store folder that is not
    writable only costs the cache: a warning, no error.
    """
    try:
        data = dumps({"key": key, "name": section.name, "section": section})
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises, the run goes on
        log.warning("analysis %s is not cached: its section cannot be pickled (%s)",
                    section.name, exc)
        return False
    secret = _signing_key(_key_file())
    if secret is None:
        return False
    try:
        atomic_write_bytes(_entry(store, key), _tag(secret, data) + data)
    except StoreError as exc:
        log.warning("analysis %s is not cached: %s", section.name, exc)
        return False
    return True
