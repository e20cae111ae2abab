"""Checkpoints are verified on restore (issue #36): a checkpoint whose bytes changed after it was
saved is set aside like an unreadable one, and the run resumes, bit-identically, from the one before."""

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest

import aaejax
from aaejax.run import trainer
from conftest import checkpoint_steps, tiny_aae_config


def _largest_data_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])  # same size, other bytes
    path.write_bytes(bytes(data))


def _wrong_digest(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["state_sha256"] = "0" * 64
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["data", "digest"])
def test_a_changed_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(tmp_path, bars, damage, caplog):
    config = tiny_aae_config(num_steps=30, checkpoint_every=10, max_to_keep=5)
    trainer.train(config, tmp_path / "run", bars)
    step30 = tmp_path / "run" / "checkpoints" / "30"
    if damage == "data":
        _flip_bytes(_largest_data_file(step30))
    else:
        _wrong_digest(next((step30 / "meta").glob("metadata*")))
    config.num_steps = 40
    caplog.set_level(logging.INFO, logger="aaejax")
    resumed = trainer.train(config, tmp_path / "run", bars)
    assert "checkpoint step 30 is unreadable" in caplog.text
    warning = next(r.getMessage() for r in caplog.records if "checkpoint step 30 is unreadable" in r.getMessage())
    assert "\n" not in warning and len(warning) < 400  # one line, not a TensorStore spec
    assert "resumed from step 20" in caplog.text
    assert (tmp_path / "run" / "checkpoints_unreadable" / "30").is_dir()
    fresh = trainer.train(config, tmp_path / "fresh", bars)
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed, fresh)
    assert checkpoint_steps(tmp_path / "run")[-1] == 40 and aaejax.load(tmp_path / "run").step == 40


def test_a_saved_checkpoint_records_its_digest_and_reads_back(tmp_path, bars):
    trainer.train(tiny_aae_config(num_steps=10), tmp_path, bars)
    meta = json.loads(next((tmp_path / "checkpoints" / "10" / "meta").glob("metadata*")).read_text())
    assert len(meta["state_sha256"]) == 64
    assert aaejax.load(tmp_path).step == 10


def test_a_checkpoint_without_a_digest_that_holds_nan_is_refused(tmp_path, monkeypatch):
    """Checkpoints saved before digests existed are checked for NaN/Inf instead."""
    from aaejax.run import checkpoint

    good = {"w": np.ones((3,), np.float32)}
    bad = {"w": np.array([1.0, np.nan, 1.0], np.float32)}
    monkeypatch.setattr(checkpoint, "state_digest", lambda state: None)  # as saved by older code
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=5)
    ckpt.save(1, good, {"model": "aae"})
    ckpt.save(2, bad, {"model": "aae"})
    state, step = ckpt.restore(jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), good))
    ckpt.close()
    assert step == 1 and np.all(np.asarray(state["w"]) == 1.0)
