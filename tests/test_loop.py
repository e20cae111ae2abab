"""The loop's chunking (trainer.ChunkPlan): which lengths it compiles, that any chunking trains the
same bits and writes the same lines, and the wall-time bound on checkpoints."""

import json

import chex
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


def test_the_eta_comes_from_fair_chunks_and_says_the_steps_left(bars, tmp_path, caplog, monkeypatch):
    import logging
    import re

    caplog.set_level(logging.INFO, logger="aaejax")
    monkeypatch.setattr(trainer, "CHUNK_SECONDS", 1e6)  # no chunk is fair by its time alone on a loaded machine
    timers = []

    class Recorded(trainer.StepTimer):
        def __init__(self):
            super().__init__()
            timers.append(self)

    monkeypatch.setattr(trainer, "StepTimer", Recorded)
    trainer.train(tiny_aae_config(num_steps=400, log_every=10, sample_every=100, checkpoint_every=100), tmp_path, bars)
    etas = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ETA: ")]
    # from the first ETA on, the rate looks back at least as far as the first ETA's window did
    assert len(timers) == 1 and timers[0].min_window > 0
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


def test_snapshot_is_a_copy_that_outlives_the_donated_state():
    state = {"w": jax.numpy.arange(4.0), "n": jax.numpy.int32(3), "key": jax.random.PRNGKey(1)}
    copy = trainer.snapshot(state)
    assert all(a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
               for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(copy)))  # not forwarded
    jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(state)
    assert state["w"].is_deleted()
    np.testing.assert_array_equal(copy["w"], [0.0, 1.0, 2.0, 3.0])
    assert int(copy["n"]) == 3 and list(np.asarray(copy["key"])) == [0, 1]


def test_a_checkpoint_saved_while_the_next_chunk_runs_is_the_state_at_its_step(bars, tmp_path):
    import aaejax

    # 40 steps, a checkpoint every 20: the one at 20 is saved from its copy once 20 -> 40 is dispatched
    trainer.train(tiny_aae_config(num_steps=40, max_to_keep=5), tmp_path / "long", bars)
    at_20 = trainer.train(tiny_aae_config(num_steps=20), tmp_path / "short", bars)
    assert checkpoint_steps(tmp_path / "long") == [20, 40]
    chex.assert_trees_all_equal(aaejax.load(tmp_path / "long", step=20).state, at_20)


def test_a_failed_dispatch_after_a_checkpoint_boundary_keeps_its_line_and_checkpoint(bars, tmp_path, monkeypatch):
    fill = trainer.Pipeline.fill

    def failing_fill(self, state, num_steps):
        if self.dispatched == 20 and not self.inflight:  # the chunk after the boundary at 20
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
        return fill(self, state, num_steps)

    monkeypatch.setattr(trainer.Pipeline, "fill", failing_fill)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert checkpoint_steps(tmp_path) == [20]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20]


def test_the_eta_rate_is_wall_clock_from_the_first_fair_chunk_without_first_compiles():
    t = trainer.StepTimer()
    t.add(10, 1.0, whole_segments=False, first_run=True, now=1.0)  # a program's first run: no window
    t.exclude(5.0)  # before the window: ignored
    assert t.wall_from is None and t.rate is None
    t.add(100, 0.5, whole_segments=True, first_run=False, now=2.0)  # the first fair chunk opens it
    assert t.rate == 200.0 and t.wall_seconds == 0.0  # its own time until a chunk follows
    t.add(100, 0.5, whole_segments=True, first_run=False, now=2.0)  # no time between: the fair chunks' rate
    assert t.rate == 200.0
    t.exclude(0.25)  # a boundary that compiled its grids' programs
    t.add(100, 0.5, whole_segments=True, first_run=False, now=3.0)
    assert t.wall_steps == 200 and t.wall_seconds == 0.75 and t.rate == pytest.approx(200 / 0.75)


def test_a_program_compiled_once_the_rate_is_timed_stays_out_of_the_rate(monkeypatch):
    """Once the first fair chunk opened the wall-clock window, a chunk of a new length compiles
    its program (on a loaded CPU: two 25-step chunks, then 3-step ones); that compile is left
    out of the rate, as a boundary's is. Seen: a 9-seed run's ETA at 0.1 steps/s, then 0.9."""
    import itertools

    clock = [0.0]
    monkeypatch.setattr(trainer, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))

    class Chunks:  # 10 s to compile a program, 0.1 s a step
        def __init__(self):
            self.compiled = set()

        def program(self, length):
            return length

        def order_at(self, state):
            return 0

        def carried(self, state, order, images, labels, length):
            if length not in self.compiled:
                self.compiled.add(length)
                clock[0] += 10.0
            return state, None, None, order

    class Run:
        images = labels = None

        def chunk_fn(self, plan):
            return Chunks()

        def finish(self, out, start, length):
            clock[0] += 0.1 * length
            return {}, None

    class Plan:
        fixed, log_every = False, 1000

        def __init__(self):
            self.lengths = itertools.chain([25, 25], itertools.repeat(3))

        def length(self, step, step_seconds, previous):
            return next(self.lengths)

        def ends_segment(self, end):
            return False

    pipe = trainer.Pipeline(Run(), Plan(), 0)
    for _ in range(4):
        pipe.fill(None, 100)
        pipe.take(100)
    assert pipe.timer.wall_steps == 6 and pipe.timer.excluded == 10.0
    # the window: from the second 25-step chunk's end to two 3-step chunks later (with the
    # compile in it: 6 steps / 10.6 s)
    assert pipe.timer.rate == pytest.approx(10.0)


def test_after_the_first_eta_the_rate_follows_a_change_of_speed():
    t = trainer.StepTimer()
    t.add(100, 1.0, whole_segments=True, first_run=False, now=0.0)  # opens the window
    for i in range(1, 11):  # 100 steps/s for 10 s (the machine shared)
        t.add(100, 1.0, whole_segments=True, first_run=False, now=float(i))
    assert t.rate == pytest.approx(100)
    t.min_window = t.wall_seconds  # the first ETA was given here
    for i in range(1, 31):  # then 200 steps/s for 15 s
        t.add(100, 0.5, whole_segments=True, first_run=False, now=10 + 0.5 * i)
    # the window's later half (12.5 s) ran at 200 steps/s; its whole 25 s at 4 000 / 25 = 160
    assert t.wall_seconds == 25.0 and t.rate == pytest.approx(200)
    t.exclude(100.0)  # a boundary's compiles after the last chunk: not in the rate until a chunk follows
    assert t.rate == pytest.approx(200)
    t.add(100, 0.5, whole_segments=True, first_run=False, now=100 + 25.5)
    assert t.rate == pytest.approx(200)


def test_before_the_first_eta_the_rate_is_the_whole_window():
    t = trainer.StepTimer()
    t.add(100, 1.0, whole_segments=True, first_run=False, now=0.0)
    for i in range(1, 11):
        t.add(100, 1.0, whole_segments=True, first_run=False, now=float(i))
    for i in range(1, 31):
        t.add(100, 0.5, whole_segments=True, first_run=False, now=10 + 0.5 * i)
    assert t.rate == pytest.approx(160)


def test_no_eta_line_for_the_last_chunk(bars, tmp_path, caplog, monkeypatch):
    import logging

    caplog.set_level(logging.INFO, logger="aaejax")
    monkeypatch.setattr(trainer, "CHUNK_SECONDS", 1e6)
    # as the ETA test below but 300 steps: the window fills on the chunk that ends the run
    trainer.train(tiny_aae_config(num_steps=300, log_every=10, sample_every=100, checkpoint_every=100), tmp_path, bars)
    assert not [r for r in caplog.records if r.getMessage().startswith("ETA: ")]


def test_a_stop_at_a_checkpoint_boundary_saves_once_after_its_line(bars, tmp_path, monkeypatch, caplog):
    import logging
    import os
    import signal

    caplog.set_level(logging.INFO, logger="aaejax")
    at_boundary = trainer._at_boundary

    def signalled(run, config, plan, state, step, *args):
        out = at_boundary(run, config, plan, state, step, *args)
        if step == 20:  # its line and checkpoint are still to be written: deferred
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(trainer, "_at_boundary", signalled)
    saves = []
    monkeypatch.setattr(trainer.Checkpointer, "save", lambda self, step, state, meta, save=trainer.Checkpointer.save:
                        (saves.append(step), save(self, step, state, meta)))
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert saves == [20] and checkpoint_steps(tmp_path) == [20]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    assert any(r.getMessage() == "stopped by signal 15 at step 20; checkpoint saved" for r in caplog.records)
