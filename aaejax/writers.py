"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, PNG grids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image


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


def save_png(path: str | Path, grid: np.ndarray, scale: int = 2) -> None:
    img = Image.fromarray(grid, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def side_by_side(inputs: np.ndarray, recons: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Rows alternate inputs and their reconstructions: [2N, H, W, 1] for image_grid(ncols)."""
    rows = []
    for start in range(0, len(inputs), ncols):
        rows += [inputs[start:start + ncols], recons[start:start + ncols]]
    return np.concatenate(rows)


class MetricWriter:
    """A run's files besides checkpoints: one JSON object per logged step in metrics.jsonl,
    scalars and image grids mirrored to TensorBoard, grids as samples/<name>_<step>.png."""

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int = 0):
        """enabled=False (the other processes of a multi-process run) writes nothing.

        resume_step: the step the run resumes from; TensorBoard purges its events after that step
        (they are logged again), as `truncate_metrics` does for metrics.jsonl.
        """
        from tensorboardX import SummaryWriter

        self.enabled, self.workdir = enabled, Path(workdir)
        if enabled:
            self._jsonl = open(Path(workdir) / "metrics.jsonl", "a", buffering=1)
            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, scalars: dict, per_seed: dict | None = None) -> None:
        """scalars go to both; per_seed ({name: [value per model]}) to the JSON line only."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        for k, v in record.items():
            if k != "step":
                self._tb.add_scalar(k, v, step)
        if per_seed:
            record["per_seed"] = per_seed
        self._jsonl.write(json.dumps(record) + "\n")

    def image(self, name: str, step: int, grid: np.ndarray) -> None:
        """grid: uint8 [H, W] (image_grid) -> samples/<name>_<step>.png and TensorBoard `name`."""
        if self.enabled:
            save_png(self.workdir / "samples" / f"{name}_{step:07d}.png", grid)
            self._tb.add_image(name, grid[None], step, dataformats="CHW")

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        self._tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(workdir: str | Path, last_step: int) -> None:
    """Drops records after `last_step` (a resumed run logs those steps again)."""
    path = Path(workdir) / "metrics.jsonl"
    records = read_metrics(workdir)
    kept = [r for r in records if r["step"] <= last_step]
    if len(kept) != len(records):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)
