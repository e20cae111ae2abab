"""Many seeds in one compiled step, and data parallel over devices (8 CPU devices in a subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import aaejax
from aaejax.run import parallel, trainer
from conftest import checkpoint_steps, cli_env, tiny_aae_config, tiny_bigan_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("make_config", [tiny_aae_config, tiny_bigan_config])
def test_each_seed_of_a_multi_seed_run_is_the_single_run_of_its_seed(tmp_path, bars, make_config, monkeypatch):
    """Model i of num_seeds=3 (seed 5) == a run with seed 5 + i: own init, data order, everything.
    evaluate reports each model and the mean and standard deviation over them."""
    trainer.train(make_config(num_steps=20, seed=5, num_seeds=3), tmp_path / "multi", bars)
    trainer.train(make_config(num_steps=20, seed=6), tmp_path / "single", bars)
    multi, single = aaejax.load(tmp_path / "multi", seed_index=1), aaejax.load(tmp_path / "single")
    # vmapped matmuls may sum in another order: equal to float tolerance after 20 steps
    chex.assert_trees_all_close(multi.state, single.state, atol=1e-4, rtol=1e-4)
    other = aaejax.load(tmp_path / "multi", seed_index=0)
    assert not np.allclose(jax.tree_util.tree_leaves(other.state.nets)[0],
                           jax.tree_util.tree_leaves(multi.state.nets)[0])
    with pytest.raises(ValueError, match="seed_index"):
        aaejax.load(tmp_path / "multi", seed_index=3)
    record = aaejax.run.writers.read_metrics(tmp_path / "multi")[-1]
    assert len(record["per_seed"]["d_loss"]) == 3 and record["model_steps_per_sec"] > record["steps_per_sec"]
    if make_config is tiny_aae_config:
        from aaejax.eval.report import evaluate

        steps_asked, load = [], aaejax.load
        monkeypatch.setattr(aaejax, "load", lambda *a, **k: steps_asked.append(k["step"]) or load(*a, **k))
        out = evaluate(tmp_path / "multi", num_samples=200, use_classifier=False, knn_pixels=False, dataset=bars)
        assert steps_asked == [None, 20, 20]  # the newest, then that step: a newer save may land meanwhile
        assert [r["seed_index"] for r in out["seeds"]] == [0, 1, 2]
        values = [r["recon_mse"] for r in out["seeds"]]
        assert out["mean"]["recon_mse"] == pytest.approx(np.mean(values))
        assert out["std"]["recon_mse"] == pytest.approx(np.std(values, ddof=1)) and out["std"]["recon_mse"] > 0
        assert json.loads((tmp_path / "multi" / "eval.json").read_text())["num_seeds"] == 3


def test_shard_modes_resolve_and_refuse():
    c = tiny_aae_config(num_seeds=8, batch_size=16)
    assert parallel.resolve_mode(c, 1) == "none"
    assert parallel.resolve_mode(c, 8) == "seeds"
    c.num_seeds = 3
    assert parallel.resolve_mode(c, 8) == "batch"
    c.batch_size = 12
    assert parallel.resolve_mode(c, 8) == "none"
    c.shard = "batch"
    with pytest.raises(ValueError, match="divisible"):
        parallel.resolve_mode(c, 8)
    c.shard = "diagonal"
    with pytest.raises(ValueError, match="unknown shard"):
        parallel.resolve_mode(c, 8)


def _worker(tmp_path: Path, devices: int) -> dict:
    """parallel_worker's runs on `devices` CPU devices: in a subprocess, or here for one device."""
    out = tmp_path / f"d{devices}"
    if devices == 1:
        import parallel_worker

        assert jax.device_count() == 1
        parallel_worker.main(out)
    else:
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "parallel_worker.py"), str(out)], cwd=REPO,
                              env=cli_env(tmp_path, devices), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out / "params.npz"))


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    """The same global batch on 8 CPU devices (batch sharded: gradients and BatchNorm statistics
    all-reduced; or 8 seeds, one per device) gives the parameters of 1 device, to float
    tolerance; sharded checkpoints restore and resume on 8 devices."""
    one, eight = _worker(tmp_path, 1), _worker(tmp_path, 8)
    assert int(one["device_count"]) == 1 and int(eight["device_count"]) == 8
    for run in ("bigan_batch", "aae_seeds"):
        assert int(eight[f"{run}/num_shards"]) == 8, run
    assert int(eight["aae_seeds_stream_programs"]) == 1  # the shared program, its order sharded as the state
    resumed = [k for k in eight if k.startswith("resumed/")]
    assert set(one) == set(eight) - set(resumed) and resumed
    for key in one:
        if key.endswith("num_shards") or key == "device_count":
            continue
        tol = 1e-6 if key.startswith("aae_seeds") or key == "loaded_seed3" else 2e-4
        np.testing.assert_allclose(eight[key], one[key], rtol=tol, atol=tol, err_msg=key)
    # The 8-device resume equals the uninterrupted 8-device run of the same config.
    for key in resumed:
        np.testing.assert_allclose(eight[key], eight["bigan_batch/" + key.split("/", 1)[1]], rtol=1e-6, atol=1e-6,
                                   err_msg=key)
    # Runs saved sharded over 8 devices load in this process too (its own device count).
    for run in ("bigan_batch", "aae_seeds"):
        chex.assert_shape(aaejax.load(tmp_path / "d8" / run).encode(np.zeros((2, 28, 28, 1), np.float32)), (2, None))
    np.testing.assert_allclose(aaejax.load(tmp_path / "d8" / "aae_seeds", seed_index=3).encode(
        np.zeros((1, 28, 28, 1), np.float32)), eight["loaded_seed3"], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(tmp_path):
    """A multi-process job (jax.distributed over localhost, one CPU device each) trains the same
    parameters as one process with two devices, and process 0 alone writes the run's files."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    base = cli_env(tmp_path)
    cmd = [sys.executable, str(REPO / "tests" / "parallel_worker.py")]
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd + [str(tmp_path / "multi"), "multiprocess"], cwd=REPO, stdout=log.open("w"),
                              stderr=subprocess.STDOUT,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i, log in enumerate(logs)]
    try:
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log.read_text()[-2000:] for log in logs)
    single = subprocess.run(cmd + [str(tmp_path / "single"), "multiprocess"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env=cli_env(tmp_path, devices=2))
    assert single.returncode == 0, single.stderr[-3000:]
    multi, one = dict(np.load(tmp_path / "multi" / "params.npz")), dict(np.load(tmp_path / "single" / "params.npz"))
    assert (int(multi.pop("process_count")), int(one.pop("process_count"))) == (2, 1)
    assert int(multi.pop("device_count")) == int(one.pop("device_count")) == 2
    assert set(multi) == set(one)
    for key in one:
        np.testing.assert_allclose(multi[key], one[key], rtol=1e-6, atol=1e-6, err_msg=key)
    run = tmp_path / "multi" / "run"
    assert [r["step"] for r in aaejax.run.writers.read_metrics(run)] == [3, 6]  # one writer, not two
    assert len(list((run / "samples").glob("*.png"))) == 4
    assert checkpoint_steps(run) == [3, 6]
    assert aaejax.load(run).step == 6
