"""Writing a run's files: whole files by rename (never a torn file), the error a failed write
raises (WriteError, which the trainer, evaluate and the command line turn into one line), and the
free space to name in that line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


# The temporary files write_atomic is writing now: a command that ends at once on a signal
# (os._exit, which runs no `except` or `finally`) removes them first (remove_in_flight).
_IN_FLIGHT: set[Path] = set()


class WriteError(OSError):
    """A run's file could not be written (a full disk, permissions). `what` names it, `path`
    where it went; the trainer turns it into the one line a user sees."""

    def __init__(self, reason: str, path: Path, what: str = ""):
        super().__init__(reason)
        self.reason, self.path, self.what = reason, Path(path), what


def free_space(path: Path) -> str:
    """Free space on the file system holding `path` (or its nearest existing parent)."""
    for parent in (Path(path), *Path(path).parents):
        if parent.exists():
            return f"{shutil.disk_usage(parent).free / 2**20:.1f} MB free"
    return "free space unknown"


def failure_line(what: str, path: Path, reason: str, after: str = "", note: str = "") -> str:
    """The one line a failed write ends a command with: what (`after`: e.g. at which step), where,
    why, the free space there, `note` (e.g. what is kept), and what to do."""
    note = f"; {note}" if note else ""
    return (f"could not write {what}{after} to {path}: {reason} ({free_space(path)}){note}; "
            f"free space and rerun the same command")


def write_atomic(path: Path, data: str | bytes, what: str = "") -> None:
    """Writes `data` to a temporary name beside `path` (its folder made if need be), then renames:
    never a torn file. The one way this project writes a whole file. OSError -> WriteError
    naming `what` (default: the file's name)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    _IN_FLIGHT.add(tmp)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException as e:  # also Ctrl-C mid-write: no temporary file left behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(e.strerror or str(e), path, what or path.name) from e
        raise
    finally:
        _IN_FLIGHT.discard(tmp)


def remove_in_flight() -> None:
    """Removes the temporary files of the whole-file writes under way (before an os._exit)."""
    for tmp in list(_IN_FLIGHT):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
