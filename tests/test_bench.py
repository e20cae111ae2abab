"""`make bench` (tools/bench.py) at test size: the first-step child, which compiles the training
chunk ahead of time (TrainChunk.compile), the one path no training run takes; the chunk-length
bench; the step's FLOP count."""

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


def _paper_cluster_macs(h: int, k: int, d: int, pixels: int = 784) -> int:
    """Multiply-adds per example of a paper_cluster step (aae_paper.py, widths h, k categories,
    d style): the matmuls of each forward pass and of the backward passes each update needs."""
    enc = dec = pixels * h + h * h + h * (k + d)
    disc_z, disc_cat = d * h + h * h + h, k * h + h * h + h
    recon = 3 * (enc + dec) - pixels * h  # forward, weight grads, input grads but the images'
    # each discriminator on real and fake rows: forward, weight grads, input grads but its inputs'
    discs = 2 * (3 * disc_z - d * h) + 2 * (3 * disc_cat - k * h)
    # the encoder's forward (shared with the discriminators' phase); the generator's grads flow
    # through both discriminators to the code, then through the encoder to its weights
    gen = enc + 2 * (disc_z + disc_cat) + 2 * enc - pixels * h
    return recon + discs + gen


def test_step_cost_of_the_paper_clustering_step_is_its_matmuls():
    """XLA's count of a paper_cluster step is 2 x its necessary multiply-adds, plus 1.3 % of
    elementwise work at width 512: the figure docs/reproductions.md's cost per phase rests on. A
    second encoder pass on other inputs in the generator's update counts 8.6 % more and fails."""
    from aaejax.models import registry
    from experiments import aae as aae_exp

    c = aae_exp.get_config("paper_cluster_16")
    c.hidden = c.disc_hidden = (512, 512)
    model = registry.build_model(c)
    cost = bench.step_cost(model, c)
    expected = 2 * c.batch_size * _paper_cluster_macs(512, 16, 5) / 1e9
    assert cost["matmul_width"] == 512 and cost["matmul_gflop_per_sec"] > 0
    assert expected <= cost["gflop_per_step"] <= 1.02 * expected, (cost, expected)


def test_compile_profile_sums_each_tests_events_over_the_workers_files(tmp_path):
    from tools import compile_profile

    (tmp_path / "1.json").write_text(json.dumps([["t::a", "trace", 1.0], ["t::a", "compile", 2.0],
                                                 ["t::a", "programs", 3]]))
    (tmp_path / "2.json").write_text(json.dumps([["t::b", "lower", 0.5], ["t::a", "compile", 4.0],
                                                 ["t::a", "programs", 1], ["t::b", "programs", 2]]))
    assert compile_profile.summary(tmp_path).splitlines() == [
        "6 programs built; trace 1 s, lower 0 s, compile 6 s",
        "   7.0 s     4 programs  t::a",
        "   0.5 s     2 programs  t::b"]
