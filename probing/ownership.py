"""Which folders the toolkit made, and may therefore replace or remove.

The rule: probing removes, renames or replaces only paths it made itself, and it can tell which
those are from a marker it wrote.

- A **report folder** carries ``.probing-report`` (JSON: the pid that wrote it and the list of
  every file it wrote, relative to the folder). A folder may be replaced by a new report only
  when it is absent, empty, or a report folder holding nothing but the files its marker lists.
  A folder holding anything else (a user's own files, or files added to a report later) is
  never replaced, whatever ``--force`` says.
- A **store** is marked by its ``manifest.json`` (see :mod:`probing.store`).
- Temporary folders and files carry the toolkit's own naming pattern *and* the pid of the
  process that made them; they are removed only when that process is gone.
- Some paths are never a report folder: the file-system root, the home directory, the working
  directory and every folder above it, the analyses folders, the probing package, and any
  folder that contains (or lies inside) a store the run uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import ReportError

__all__ = [
    "REPORT_MARKER",
    "check_report_target",
    "folder_lock",
    "is_within",
    "pid_alive",
    "read_report_marker",
    "remove_report_folder",
    "report_files",
    "unowned_files",
    "writer_gone",
    "write_report_marker",
]

REPORT_MARKER = ".probing-report"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True when we may not signal it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _protected(extra: Mapping[str | os.PathLike, str]) -> list[tuple[Path, str]]:
    """Folders a report may never replace, nor contain, with a word for each."""
    package = Path(__file__).resolve().parent
    out = [(Path.cwd(), "the working directory"), (Path.home(), "your home directory"),
           (package, "the probing package")]
    return out + [(Path(p), what) for p, what in extra.items()]


def check_report_target(out: Path, protect: Mapping[str | os.PathLike, str] | None = None
                        ) -> None:
    """Raise :class:`ReportError` unless ``out`` may be written (and replaced) as a report.

    Parameters
    ----------
    out : path
        The report folder.
    protect : mapping, optional
        Further folders that the report may not replace nor contain, each with the words that
        name it in the error ("the store", "an analyses folder"). A report may not lie inside
        one either.

    Raises
    ------
    ReportError
        When ``out`` is a file, a protected folder (or above one), inside a store, or an existing
        folder holding files probing did not write there.
    """
    out = Path(out)
    target = out.resolve()
    fix = "choose an empty or new folder for --out (or the spec's output)"
    if target == Path(target.anchor):
        raise ReportError(f"report output {out} is the file-system root; {fix}.")
    extra = dict(protect or {})
    for folder, what in _protected(extra):
        if is_within(folder, target):
            where = "is" if folder.resolve() == target else "contains"
            raise ReportError(f"report output {out} {where} {what} ({folder}); {fix}.")
    inside = {**extra, Path(__file__).resolve().parent: "the probing package"}
    for folder, what in inside.items():
        if is_within(target, Path(folder)):
            raise ReportError(f"report output {out} lies inside {what} ({folder}); {fix}.")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise ReportError(f"report output {out} is a file or a link, not a folder; {fix}.")
    foreign = unowned_files(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise ReportError(
            f"report output {out} holds files probing did not write ({shown}); move them out "
            f"or {fix}."
        )


def read_report_marker(folder: Path) -> dict | None:
    """The report marker of ``folder`` (None when absent or unreadable)."""
    try:
        marker = json.loads((Path(folder) / REPORT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("made_by") == "probing" else None


def write_report_marker(folder: Path, files: Iterable[str], state: str) -> None:
    """Write ``folder``'s marker: this process's host and pid, ``state``, and each file it
    wrote with its size and modification time (so a file edited since is not probing's)."""
    folder = Path(folder)
    entries = {}
    for rel in sorted(files):
        st = (folder / rel).lstat()
        entries[rel] = None if (folder / rel).is_dir() else [st.st_size, st.st_mtime_ns]
    marker = {"made_by": "probing", "host": socket.gethostname(), "pid": os.getpid(),
              "state": state, "files": entries}
    (folder / REPORT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def report_files(folder: Path) -> list[str]:
    """Every file and folder below ``folder``, as sorted POSIX paths relative to it."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.name != REPORT_MARKER or p.parent != folder)


def unowned_files(folder: Path, limit: int = 50) -> list[str]:
    """Entries below ``folder`` that are not as probing wrote them (at most ``limit``).

    Without a marker that is every entry (the folder's top level is listed, without walking a
    large tree); with one, each entry must be listed and, for a file, still have the size and
    modification time the marker records. Links are never probing's.
    """
    folder = Path(folder)
    marker = read_report_marker(folder)
    if marker is None:
        return sorted(p.name for p in itertools.islice(folder.iterdir(), limit))
    listed = marker.get("files")
    listed = listed if isinstance(listed, dict) else {}
    out = []
    for rel in report_files(folder):
        path = folder / rel
        if rel not in listed or path.is_symlink():
            out.append(rel)
        elif listed[rel] is not None:
            st = path.stat()
            if not path.is_file() or [st.st_size, st.st_mtime_ns] != listed[rel]:
                out.append(f"{rel} (changed since probing wrote it)")
        if len(out) >= limit:
            break
    return out


def writer_gone(marker: dict | None, pid: int) -> bool:
    """Whether the writer that made a temporary (``pid`` from its name) has ended: it ran on
    this host (the marker's host) and no process with that pid is alive."""
    host = (marker or {}).get("host", socket.gethostname())
    return host == socket.gethostname() and not pid_alive(pid)


def remove_report_folder(folder: Path, *, partial: bool = False) -> bool:
    """Remove a report folder probing wrote; refuse (return False) when it holds anything else.

    Parameters
    ----------
    folder : path
        A report folder, or (``partial=True``) a temporary one whose writer died: then only its
        marker is required, since the files being written when it died are not yet listed.

    Returns
    -------
    bool
        Whether the folder was removed.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    marker = read_report_marker(folder)
    if marker is None:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty: a writer killed before its marker
        return not folder.exists()
    if not partial and unowned_files(folder):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no file is created) while inside."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
