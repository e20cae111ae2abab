"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, PNG grids."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """[N, H, W, 1] floats in [0, 1] -> uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad] grid."""
    images = np.nan_to_num(np.asarray(images, np.float32))  # a diverged model still gets a grid
    n, h, w = images.shape[:3]
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i, ..., 0]
    return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)


def encode_png(grid: np.ndarray, scale: int = 2) -> bytes:
    """A uint8 grid [H, W] as PNG bytes, each pixel `scale` x `scale`. zlib level 1: a run's grids
    are drawn often, and level 6 took 3x as long for files a quarter smaller."""
    import io

    img = Image.fromarray(grid, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def save_png(path: str | Path, grid: np.ndarray | bytes, scale: int = 2) -> None:
    """Writes a grid (or its encode_png bytes) to a temporary name, then renames: never a torn
    PNG. OSError -> WriteError."""
    from aaejax.run.files import write_atomic

    write_atomic(Path(path), grid if isinstance(grid, bytes) else encode_png(grid, scale), "a sample grid")


def side_by_side(inputs: np.ndarray, recons: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Rows alternate inputs and their reconstructions: [2N, H, W, 1] for image_grid(ncols)."""
    rows = []
    for start in range(0, len(inputs), ncols):
        rows += [inputs[start:start + ncols], recons[start:start + ncols]]
    return np.concatenate(rows)


def _tensorboardx() -> None:
    """Imports tensorboardX (for its protos and checksum) without PyTorch: tensorboardX imports
    torch when it is installed (2-3 s of every run's start) only to accept torch tensors, which we
    never pass."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is there
        try:
            import tensorboardX  # noqa: F401
        finally:
            del sys.modules["torch"]


class EventFile:
    """One TensorBoard event file (TFRecord framing), written in the caller's thread with one
    unbuffered write per call, so a full disk is an OSError at that call. (tensorboardX's
    SummaryWriter writes from a thread of its own: a full disk killed it silently, and the next
    scalar then waited forever on its full queue.)"""

    def __init__(self, logdir: Path, purge_step: int):
        _tensorboardx()
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        logdir.mkdir(parents=True, exist_ok=True)
        # tensorboardX's name (the second, the host), then the pid and the nanosecond: a second
        # file within the same second (a resume in the same process) is a file of its own.
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}"
        self._file = open(logdir / name, "xb", buffering=0)
        now = time.time()
        try:
            # TensorBoard drops the earlier files' events from `purge_step` on: a resumed run logs
            # them again.
            self._write([Event(wall_time=now, file_version="brain.Event:2"),
                         Event(wall_time=now, step=purge_step, session_log=SessionLog(status=SessionLog.START))])
        except BaseException:
            self._file.close()
            raise

    def _write(self, events) -> None:
        from tensorboardX.record_writer import masked_crc32c

        records = []
        for event in events:
            data = event.SerializeToString()
            header = struct.pack("<Q", len(data))
            records += [header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data))]
        view = memoryview(b"".join(records))
        while view:  # an unbuffered write may take part of it; a full disk then raises
            view = view[self._file.write(view):]

    def scalars(self, step: int, values: dict) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        self._summaries(step, [Summary.Value(tag=k, simple_value=v) for k, v in values.items()])

    def image(self, name: str, step: int, png: bytes, height: int, width: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=1, encoded_image_string=png)
        self._summaries(step, [Summary.Value(tag=name, image=image)])

    def _summaries(self, step: int, values: list) -> None:
        """One event per value, as tensorboardX's add_scalar writes them."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        now = time.time()
        self._write([Event(wall_time=now, step=step, summary=Summary(value=[v])) for v in values])

    def close(self) -> None:
        self._file.close()  # nothing is buffered: closing cannot fail on a full disk


class MetricWriter:
    """A run's files besides checkpoints: one JSON object per logged step in metrics.jsonl,
    scalars and image grids mirrored to TensorBoard, grids as samples/<name>_<step>.png. Every
    OS error (a full disk) comes out as files.WriteError naming the file."""

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int = 0):
        """enabled=False (the other processes of a multi-process run) writes nothing.

        resume_step: the step the run resumes from; TensorBoard purges its events after that step
        (they are logged again), as `truncate_metrics` does for metrics.jsonl.
        """
        self.enabled, self.workdir = enabled, Path(workdir)
        if enabled:
            with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
                self._jsonl = open(self.workdir / "metrics.jsonl", "a")
            try:
                with self._writing("TensorBoard events", self.workdir / "tensorboard"):
                    self._tb = EventFile(self.workdir / "tensorboard", purge_step=resume_step + 1)
            except BaseException:
                self._jsonl.close()
                raise

    @staticmethod
    def _writing(what: str, path: Path):
        import contextlib

        from aaejax.run.files import WriteError

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except WriteError:
                raise
            except OSError as e:
                raise WriteError(e.strerror or str(e), path, what) from e
        return guard()

    def write(self, step: int, scalars: dict, per_seed: dict | None = None) -> None:
        """scalars go to both; per_seed ({name: [value per model]}) to the JSON line only. The
        line is written whole and flushed."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with self._writing("TensorBoard events", self.workdir / "tensorboard"):
            self._tb.scalars(int(step), {k: v for k, v in record.items() if k != "step"})
        if per_seed:
            record["per_seed"] = per_seed
        with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

    def image(self, name: str, step: int, grid: np.ndarray) -> None:
        """grid: uint8 [H, W] (image_grid) -> samples/<name>_<step>.png and TensorBoard `name`."""
        if self.enabled:
            png = encode_png(grid)  # once, for the file and the event
            save_png(self.workdir / "samples" / f"{name}_{step:07d}.png", png)
            with self._writing("TensorBoard events", self.workdir / "tensorboard"):
                self._tb.image(name, int(step), png, height=2 * grid.shape[0], width=2 * grid.shape[1])

    def close(self) -> None:
        if not self.enabled:
            return
        self._tb.close()
        with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
            self._jsonl.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """metrics.jsonl's records; a line that is not whole JSON (a torn last line, from a kill or a
    full disk mid-write) is skipped with a warning."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            log.warning("%s: line %d is torn (not whole JSON); it is dropped", path, number)
    return records


def truncate_metrics(workdir: str | Path, last_step: int) -> None:
    """Drops records after `last_step` (a resumed run logs those steps again) and torn lines,
    rewriting the file under a temporary name."""
    from aaejax.run.files import write_atomic

    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = [r for r in read_metrics(workdir) if r["step"] <= last_step]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if text != path.read_text(errors="replace"):
        write_atomic(path, text)
