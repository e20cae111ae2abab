"""Fetches the four IDX `.gz` files of MNIST / Fashion-MNIST when no local copy exists.

From where: the URLs the installed tensorflow_datasets registers for its own `mnist` /
`fashion_mnist` builders (its url_checksums/<name>.txt, which also gives each `.gz` file's size
and SHA-256), or a mirror: $AAEJAX_DATA_MIRROR (or config.data_mirror), a base URL under which
the same file names live -- for users behind a proxy, and for tests.

A file is accepted when its `.gz` bytes match TFDS's registered SHA-256, or its uncompressed
bytes match the originals' (`raw_sha256`, which data.load passes from data.IDX_SHA256), so a
mirror that recompressed the files is accepted and a wrong file never is. Each file is written
to a temporary name in the cache folder and renamed only once accepted: an interrupted or
corrupt download never leaves a file that a later run trusts; a cached file that fails its check
later (truncated, corrupt, replaced) is moved aside to <name>.failed and fetched once more. Network
errors are retried with backoff within a deadline per file, so an offline machine gets its error
in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from aaejax.run.console import StatusLine
from aaejax.run.files import free_space, write_atomic

log = logging.getLogger(__name__)

MIRROR_ENV = "AAEJAX_DATA_MIRROR"


class DownloadError(RuntimeError):
    """Could not fetch an acceptable file."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    gz_sha256: str | None  # TFDS's registered checksum of the .gz
    raw_sha256: str | None  # the original uncompressed bytes'


def cache_dir(name: str) -> Path:
    """~/.cache/aaejax/downloads/<name> (or under $AAEJAX_CACHE_DIR)."""
    root = os.environ.get("AAEJAX_CACHE_DIR") or os.path.expanduser("~/.cache/aaejax")
    return Path(root) / "downloads" / name


def registered_files(name: str, mirror: str | None = None, raw_sha256: dict | None = None) -> list[RemoteFile]:
    """The four files of `name` as tensorflow_datasets registers them (URL, .gz SHA-256), with
    the URL's folder replaced by `mirror` when given; `raw_sha256` {file stem: SHA-256 of the
    uncompressed bytes} also accepts a recompressed copy."""
    import tensorflow_datasets
    from tensorflow_datasets.core.download import checksums

    table = Path(tensorflow_datasets.__file__).parent / "url_checksums" / f"{name}.txt"
    files = []
    for url, info in sorted(checksums.load_url_infos(table).items()):
        stem = info.filename.removesuffix(".gz")
        if mirror:
            url = mirror.rstrip("/") + "/" + info.filename
        files.append(RemoteFile(url, info.filename, info.checksum, (raw_sha256 or {}).get(stem)))
    return files


def _accepted(data: bytes, f: RemoteFile) -> bool:
    if f.gz_sha256 and hashlib.sha256(data).hexdigest() == f.gz_sha256:
        return True
    if f.raw_sha256:
        try:
            return hashlib.sha256(gzip.decompress(data)).hexdigest() == f.raw_sha256
        except (OSError, EOFError, zlib.error):
            return False
    return False


@contextlib.contextmanager
def _cache_errors(folder: Path):
    """An OS error on the cache folder (a full disk, no permission) -> one DownloadError line."""
    try:
        yield
    except OSError as e:
        reason = getattr(e, "reason", None) or e.strerror or str(e)  # WriteError keeps its reason
        raise DownloadError(f"cannot write the download cache {folder}: {reason} ({free_space(folder)}); "
                            f"set AAEJAX_CACHE_DIR to a writable folder") from e


def _set_aside(path: Path) -> Path:
    """Moves a cached file that failed its check to <name>.failed[.n]; returns where."""
    target, n = path.with_name(path.name + ".failed"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.failed.{n}")
    os.replace(path, target)
    return target


class _Progress:
    def __init__(self, filename: str, total: int | None):
        self.filename, self.total, self.t0 = filename, total, time.perf_counter()
        self.status = StatusLine(transient=True)  # a log file gets the final line only

    def line(self, done: int) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-6)
        unit, scale = ("MB", 2**20) if (self.total or done) >= 2**20 else ("kB", 2**10)  # labels: 5-29 kB
        size = f"{done / scale:.1f}" + (f"/{self.total / scale:.1f}" if self.total else "")
        return f"downloading {self.filename}: {size} {unit} at {done / 2**20 / dt:.1f} MB/s"

    def update(self, done: int) -> None:
        self.status.show(self.line(done))

    def close(self, done: int) -> None:
        self.status.close(self.line(done))


def _get(url: str, filename: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        progress, chunks, done = _Progress(filename, total), [], 0
        try:
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
                progress.update(done)
        finally:  # also when the transfer fails: the error line must not continue the progress line
            progress.close(done)
    if total is not None and done != total:
        raise DownloadError(f"{url}: the connection closed after {done} of {total} bytes")
    return b"".join(chunks)


def fetch(name: str, folder: Path | None = None, mirror: str | None = None, files: list[RemoteFile] | None = None,
          timeout: float = 3.0, retries: int = 2, deadline_s: float = 8.0, raw_sha256: dict | None = None) -> Path:
    """Makes `folder` (default cache_dir(name)) hold the accepted four files (default: the
    registered ones, see registered_files); returns it.

    Raises DownloadError (naming the URLs tried) when a file cannot be fetched within
    `retries` retries (backoff 0.5 s, 1 s, ...) begun within `deadline_s` of its first try, or
    when what arrives is not the file."""
    folder = Path(folder or cache_dir(name))
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    files = files if files is not None else registered_files(name, mirror, raw_sha256)
    with _cache_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        # Per file: an offline machine fails on the first in seconds, while a slow but working link
        # that spends the deadline on one file still gives the next its full timeout.
        deadline = time.monotonic() + deadline_s
        target = folder / f.filename
        aside = None
        if target.exists():
            if not (f.gz_sha256 or f.raw_sha256) or _accepted(target.read_bytes(), f):
                continue
            # Changed since it was accepted (a truncated copy, a bad sector, another file put there).
            with _cache_errors(folder):
                aside = _set_aside(target)
            log.warning("%s fails its checksum: moved to %s; downloading it again", target, aside)
        errors = []
        for attempt in range(retries + 1):
            try:
                data = _get(f.url, f.filename, min(timeout, max(deadline - time.monotonic(), 0.1)))
            except DownloadError as e:  # cut short
                errors.append(str(e))
            except http.client.HTTPException as e:  # not HTTP, or a chunked reply cut short
                errors.append(f"{f.url}: {type(e).__name__} {' '.join(str(e).split())}")  # one line
            except (urllib.error.URLError, OSError, ValueError) as e:  # incl. timeouts, resets
                errors.append(f"{f.url}: {getattr(e, 'reason', e)}")
            else:  # an answer: not retried when it is the wrong file or cannot be stored
                if not _accepted(data, f):
                    before = f"; the cached copy before it failed too (moved to {aside})" if aside else ""
                    raise DownloadError(f"{f.url}: the file's checksum matches neither the registered .gz "
                                        f"nor the original contents; nothing was cached{before}")
                with _cache_errors(folder):
                    write_atomic(target, data, "a downloaded file")
                break
            if attempt == retries or time.monotonic() + 0.5 * 2**attempt > deadline:
                tried = "; ".join(dict.fromkeys(errors))  # the same failure each try: say it once
                before = f"; the cached copy failed its checksum (moved to {aside})" if aside else ""
                raise DownloadError(f"could not download {f.filename} ({tried}; {len(errors)} tries){before}")
            time.sleep(0.5 * 2**attempt)
    return folder
