"""The loop's chunking (trainer.ChunkPlan): which lengths it compiles, that any chunking trains the
same bits and writes the same lines, and the wall-time bound on checkpoints."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from aaejax.run import trainer
from conftest import checkpoint_steps, tiny_aae_config


def _plan(log_every=200, num_steps=20000, sample_every=1000, checkpoint_every=5000, keep=()):
    c = ml_collections.ConfigDict(dict(log_every=log_every, num_steps=num_steps, keep_steps=keep,
                                       sample_every=sample_every, checkpoint_every=checkpoint_every, eval_every=0))
    return trainer.ChunkPlan(c, evaluates=False)


def _walk(plan, step_seconds, start=0):
    """The chunk lengths of a whole run, the first one planned without a step time."""
    step, lengths = start, []
    while step < plan.num_steps:
        lengths.append(plan.length(step, step_seconds if lengths else None, lengths[-1] if lengths else 0))
        step += lengths[-1]
    return lengths


def test_fast_steps_run_from_boundary_to_boundary():
    lengths = _walk(_plan(), step_seconds=1e-4)  # 2 s hold 20 000 steps: a grid every 1 000 bounds them
    assert lengths[:40] == [25] * 40 and set(lengths[40:]) == {1000}  # 25: an eighth of a segment, until a boundary
    assert sum(lengths) == 20000
    plan = _plan(log_every=391, num_steps=156400, sample_every=9775, checkpoint_every=1955)
    official = _walk(plan, 2e-4)
    assert set(official) == {23, 1955} and plan.unit == 23  # 23 * 17 = 391, 23 * 85 = 1955
    assert plan.unit * plan.capacity >= 1955  # one program for the whole run: 1 to `capacity` units of 23


@pytest.mark.parametrize("step_seconds", [1e-6, 1e-4, 2e-3, 0.05])
def test_every_length_on_the_segment_grid_is_a_number_of_units(step_seconds):
    """Whatever the step time, a run whose segment ends are multiples of the unit compiles one
    program: every length a multiple of `unit`, at most `capacity` of them; slower than a unit
    within the budget, lengths under a unit keep a stop prompt."""
    plan = _plan(log_every=200, num_steps=20000, sample_every=1000, checkpoint_every=5000)
    lengths = _walk(plan, step_seconds)
    assert all(n % plan.unit == 0 and n <= plan.unit * plan.capacity for n in lengths), sorted(set(lengths))
    assert max(lengths[1:]) * step_seconds <= trainer.CHUNK_SECONDS or max(lengths[1:]) == plan.unit
    slow = _walk(plan, step_seconds=1.0)
    assert set(slow[1:]) == {1} and slow[0] == plan.unit == 25  # 25 s a unit: one step a chunk
    huge = _plan(log_every=200, num_steps=10**6, sample_every=10**6, checkpoint_every=10**6)
    assert huge.unit * huge.capacity <= trainer.MAX_CHUNK_STEPS  # the metrics rows fetched stay few
    assert max(_walk(huge, step_seconds=1e-7)) <= trainer.MAX_CHUNK_STEPS


def test_slow_steps_run_parts_of_a_segment_within_the_budget():
    lengths = _walk(_plan(log_every=100, num_steps=600, sample_every=300, checkpoint_every=300), step_seconds=0.7)
    assert lengths[0] == 10  # the first chunk, before the step time is known: a divisor of log_every
    assert set(lengths[1:]) <= {10, 2, 1} and max(lengths[1:]) * 0.7 <= 2 * trainer.CHUNK_SECONDS
    plan = _plan(log_every=100, num_steps=600, sample_every=300, checkpoint_every=300)
    step = 0
    for length in lengths:  # no chunk crosses a segment's end
        assert plan.segment_end(step) >= step + length
        step += length


def test_a_run_resumed_mid_segment_keeps_to_the_segment_grid():
    """Resumed at step 137 (a stop mid-segment): the rest of that segment, then the same chunks
    as a run from 0 (ends at the grid's boundaries), and a keep step is a chunk's end."""
    ends = 137 + np.cumsum(_walk(_plan(), step_seconds=1e-4, start=137))
    assert 200 in ends and 1000 in ends and set(np.diff(ends[list(ends).index(1000):])) == {1000}
    assert 15137 in np.cumsum(_walk(_plan(keep=(15137,)), step_seconds=1e-4))


@pytest.mark.parametrize("chunk_seconds", [1e-9, 1e9])
def test_any_chunking_trains_the_same_bits_and_lines(bars, tmp_path, monkeypatch, chunk_seconds):
    """Chunks of one step each (a tiny budget) or of whole stretches between boundaries (a huge
    one): the same parameters and the same metrics.jsonl values as one segment per chunk."""
    config = tiny_aae_config(num_steps=40, log_every=5, sample_every=20, checkpoint_every=20)
    base = trainer.train(config, tmp_path / "base", bars)
    monkeypatch.setattr(trainer, "CHUNK_SECONDS", chunk_seconds)
    other = trainer.train(config, tmp_path / "other", bars)
    jax.tree_util.tree_map(np.testing.assert_array_equal, base, other)
    lines = [[{k: v for k, v in json.loads(x).items() if k != "steps_per_sec"}
              for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("base", "other")]
    assert lines[0] == lines[1] and [r["step"] for r in lines[0]] == list(range(5, 41, 5))


def test_checkpoints_are_bounded_by_wall_time(bars, tmp_path):
    config = tiny_aae_config(num_steps=40, log_every=5, checkpoint_every=10, checkpoint_seconds=3600.0,
                             keep_steps=(15,), max_to_keep=10)
    trainer.train(config, tmp_path, bars)
    assert checkpoint_steps(tmp_path) == [15, 40]  # the keep step and the end; every 10 steps is too often


def test_the_eta_comes_from_fair_chunks_and_says_the_steps_left(bars, tmp_path, caplog):
    import logging
    import re

    caplog.set_level(logging.INFO, logger="aaejax")
    trainer.train(tiny_aae_config(num_steps=400, log_every=10, sample_every=100, checkpoint_every=100), tmp_path, bars)
    etas = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ETA: ")]
    assert len(etas) == 1, etas
    left, rate = re.match(r"ETA: (\d+) steps to go, about \d\d:\d\d:\d\d at ([\d.]+) steps/s", etas[0]).groups()
    # One-step chunks to the first boundary (100), then chunks of 100 by the same program: the
    # first of those (100 -> 200) is not the program's first run; the wall clock from its end to
    # the next one's (200 -> 300, its boundary at 200 included) covers over 5 % of the run.
    assert int(left) == 100 and float(rate) > 0


def test_a_multi_process_plan_is_one_segment_a_chunk_whatever_the_clock():
    c = ml_collections.ConfigDict(dict(log_every=200, num_steps=2000, keep_steps=(), sample_every=1000,
                                       checkpoint_every=5000, eval_every=0))
    plan = trainer.ChunkPlan(c, evaluates=False, fixed=True)
    assert set(_walk(plan, step_seconds=1e-6)) == {200} == set(_walk(plan, step_seconds=10.0))


def test_durations_past_a_day_keep_their_days():
    from aaejax.run.console import duration

    assert duration(27 * 3600 + 61) == "1d 03:01:01" and duration(59) == "00:00:59" and duration(float("nan")) == "?"
