"""`make bench`'s first-step child (tools/bench.py), at test size: it compiles the training
chunk ahead of time (TrainChunk.compile), the one path no training run takes."""

import json

from conftest import tiny_aae_config
from tools import bench


def test_first_step_child_compiles_ahead_and_trains_one_chunk(monkeypatch, capsys):
    monkeypatch.setattr(bench, "N_TRAIN", 256)
    monkeypatch.setattr(bench, "_config", lambda model, batch_size: tiny_aae_config(batch_size=batch_size))
    bench._first_step_child("aae")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # compiled first, then one chunk of log_every (10) steps; a step is a tenth of that chunk's run
    assert 0 < out["to_compiled_s"] < out["first_step_s"] < out["first_chunk_s"]
    assert out["first_step_s"] == out["to_compiled_s"] + (out["first_chunk_s"] - out["to_compiled_s"]) / 10


def test_chunk_lengths_bench_runs_the_stand_in_in_chunks_of_each_length(monkeypatch):
    monkeypatch.setattr(bench, "N_TRAIN", 256)
    monkeypatch.setattr(bench, "_standin", lambda model: tiny_aae_config(num_steps=40))
    rows = [bench.bench_chunks("aae", length) for length in (10, 40)]
    assert [(r["length"], r["steps"], r["variant"]) for r in rows] == [(10, 40, "seed"), (40, 40, "seed")]
    assert all(r["seconds"] > 0 for r in rows)
