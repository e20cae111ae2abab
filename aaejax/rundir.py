"""A run's work dir: its config file, what it holds, and whether a new run may use it.

A run dir holds config.json, metrics.jsonl, tensorboard/, samples/, checkpoints/ (and, after
evaluate, eval.json and eval/). The same command resumes a run; a run of another config is
refused, or deleted first with --overwrite.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import ml_collections

from aaejax import configs
from aaejax.configs import ConfigError

log = logging.getLogger(__name__)

# What a run writes into its work dir (removed by an explicit overwrite, nothing else is).
ARTIFACTS = ("checkpoints", "checkpoints_unreadable", "samples", "tensorboard", "eval", "metrics.jsonl",
             "eval.json", "config.json")
# Fields that may change when a run is resumed (they don't change what is learned). num_steps
# only with a constant learning rate: a decaying schedule is laid out over num_steps.
RESUMABLE_FIELDS = ("num_steps", "log_every", "sample_every", "checkpoint_every", "max_to_keep", "keep_steps")


def config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The run's config.json as today's code reads it (configs.fill_defaults), tuples restored."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        from aaejax.checkpoint import CheckpointError

        raise CheckpointError(f"{workdir} holds no run (no config.json)")
    config = ml_collections.ConfigDict(configs.fill_defaults(json.loads(path.read_text())))
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
    path = workdir / "config.json"
    if not path.exists():
        return ""
    old = configs.fill_defaults(json.loads(path.read_text()))
    new = config_dict(config)
    resumable = set(RESUMABLE_FIELDS)
    if old.get("lr_schedule") != "constant" or new.get("lr_schedule") != "constant":
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
    for name in ARTIFACTS:
        target = workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def write_config(workdir: Path, config) -> None:
    (workdir / "config.json").write_text(json.dumps(config_dict(config), indent=2, sort_keys=True))
