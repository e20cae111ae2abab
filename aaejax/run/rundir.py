"""A run's work dir: its config file, what it holds and who may write it (how its files are
written, and how a write fails: aaejax/run/files.py).

A run dir holds config.json, metrics.jsonl, tensorboard/, samples/, checkpoints/ (and, after
evaluate, eval.json or eval_<step>.json, curve.json and eval/). The same command resumes a run;
a run of another config is refused, or deleted first with --overwrite. One run at a time: a run holds an OS lock on
`.lock` for its whole life (released by the OS when the process dies, so there is never a stale
lock to clean); evaluate and aaejax.load only read and need no lock. Whole files are written to a
temporary name and renamed; metrics.jsonl is appended in whole lines (a torn last line, from a
kill or a full disk mid-write, is dropped on resume with a warning).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import ml_collections

from aaejax.models import registry
from aaejax.run.checkpoint import CheckpointError, Checkpointer
from aaejax.configs import ConfigError
from aaejax.run.files import WriteError, failure_line, write_atomic
from aaejax.configs import STEP_FREE_SCHEDULES

log = logging.getLogger(__name__)

# What a run and its evaluations write into its work dir, as glob patterns (removed by an explicit
# overwrite, nothing else is).
ARTIFACTS = ("checkpoints", "checkpoints_unreadable", "samples", "tensorboard", "eval", "metrics.jsonl",
             "eval.json", "eval_[0-9]*.json", "curve.json", "config.json")
# Fields that may change when a run is resumed (they don't change what is learned). num_steps
# only under a schedule not laid out over num_steps (configs.STEP_FREE_SCHEDULES).
RESUMABLE_FIELDS = ("num_steps", "log_every", "sample_every", "checkpoint_every", "max_to_keep", "keep_steps",
                    "eval_every", "checkpoint_seconds")


def config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


class WorkdirLock:
    """`with WorkdirLock(workdir):` the run's exclusive OS lock on <workdir>/.lock; a second run
    on the same dir is refused at once with a line naming the holder (pid, host, start time)."""

    def __init__(self, workdir: Path, enabled: bool = True):
        self.path, self.enabled, self._fd = Path(workdir) / ".lock", enabled, None

    def __enter__(self):
        if not self.enabled:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{self.path.parent} is in use by {holder}; wait for that run to end, or use "
                              f"another --workdir") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}".encode())
        except OSError as e:  # a full disk: the first byte a run writes is here
            os.close(fd)  # else the open file would hold the lock for the rest of the process
            what = "the work dir's lock"
            raise WriteError(failure_line(what, self.path, e.strerror or str(e)), self.path, what) from e
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
        return False


def saved_config_values(workdir: Path) -> dict | None:
    """The run's config as saved (registry.fill_defaults applied), or None when the dir holds no
    run. An unreadable config.json falls back, with a warning, to the config stored in the newest
    readable checkpoint."""
    path = Path(workdir) / "config.json"
    try:
        return registry.fill_defaults(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        if not (Path(workdir) / "checkpoints").is_dir():
            raise CheckpointError(f"{path} is unreadable ({reason}) and no checkpoint holds a config") from e
        ckpt = Checkpointer(Path(workdir) / "checkpoints", read_only=True)
        try:
            for step in reversed(ckpt.steps()):
                try:
                    values = ckpt.read_meta(step)["config"]
                except Exception:  # noqa: BLE001 - an unreadable step: try the previous one
                    continue
                log.warning("%s is unreadable (%s); using the config stored in checkpoint step %d", path, reason, step)
                return registry.fill_defaults(values)
        finally:
            ckpt.close()
        raise CheckpointError(f"{path} is unreadable ({reason}) and no checkpoint holds a readable config") from e


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The run's config as today's code reads it (saved_config_values), tuples restored."""
    values = saved_config_values(Path(workdir))
    if values is None:
        raise CheckpointError(f"{workdir} holds no run (no config.json)")
    config = ml_collections.ConfigDict(values)
    for k, v in list(config.items()):  # JSON turned tuples into lists
        if isinstance(v, list):
            config[k] = tuple(v)
    return config


def ensure_writable(workdir: Path, process_index: int = 0) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{process_index}.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"work dir {workdir} is not writable: {e}") from e


def config_diff(workdir: Path, config) -> str:
    """'' when `workdir` holds no run or one of the same config; else the differing fields."""
    old = saved_config_values(workdir)
    if old is None:
        return ""
    new = config_dict(config)
    resumable = set(RESUMABLE_FIELDS)
    if old.get("lr_schedule") not in STEP_FREE_SCHEDULES or new.get("lr_schedule") not in STEP_FREE_SCHEDULES:
        resumable.discard("num_steps")
    diff = sorted(k for k in set(old) | set(new) if k not in resumable and old.get(k) != new.get(k))
    text = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
    if len(diff) > 6:
        text += f" and {len(diff) - 6} more"
    if "num_steps" in diff:
        text += (f" (the {new.get('lr_schedule')!r} learning-rate schedule is laid out over num_steps, "
                 f"so the run must resume with the num_steps it started with)")
    return text


def delete_run(workdir: Path) -> None:
    for pattern in ARTIFACTS:
        for target in workdir.glob(pattern):
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def write_config(workdir: Path, config) -> None:
    write_atomic(workdir / "config.json", json.dumps(config_dict(config), indent=2, sort_keys=True))
