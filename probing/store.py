"""EmbeddingStore: token frames (and attention) on disk as a partitioned parquet dataset.

Layout of a store directory
---------------------------
::

    manifest.json                        model, preprocessing, data, capture, schema version
    kind=cls/layer=3/part-00000.parquet  token rows of shard 0 (token-frame schema, no labels)
    attention/layer=3/part-00000.parquet attention rows of shard 0 (schema below)
    labels/part-00000.parquet            image_id + label columns of shard 0's images
    _shards/shard-00000.json             written last: shard 0's files and their sizes
    analyses-cache/KEY.pkl               cached analysis sections (probing.run.cache)
    .lock                                held by the process writing (pid, host, time)

A shard is a fixed range of image positions (``shard_size`` images). Every file is written to a
temporary name and moved into place with ``os.replace``, so a file is either whole or absent, and
a shard counts as present only once its marker exists and its files match the marker's list
(present, with the listed sizes): a killed run, rerun, recomputes exactly the missing shards and
never duplicates rows, and a shard whose file was deleted or truncated is redone by the next
extraction (reading it before that is a StoreError naming the shard). Markers without a file
list (written before probing listed them) are trusted as they are.

The store's identity is its manifest: :func:`manifest_key` hashes it (the runner names store
folders by it) and :func:`manifest_mismatch` is the one rule saying whether a store serves a
run (every field equal, except that the capture may hold more layers, kinds and attention).

Attention table schema (:mod:`probing.attention_frames`): ``image_id``, ``layer`` (int16, block
number), ``head`` (int16), ``query`` (int16, sequence position of the query token), ``weights``
(``list<float32, N>``: that query's attention over all N tokens of the full sequence). Every layer
has the same width N; blocks that hold fewer tokens (CaiT, ConViT) are placed in the full token
set before writing, so the layers read back together exactly as extracted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ConfigError, StoreError
from .frames import SCHEMA_VERSION, frame_from_table, join_labels
from .layout import TOKEN_KINDS
from .ownership import pid_alive

__all__ = ["SUPERSET_FIELDS", "EmbeddingStore", "atomic_write_bytes", "manifest_covers",
           "manifest_key", "manifest_mismatch"]

MANIFEST = "manifest.json"
#: What the toolkit itself puts in a store folder before its manifest exists.
_LOCK_FILES = (".lock", ".lock.guard")
#: Temporary files of :func:`_atomic_write`: ``.NAME.PID.tmp``.
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.(?:h(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)\.tmp")
#: This host, as temporary names carry it (a writer elsewhere on a shared file system is never
#: judged dead by a pid of this machine).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
#: Bytes of rows per parquet row group of a part file (:func:`parquet_options`).
ROW_GROUP_BYTES = 2**20
#: Threads writing one shard's part files (pyarrow encodes and compresses without the GIL, so
#: on 2 cores a shard is written in about half the time).
WRITE_THREADS = 4
#: Folders of a store that hold its files (temporaries are looked for only there).
_STORE_DIRS = ("kind=*/layer=*", "attention/layer=*", "labels", "_shards")


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file_object)`` to a temporary name, fsync, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.h{_HOST_TAG}-{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"cannot write {path} ({exc.strerror or exc}); free disk space or choose a writable "
            "store directory."
        ) from exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a StoreError naming the path when it fails)."""
    _atomic_write(path, lambda f: f.write(data))


def _leaf_paths(field: pa.Field, prefix: str = "") -> list[tuple[str, pa.DataType]]:
    """Parquet column paths and Arrow types of the leaves under ``field`` (a fixed-size list's
    values are ``NAME.list.element``)."""
    path = f"{prefix}{field.name}"
    if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type) \
            or pa.types.is_large_list(field.type):
        return _leaf_paths(field.type.value_field.with_name("element"), f"{path}.list.")
    return [(path, field.type)]


def parquet_options(table: pa.Table) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` options of a store part file holding ``table``.

    - zstd throughout;
    - dictionary encoding only for string and dictionary columns (on float vectors it is
      tried, does not pay and falls back, at 5-10x the cost of the write);
    - the BYTE_STREAM_SPLIT encoding for float32/float64 values (their bytes grouped by
      position compress better: a demo patch part is 1.2 MB, not 1.9 MB, and reads in 5 ms,
      not 8 ms);
    - row groups of about :data:`ROW_GROUP_BYTES`: rows are in image order, so a read of a
      few images (``filters`` on ``image_id``) decodes only their row groups (the attention
      of 2 of a demo part's 256 images: 8 ms, not 130 ms).

    Any parquet reader reads the files."""
    leaves = [leaf for field in table.schema for leaf in _leaf_paths(field)]
    text = [p for p, t in leaves if pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_dictionary(t)]
    floats = [p for p, t in leaves if pa.types.is_float32(t) or pa.types.is_float64(t)]
    row_bytes = table.nbytes / max(1, table.num_rows)
    return dict(compression="zstd", use_dictionary=text, use_byte_stream_split=floats or False,
                row_group_size=max(1, int(ROW_GROUP_BYTES // max(1.0, row_bytes))))


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    options = parquet_options(table)
    _atomic_write(path, lambda f: pq.write_table(table, f, **options))


def _read_marker(path: Path) -> dict | None:
    """A shard marker's JSON, or None when it is unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_part(path: Path, **kwargs: Any) -> pa.Table:
    """Read one part file; a corrupt one is a StoreError naming it."""
    try:
        return pq.read_table(path, **kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(
            f"store part file {path} is unreadable ({exc}); delete its shard's marker in "
            "_shards/ and rerun the extraction to re-extract it."
        ) from exc


#: Manifest fields in which a store may hold more than a run needs (``capture.pooled`` may be
#: anything when the run asks for no pooled rows); every other field must be equal.
SUPERSET_FIELDS = ("capture.layers", "capture.kinds", "capture.attention")

_WHAT = {"schema_version": "another schema version", "model": "a different model",
         "preprocessing": "other preprocessing", "data": "other data",
         "layout": "another token layout", "shard_size": "another shard size",
         "capture": "other capture settings"}


def _canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, odd types strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _fields(manifest: dict) -> dict[str, Any]:
    """The manifest's fields, with the ``capture`` table's entries as ``capture.NAME``."""
    out = {k: v for k, v in _canonical(manifest).items() if k != "capture"}
    capture = manifest.get("capture")
    if isinstance(capture, dict):
        out.update({f"capture.{k}": v for k, v in _canonical(capture).items()})
    else:
        out["capture"] = _canonical(capture)
    return out


def manifest_key(manifest: dict) -> str:
    """The store identity: a hash (16 hex digits) of the whole manifest.

    Two manifests have the same key exactly when :func:`manifest_mismatch` with ``exact=True``
    finds no difference, so a store folder named after its key holds what its name says.
    """
    text = json.dumps(_canonical(manifest), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_mismatch(have: dict, need: dict, exact: bool = False) -> str | None:
    """The first manifest field in which a store made with ``have`` cannot serve ``need``.

    The one compatibility rule of the store. Every field (model fingerprint, preprocessing,
    data fingerprint, schema version, shard size, layout, ``capture.dtype``,
    ``capture.autocast``, and any field added later) must be equal, except
    :data:`SUPERSET_FIELDS`: the store may hold more layers and kinds than needed, and attention
    when none is needed; ``capture.pooled`` may differ when ``need`` asks for no pooled rows.

    Parameters
    ----------
    have, need : dict
        Manifests (:func:`probing.extract.store_manifest`): the store's, and the one wanted.
    exact : bool
        Require every field to be equal (the rule for writing into a store).

    Returns
    -------
    str or None
        The field's name (``"data"``, ``"capture.autocast"``, ...), or None when ``have``
        serves ``need``.
    """
    a, b = _fields(have), _fields(need)
    order = list(_WHAT)  # the identity fields first, in this order, then capture.* and others
    for field in sorted(set(a) | set(b), key=lambda f: (
            order.index(f) if f in order else len(order), f)):
        x, y = a.get(field), b.get(field)
        if x == y or (field == "model" and _same_model_before_depth(x, y)):
            continue
        if not exact:
            if field in ("capture.layers", "capture.kinds") and isinstance(x, list) \
                    and isinstance(y, list) and set(map(str, y)) <= set(map(str, x)):
                continue
            if field == "capture.attention" and not y:
                continue
            if field == "capture.pooled" and y is None:
                continue
        return field
    return None


def _same_model_before_depth(have: object, need: object) -> bool:
    """A store written before ``model.depth`` was recorded names the same model when all else
    in ``model`` is equal (the fingerprint already identifies the weights)."""
    return (isinstance(have, dict) and isinstance(need, dict) and "depth" not in have
            and {k: v for k, v in need.items() if k != "depth"} == have)


def manifest_covers(have: dict, need: dict) -> bool:
    """Whether a store made with manifest ``have`` holds everything ``need`` asks for
    (:func:`manifest_mismatch` finds nothing)."""
    return manifest_mismatch(have, need) is None


def _writer_alive(path: Path) -> bool | None:
    """Whether the writer of ``path``, a temporary file the toolkit names (``.NAME.hHOST-PID.tmp``,
    or the older ``.NAME.PID.tmp``) written on this host, is alive; None for any other path
    (another name, not a file, a writer on another host)."""
    match = _TEMP_FILE.fullmatch(path.name)
    if not (match and path.is_file() and match["host"] in (None, _HOST_TAG)):
        return None
    return pid_alive(int(match["pid"]))


class EmbeddingStore:
    """A parquet store of token frames, sharded, atomic and resumable.

    Parameters
    ----------
    path : str or path
        Store directory (created on first write).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} is a file, not a folder; choose a folder.")
        self._lock_depth = 0  # nesting of this object's lock() calls (the lock is reentrant)
        self._lock_pid: int | None = None  # the process holding it (a forked child does not)

    # ----------------------------------------------------------------- manifest
    @property
    def manifest(self) -> dict | None:
        """The store's manifest, or None for a new store.

        Raises
        ------
        StoreError
            When ``manifest.json`` is unreadable, not UTF-8 JSON, or not a JSON object.
        """
        path = self.path / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, JSONDecodeError
            reason = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            raise StoreError(
                f"store manifest {path} is unreadable ({reason}); delete the store folder "
                f"{self.path} and re-extract."
            ) from exc
        if not isinstance(data, dict):
            raise StoreError(
                f"store manifest {path} holds a JSON {type(data).__name__}, not an object; "
                f"delete the store folder {self.path} and re-extract."
            )
        return data

    def exists(self) -> bool:
        """Whether the store has a manifest."""
        return (self.path / MANIFEST).exists()

    def prepare(self, manifest: dict) -> None:
        """Create the store or check that it matches ``manifest`` exactly (it is written into).

        Raises
        ------
        StoreError
            When the store was made by another model, preprocessing, data, capture settings or
            schema version (see :func:`manifest_mismatch`).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create store folder {self.path} ({exc.strerror or exc}); choose a "
                "writable path."
            ) from exc
        old = self.manifest
        if old is None:
            atomic_write_bytes(self.path / MANIFEST,
                               json.dumps(manifest, indent=2, default=str).encode())
            return
        self.check_compatible(manifest, old, exact=True)

    def check_compatible(self, new: dict, old: dict | None = None, exact: bool = True) -> None:
        """Raise StoreError naming the first field in which the stored manifest cannot serve
        ``new``.

        Parameters
        ----------
        new : dict
            The manifest a run or extraction needs (:func:`probing.extract.store_manifest`).
        old : dict, optional
            The stored manifest (read from the store when None; a new store is compatible).
        exact : bool
            Require every field to be equal (writing into the store); when False the store may
            hold a superset of the capture (reading from it, :func:`manifest_mismatch`).
        """
        old = old if old is not None else self.manifest
        if old is None:
            return
        version = old.get("schema_version", 0)
        version = version if isinstance(version, int) else -1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this probing "
                f"({SCHEMA_VERSION}); upgrade probing or use another store path."
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has old schema version {version}; re-extract into a new path."
            )
        field = manifest_mismatch(old, new, exact=exact)
        if field is not None:
            what = _WHAT.get(field.split(".", 1)[0], f"another {field}")
            raise StoreError(
                f"store {self.path} was made with {what} ({field} differs); use a new store "
                "path or delete this one."
            )

    # --------------------------------------------------------------------- lock
    def lock(self, timeout: float = 0.0, poll: float = 0.2) -> None:
        """Take the store's write lock, recovering a stale lock left by a dead process.

        The lock is reentrant for this object in this process: a nested ``lock()`` (e.g.
        ``with store: extract(..., store=store)``) only counts one level deeper, and the lock
        file is removed when the outermost level is released. Another object, even in the same
        process, is refused like any other holder.

        Parameters
        ----------
        timeout : float
            Seconds to wait for a live holder to release the lock; 0 refuses at once.

        Raises
        ------
        StoreError
            When another live process (or another object) holds the lock after ``timeout``
            seconds.
        """
        if self._holds_lock():
            self._lock_depth += 1
            return
        lock = self.path / ".lock"
        deadline = time.monotonic() + timeout
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                holder = self._try_lock(lock, me)
            except OSError as exc:
                raise StoreError(
                    f"cannot lock store {self.path} ({exc.strerror or exc}); choose a writable "
                    "store folder."
                ) from exc
            if holder is None:
                self._lock_depth, self._lock_pid = 1, os.getpid()
                self.clean_temporaries()
                return
            if time.monotonic() >= deadline:
                raise StoreError(self._locked_message(holder))
            time.sleep(poll)

    def _locked_message(self, holder: dict | None) -> str:
        """Why the lock is refused and how to get past it, for a holder on this host or
        another (whose process probing cannot see, so the user has to say it is gone)."""
        lock = self.path / ".lock"
        if holder and holder.get("host") != socket.gethostname():
            return (f"store {self.path} is locked by process {holder.get('pid')} on host "
                    f"{holder.get('host')}, which this machine cannot check; wait for it to "
                    f"finish, or, if no run uses the store any more, delete {lock}.")
        who = f"process {holder.get('pid')}" if holder else "another process"
        return (f"store {self.path} is locked by {who} on this machine; wait for it to finish "
                "(or pass a lock timeout), or use another store path.")

    def _try_lock(self, lock: Path, me: dict) -> dict | None:
        """Create the lock file unless a live holder has it; returns that holder, or None.

        Checking for a stale lock and taking it over happen under an ``flock`` on a guard file,
        so two processes recovering the same stale lock cannot both end up holding it.
        """
        import fcntl

        with open(self.path / ".lock.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if lock.exists():
                    holder = self._read_lock(lock)
                    if not self._stale(holder, lock):
                        return holder or {}
                    lock.unlink(missing_ok=True)
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
                return None
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def _holds_lock(self) -> bool:
        """Whether this object holds the lock in this process (a forked child does not)."""
        return self._lock_depth > 0 and self._lock_pid == os.getpid()

    def unlock(self) -> None:
        """Release one level of the write lock if this object holds it; the lock file is
        removed when the outermost level is released."""
        if not self._holds_lock():
            return
        self._lock_depth -= 1
        if self._lock_depth == 0:
            (self.path / ".lock").unlink(missing_ok=True)
            self._lock_pid = None

    @staticmethod
    def _read_lock(lock: Path) -> dict | None:
        try:
            return json.loads(lock.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def _stale(holder: dict | None, lock: Path) -> bool:
        """A lock is stale when its process is gone (same host), or when it is unreadable
        (a writer killed between creating and filling it) and older than a few seconds."""
        if holder is None:
            try:
                return time.time() - lock.stat().st_mtime > 5.0
            except FileNotFoundError:
                return True
        if holder.get("host") != socket.gethostname():
            return False
        return not pid_alive(int(holder.get("pid", -1)))

    def __enter__(self) -> EmbeddingStore:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def clean_temporaries(self) -> None:
        """Remove temporary files left by writers that were killed (call while holding the lock).

        Only files the toolkit names (``.NAME.hHOST-PID.tmp`` in the store's own folders; also
        the older ``.NAME.PID.tmp``) whose writer ran on this host and whose process is gone are
        removed, and only in a folder that is a store (it has a manifest).
        """
        if not self.exists():
            return
        for folder in self._own_folders():
            for tmp in folder.glob(".*.tmp"):
                if _writer_alive(tmp) is False:
                    tmp.unlink(missing_ok=True)

    def _own_folders(self) -> list[Path]:
        """The store folder and the sub-folders its layout defines."""
        return [self.path, *(f for pattern in _STORE_DIRS for f in self.path.glob(pattern)
                             if f.is_dir() and not f.is_symlink())]

    def check_claimable(self, live_writer_ok: bool = False) -> None:
        """Raise StoreError when the folder exists, is not a store and holds anything.

        A store may only be created in a new or empty folder: probing never writes its files
        among (and later cleans up next to) files it did not make. With ``live_writer_ok``
        (the check before waiting for the lock), the temporary files of a probing process
        on this host that is alive are not foreign either: it is creating the store under
        the lock (e.g. its manifest is being written), and the check made once the lock is
        held finds the store complete.
        """
        if not self.path.is_dir() or self.exists():
            return
        foreign = sorted(p.name for p in self.path.iterdir() if not self._own_lock_file(p)
                         and not (live_writer_ok and _writer_alive(p)))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise StoreError(
                f"store folder {self.path} is not a probing store and is not empty (it holds "
                f"{shown}); choose an empty or new folder for the store."
            )

    def _own_lock_file(self, path: Path) -> bool:
        """Whether ``path`` is a lock file probing made here (an empty guard, or a lock that
        reads as probing's: pid and host), not a user's file of the same name."""
        if path.name == ".lock.guard":
            return path.is_file() and path.stat().st_size == 0
        if path.name == ".lock":
            holder = self._read_settled_lock(path)
            return isinstance(holder, dict) and {"pid", "host"} <= set(holder)
        return False

    def _read_settled_lock(self, lock: Path) -> dict | None:
        """The holder in ``lock``, read under a shared ``flock`` of the guard file: a writer
        holds it exclusively while it creates and fills the lock (:meth:`_try_lock`), so a
        lock another process is taking is never read half-written (empty, hence foreign)."""
        import fcntl

        try:
            guard = open(self.path / ".lock.guard")  # never created here: only read
        except OSError:
            return self._read_lock(lock)
        with guard:
            fcntl.flock(guard, fcntl.LOCK_SH)
            try:
                return self._read_lock(lock)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def stored_rows(self) -> int:
        """Images held by the complete shards (skipped images not counted)."""
        markers = self._markers()
        return sum(int((markers[s] or {}).get("rows", 0)) for s in self.done_shards())

    def discard_unused(self, created: bool) -> None:
        """After a failed first extraction into a new or empty folder: remove what it wrote.

        Call it only for a store this extraction started (the caller checks the folder was
        absent or empty before). Only the store's own files are removed (part files, shard
        markers, manifest, lock files, then empty folders), never with a recursive delete; the
        folder itself goes when ``created`` (this run made it) and it is empty then.
        """
        if not self.path.is_dir():
            return
        self.clean_temporaries()
        for folder in self._own_folders():
            for part in folder.glob("part-[0-9][0-9][0-9][0-9][0-9].parquet"):
                part.unlink(missing_ok=True)
            for marker in folder.glob("shard-[0-9][0-9][0-9][0-9][0-9].json"):
                marker.unlink(missing_ok=True)
        for name in (MANIFEST, *_LOCK_FILES):
            (self.path / name).unlink(missing_ok=True)
        for folder in sorted(self.path.rglob("*"), key=lambda p: -len(p.parts)):
            if folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    # ------------------------------------------------------------------- shards
    def _marker(self, shard: int) -> Path:
        return self.path / "_shards" / f"shard-{shard:05d}.json"

    def _markers(self) -> dict[int, dict | None]:
        """Every shard marker, by shard number: its JSON, or None when it is unreadable."""
        folder = self.path / "_shards"
        out: dict[int, dict | None] = {}
        for path in folder.glob("shard-*.json") if folder.is_dir() else ():
            try:
                shard = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            out[shard] = _read_marker(path)
        return out

    def _shard_problem(self, shard: int, marker: dict | None,
                       folder: Path | None = None) -> str | None:
        """What is wrong with shard ``shard`` against its marker (only its file in ``folder``
        when given), or None when its files are whole.

        A marker lists the shard's files with their sizes in bytes; a marker written before
        that (no ``files`` entry) is trusted as it is.
        """
        if marker is None:
            return f"its marker {self._marker(shard).name} is unreadable"
        files = marker.get("files")
        if files is None:
            return None
        if not isinstance(files, dict):
            return f"its marker {self._marker(shard).name} has no valid file list"
        name = f"part-{shard:05d}.parquet"
        for rel, size in files.items():
            path = self.path / rel
            if folder is not None and path != folder / name:
                continue
            try:
                actual = path.stat().st_size
            except OSError:
                return f"{rel} is missing"
            if actual != size:
                return f"{rel} has {actual} bytes where its marker says {size} (truncated)"
        return None

    def damaged_shards(self) -> dict[int, str]:
        """Shards whose marker exists but whose files do not match it: ``{shard: problem}``.

        They do not count as done, so the next extraction into the store redoes them.
        """
        return {s: problem for s, m in sorted(self._markers().items())
                if (problem := self._shard_problem(s, m)) is not None}

    def shard_done(self, shard: int) -> bool:
        """Whether shard ``shard`` is complete: its marker exists and its files match it."""
        path = self._marker(shard)
        return path.exists() and self._shard_problem(shard, _read_marker(path)) is None

    def done_shards(self) -> list[int]:
        """Numbers of the complete shards (marker present, files as the marker lists them)."""
        return [s for s, m in sorted(self._markers().items())
                if self._shard_problem(s, m) is None]

    def skipped(self) -> list[dict]:
        """Images the extraction skipped as unreadable, from every complete shard's marker
        (``position``, ``image_id``, ``error``), so that a reused store reports them too."""
        markers = self._markers()
        return [item for shard in self.done_shards()
                for item in (markers[shard] or {}).get("skipped") or []]

    def content_key(self) -> str:
        """A hash (16 hex digits) of the manifest and of every complete shard's marker (its
        files and their sizes): what a result computed from the store depends on, so a cached
        result is recomputed when a shard was rewritten."""
        h = hashlib.sha256(manifest_key(self.manifest or {}).encode())
        markers = self._markers()
        for shard in self.done_shards():
            h.update(json.dumps(markers[shard], sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    def write_shard(
        self,
        shard: int,
        tokens: dict[tuple[str, int], pa.Table],
        labels: pa.Table,
        attention: dict[int, pa.Table] | None = None,
        info: dict | None = None,
    ) -> None:
        """Write one shard's files, then its completion marker listing them with their sizes.

        An old marker of the shard is removed first, so a shard being rewritten (a damaged one
        redone) is not done until all its new files are in place.

        Parameters
        ----------
        shard : int
            Shard number.
        tokens : dict
            ``{(kind, layer): table}`` in the token-frame schema (without label columns).
        labels : pyarrow.Table
            ``image_id`` and label columns of the shard's images.
        attention : dict, optional
            ``{layer: table}`` in the attention schema.
        info : dict, optional
            Extra JSON for the marker (e.g. skipped images).
        """
        marker_path = self._marker(shard)
        marker_path.unlink(missing_ok=True)
        name = f"part-{shard:05d}.parquet"
        paths = [(self.path / f"kind={kind}" / f"layer={layer}" / name, table)
                 for (kind, layer), table in tokens.items()]
        paths += [(self.path / "attention" / f"layer={layer}" / name, table)
                  for layer, table in (attention or {}).items()]
        paths.append((self.path / "labels" / name, labels))
        with ThreadPoolExecutor(WRITE_THREADS) as pool:  # the parquet writer frees the GIL
            list(pool.map(lambda job: _atomic_write_table(*job), paths))
        files = {path.relative_to(self.path).as_posix(): path.stat().st_size for path, _ in paths}
        marker = {"shard": shard, "rows": int(labels.num_rows), **(info or {}), "files": files}
        atomic_write_bytes(marker_path, json.dumps(marker, default=str).encode())

    # ------------------------------------------------------------------ reading
    def kinds(self) -> list[str]:
        """Token kinds present in the store, in category order."""
        present = {p.name.split("=", 1)[1] for p in self.path.glob("kind=*") if p.is_dir()}
        return [k for k in TOKEN_KINDS if k in present]

    def layers(self, kind: str | None = None) -> list[int]:
        """Layer labels present (for one kind, or any kind)."""
        kinds = [kind] if kind else self.kinds()
        found = {int(p.name.split("=", 1)[1]) for k in kinds
                 for p in (self.path / f"kind={k}").glob("layer=*")}
        return sorted(found)

    def _files(self, folder: Path) -> list[Path]:
        """Part files in ``folder`` of the shards that have a marker, in shard order.

        Raises
        ------
        StoreError
            When a marked shard's file in ``folder`` is missing or truncated, or its marker is
            unreadable (naming the shard; rerunning the extraction redoes it).
        """
        out = []
        for shard, marker in sorted(self._markers().items()):
            problem = self._shard_problem(shard, marker, folder)
            if problem is not None:
                raise StoreError(
                    f"store {self.path} shard {shard} is damaged ({problem}); rerun the "
                    "extraction into this store (probing run, or extract with store=) to "
                    "re-extract that shard, or delete the store."
                )
            path = folder / f"part-{shard:05d}.parquet"
            listed = marker.get("files") if marker else None
            if (path.relative_to(self.path).as_posix() in listed) if isinstance(listed, dict) \
                    else path.exists():
                out.append(path)
        return out

    def labels(self) -> pd.DataFrame:
        """``image_id`` and label columns of every stored image, in source order."""
        files = self._files(self.path / "labels")
        if not files:
            raise StoreError(f"store {self.path} holds no complete shard; run an extraction.")
        return frame_from_table(pa.concat_tables([_read_part(f) for f in files]))

    def depth(self) -> int | None:
        """Number of blocks of the model the store was made from, as its manifest records it
        (None for a store without a manifest, or one made before probing recorded it)."""
        manifest = self.manifest or {}
        model = manifest.get("model")
        depth = model.get("depth") if isinstance(model, dict) else None
        return depth if isinstance(depth, int) and not isinstance(depth, bool) else None

    def _select(self, layers: Any, held: Iterable[int], where: str) -> Any:
        """Stored labels of a layer selection against what this store holds: ``"all"`` =
        every stored block, negative ints from the model's last block (the manifest's depth;
        refused for a store that does not record it), a missing block a StoreError naming it."""
        from .selection import select_layers

        return select_layers(layers, held, where=where, error=StoreError, depth=self.depth())

    def read(
        self,
        kind: str | Sequence[str] | None = None,
        layers: int | str | Iterable[int | str] | None = None,
        columns: Sequence[str] | None = None,
        filters: Any = None,
        labels: bool = True,
        *,
        layer: int | str | Iterable[int | str] | None = None,
        kinds: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Read token rows as a frame.

        Parameters
        ----------
        kind : str or sequence, optional
            Kinds to read (all when None).
        layers : layer selection or LayerLabels, optional
            The layers to read, in the forms every ``layers=`` takes
            (:func:`probing.selection.select_layers`): ``"all"`` (every stored block, also
            inside a list), ints, negative ints (blocks from the model's last one: ``-1`` is
            block ``depth`` of the manifest's model, whichever blocks are stored),
            ``"embed"``, ``"norm"``, lists of these, or
            :class:`~probing.selection.LayerLabels`. All stored layers when None. Only the
            matching partitions are opened.
        columns : sequence of str, optional
            Token-frame columns to read (all when None).
        filters : optional
            pyarrow filter expression or DNF list (``[("image_id", "<", 100)]``).
        labels : bool
            Join the images' label columns.
        layer, kinds : optional
            Other names of ``layers`` (``layer`` is its old name) and ``kind``; the same result.

        Returns
        -------
        pandas.DataFrame
            Rows grouped by layer, then kind; within a group in source order, tokens in sequence
            order.

        Raises
        ------
        StoreError
            Naming the requested layers (or kinds) the store does not hold.
        ConfigError
            A negative int for a store whose manifest does not record the model's depth, or a
            parameter given under both of its names.
        """
        layers = _one_of(layers, layer, "layers", "layer")
        kind = _one_of(kind, kinds, "kind", "kinds")
        kinds_ = self.kinds() if kind is None else \
            ([kind] if isinstance(kind, str) else list(kind))
        missing_kinds = [k for k in kinds_ if k not in self.kinds()]
        if missing_kinds:
            raise StoreError(
                f"store {self.path} holds no kind {', '.join(map(str, missing_kinds))} (it has "
                f"{self.kinds()}); ask for those or extract the missing kinds."
            )
        held = sorted({v for k in kinds_ for v in self.layers(k)})
        wanted = self._select(layers, held, f"store {self.path} for kind={kind!r}")
        parts: list[tuple[int, int, Path]] = []
        for k in kinds_:
            for folder in (self.path / f"kind={k}").glob("layer=*"):
                lay = int(folder.name.split("=", 1)[1])
                if lay in wanted:
                    parts.append((lay, TOKEN_KINDS.index(k), folder))
        tables = []
        for _, _, folder in sorted(parts):
            for f in self._files(folder):
                tables.append(_read_part(f, columns=list(columns) if columns else None,
                                         filters=filters))
        if not tables:
            raise StoreError(f"store {self.path} holds no complete shard; run an extraction.")
        # one chunk per column: the vectors are copied out of the part files' buffers once,
        # here, and every later embedding_matrix() is a view (never a second full copy)
        table = pa.concat_tables(tables)
        del tables
        table = table.combine_chunks()
        frame = frame_from_table(table)
        del table
        if labels and "image_id" in frame.columns:
            frame = self._join_labels(frame)
        return frame

    def _join_labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        return join_labels(frame, self.labels())

    def read_attention(
        self,
        layers: int | str | Iterable[int | str] | None = None,
        filters: Any = None,
        *,
        layer: int | str | Iterable[int | str] | None = None,
    ) -> pd.DataFrame:
        """Read attention rows (schema in the module docstring) as a frame.

        ``layers`` takes the forms of :meth:`read` (all stored blocks when None; ``-1`` is the
        model's last block); a requested block without stored attention raises
        :class:`StoreError` naming it. ``layer`` is the old name of ``layers`` (the same
        result).
        """
        layers = _one_of(layers, layer, "layers", "layer")
        folders = {int(p.name.split("=", 1)[1]): p
                   for p in (self.path / "attention").glob("layer=*")}
        if not folders:
            raise StoreError(
                f"store {self.path} holds no attention; extract with attention=True."
            )
        wanted = self._select(layers, folders, f"the attention of store {self.path}")
        tables = [_read_part(f, filters=filters) for k in wanted
                  for f in self._files(folders[k])]
        if not tables:
            raise StoreError(f"store {self.path} holds no complete shard; run an extraction.")
        return frame_from_table(pa.concat_tables(tables))

    def attention(
        self, layers: int | str | Iterable[int | str] | None = None, max_images: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Attention as a dense array.

        Parameters
        ----------
        layers : layer selection or LayerLabels, optional
            As ``layers`` of :meth:`read_attention` (all stored blocks when None).
        max_images : int, optional
            Keep the first images only.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, list of int)
            Attention ``(n_images, n_layers, heads, N, N)`` float32, the ``(n_images,)`` image
            ids, and the layer labels along axis 1.
        """
        from .attention_frames import attention_array

        filters = None
        if max_images is not None:  # read only those images' rows, not every image's
            ids = self.labels()["image_id"].to_numpy()[: max(0, int(max_images))]
            filters = pc.field("image_id").isin(pa.array(ids))
        frame = self.read_attention(layers, filters=filters)
        return attention_array(frame, max_images=max_images)


def _one_of(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """The value of a parameter that has a second name (None = not given)."""
    if alias is None:
        return value
    if value is not None:
        raise ConfigError(
            f"{name}= and {alias_name}= are the same parameter ({alias_name}= is its other "
            f"name); pass {name}= only."
        )
    return alias
