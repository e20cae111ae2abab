"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, PNG grids."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
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


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch when it
    is installed (2-3 s of every run's start) only to accept torch tensors, which we never pass."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is there
        try:
            import tensorboardX  # noqa: F401
        finally:
            del sys.modules["torch"]
    from tensorboardX import SummaryWriter

    return SummaryWriter


class MetricWriter:
    """A run's files besides checkpoints: one JSON object per logged step in metrics.jsonl,
    scalars and image grids mirrored to TensorBoard, grids as samples/<name>_<step>.png. Every
    OS error (a full disk) comes out as files.WriteError naming the file."""

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int = 0):
        """enabled=False (the other processes of a multi-process run) writes nothing.

        resume_step: the step the run resumes from; TensorBoard purges its events after that step
        (they are logged again), as `truncate_metrics` does for metrics.jsonl.
        """
        SummaryWriter = _summary_writer_class()
        self.enabled, self.workdir = enabled, Path(workdir)
        if enabled:
            with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
                self._jsonl = open(self.workdir / "metrics.jsonl", "a")
            with self._writing("TensorBoard events", self.workdir / "tensorboard"):
                # tensorboardX names the file by the second and the host and opens it with "wb": a
                # second writer on this work dir within that second (a resume in the same process)
                # would empty the first one's file. The suffix makes each writer's name its own.
                self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step + 1,
                                         filename_suffix=f".{os.getpid()}.{time.time_ns()}")

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
            for k, v in record.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
        if per_seed:
            record["per_seed"] = per_seed
        with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

    def image(self, name: str, step: int, grid: np.ndarray) -> None:
        """grid: uint8 [H, W] (image_grid) -> samples/<name>_<step>.png and TensorBoard `name`."""
        if self.enabled:
            from tensorboardX.proto.summary_pb2 import Summary

            png = encode_png(grid)  # once, for the file and the event (add_image would encode again)
            save_png(self.workdir / "samples" / f"{name}_{step:07d}.png", png)
            image = Summary.Image(height=2 * grid.shape[0], width=2 * grid.shape[1], colorspace=1, encoded_image_string=png)
            with self._writing("TensorBoard events", self.workdir / "tensorboard"):
                self._tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=name, image=image)]), step)

    def close(self) -> None:
        if not self.enabled:
            return
        # Taken now: once closed, _get_file_writer() would open a new file, emptying this one.
        event_writer = self._tb._get_file_writer().event_writer
        try:
            with self._writing("metrics.jsonl", self.workdir / "metrics.jsonl"):
                self._jsonl.close()
            with self._writing("TensorBoard events", self.workdir / "tensorboard"):
                self._tb.close()
        finally:
            _shut(event_writer)


def _shut(event_writer) -> None:
    """Ends a tensorboardX event writer whose close failed (a full disk): its thread and queue are
    stopped and it is marked closed, or its atexit hook would flush again and print that failure's
    traceback after the run's one line. Errors here are the one already reported."""
    if event_writer._closed:
        return
    for step in (lambda: event_writer._worker.stop(), lambda: event_writer._ev_writer.close(),
                 lambda: event_writer._event_queue.close()):
        try:
            step()
        except (OSError, ValueError, AttributeError):
            pass
    event_writer._closed = True


def _quiet_event_thread_errors(args) -> None:
    """threading.excepthook: tensorboardX's writer thread dying of an OSError (a full disk) is
    reported by the run itself, as one line, when it flushes or closes; other errors pass on."""
    if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_EventLoggerThread":
        return
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook
threading.excepthook = _quiet_event_thread_errors


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
