"""The shared trainer, checkpoints, the command line and the load API, end to end."""

import json
import logging
import shutil
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aaejax
from aaejax.data import datasets as data_lib
from aaejax.data import images
from aaejax.models.state import seed_keys
from aaejax.models import registry
from aaejax.run import rundir, trainer
from aaejax.models.aae import AAE
from aaejax.models.bigan import BiGAN
from aaejax.run.checkpoint import Checkpointer, CheckpointError, abstract_like
from aaejax.configs import ConfigError
from conftest import (REPO, TINY_FLAGS, checkpoint_steps, cli_code, cli_env, run_cli, tiny_aae_config, tiny_bigan_config,
                      tiny_variant)


@pytest.mark.parametrize("make_config", [tiny_aae_config, tiny_bigan_config])
def test_chunk_does_not_retrace(bars, make_config, retrace):
    config = make_config()
    model = registry.build_model(config)
    model.train_step = chex.assert_max_traces(model.train_step, n=1)  # traced once: one compile
    chunk = trainer.make_train_chunk(model, config.batch_size, bars.train_images.shape[0], data_seed=0)
    x, y = jnp.asarray(bars.train_images), jnp.asarray(bars.train_labels)
    state = jax.jit(model.init)(jax.random.PRNGKey(0))
    for _ in range(3):  # crosses an epoch boundary (512 / 16 = 32 steps an epoch)
        state, _, _ = chunk(state, x, y, length=15)
    assert int(state.step) == 45


def test_models_of_equal_configs_share_one_trace(bars, monkeypatch, retrace):
    """Models compare and hash by their config, each keeping its own copy of it; the chunks of two
    runs of equal configs are one compiled program, traced once."""
    config = tiny_aae_config()
    a, b = AAE(config), AAE(tiny_aae_config())
    assert a == b and hash(a) == hash(b)
    assert a != AAE(tiny_aae_config(latent_dim=3)) and a != BiGAN(tiny_bigan_config())
    config.latent_dim = 3  # the caller's config changes afterwards: the model does not
    assert a.config.latent_dim == 4 and a == b
    traces, step = [], AAE.train_step
    monkeypatch.setattr(AAE, "train_step", lambda self, state, batch: traces.append(1) or step(self, state, batch))
    x, y = jnp.asarray(bars.train_images), jnp.asarray(bars.train_labels)
    for model in (a, b):
        chunk = trainer.make_train_chunk(model, 16, x.shape[0], data_seed=0)
        chunk(model.init(jax.random.PRNGKey(0)), x, y, length=2)
    assert len(traces) == 1


def test_chunk_equals_single_steps(bars):
    """The scan gathers the same batches as stepping one by one through the epoch permutation."""
    config = tiny_aae_config()
    model = AAE(config)
    x, y = jnp.asarray(bars.train_images), jnp.asarray(bars.train_labels)
    chunk = trainer.make_train_chunk(model, config.batch_size, x.shape[0], data_seed=7)
    s_a, _, _ = chunk(model.init(jax.random.PRNGKey(0)), x, y, length=6)
    s_b = model.init(jax.random.PRNGKey(0))
    for _ in range(3):
        s_b, _, _ = chunk(s_b, x, y, length=2)
    chex.assert_trees_all_close(s_a, s_b, atol=1e-6)


@pytest.mark.parametrize("make_config", [tiny_bigan_config, lambda: tiny_aae_config(num_seeds=2)])
def test_one_program_for_every_number_of_units_trains_the_bits_of_one_long_chunk(bars, make_config):
    """The loop's shared program (TrainChunk with a unit): chunks of 1, 3, 4 and 2 units of 3 steps
    leave the state, the metrics and the data order bit for bit as one program of 30 steps does
    (BatchNorm, vmapped seeds); its unused metrics rows come after `length`. (Labelled streams are
    drawn inside the step's body, which both programs share.)"""
    config = make_config()
    model, n = registry.build_model(config), config.num_seeds
    x, y = jnp.asarray(bars.train_images), jnp.asarray(bars.train_labels)
    streams = trainer.stacked_streams(model, bars.train_labels, [config.seed + i for i in range(n)])
    data_seed = list(range(7, 7 + n)) if n > 1 else 7
    exact, shared = (trainer.make_train_chunk(model, config.batch_size, x.shape[0], data_seed, streams, n, **kw)
                     for kw in ({}, {"unit": 3, "capacity": 4}))
    init = jax.jit(jax.vmap(model.init) if n > 1 else model.init)
    state = init(jax.random.split(jax.random.PRNGKey(0), n) if n > 1 else jax.random.PRNGKey(0))
    once = jax.device_get(exact.carried(state, exact.order_at(state), x, y, 30))
    state = init(jax.random.split(jax.random.PRNGKey(0), n) if n > 1 else jax.random.PRNGKey(0))
    order, rows = shared.order_at(state), []
    for length in (3, 9, 12, 6):
        state, metrics, finite, order = shared.carried(state, order, x, y, length)
        metrics = jax.device_get(metrics)
        assert {len(v) for v in metrics.values()} == {12} and bool(np.all(finite))
        rows.append({k: v[:length] for k, v in metrics.items()})
    metrics = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    jax.tree_util.tree_map(np.testing.assert_array_equal, (once[0], once[1], once[3]), jax.device_get((state, metrics, order)))
    assert shared.program(9) == (3, 4) and shared.program(13) == (13, 1) and shared.program(15) == (15, 1)


@pytest.mark.parametrize("make", [lambda: AAE(tiny_aae_config()), lambda: BiGAN(tiny_bigan_config())])
def test_checkpoint_round_trip(tmp_path, make):
    model = make()
    state = model.init(jax.random.PRNGKey(0))
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(5, state, {"model": model.name})
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "ckpt")
    restored, step = ckpt.restore(abstract_like(model.init(jax.random.PRNGKey(1))))
    ckpt.close()
    assert step == 5
    chex.assert_trees_all_equal(state, restored)


def test_checkpoint_of_another_model_is_refused(tmp_path, bars):
    trainer.train(tiny_aae_config(num_steps=10), tmp_path, bars)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="'aae' model"):
        trainer.train(tiny_bigan_config(num_steps=10), tmp_path, bars)


def test_unreadable_newest_checkpoint_falls_back(tmp_path, bars, caplog):
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    ckpt_dir = tmp_path / "checkpoints"
    assert checkpoint_steps(tmp_path) == [20, 40]
    for f in (ckpt_dir / "40" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="aaejax")
    assert aaejax.load(tmp_path).step == 20
    said = [r.getMessage() for r in caplog.records if "checkpoint step 40 is unreadable" in r.getMessage()]
    assert said and all("\n" not in m and len(m) < 400 for m in said)  # one line each, not a TensorStore spec
    # The same command resumes from step 20, moves step 40 aside (orbax would refuse to save
    # step 40 over it) and saves a fresh step 40; the unreadable one is kept, not deleted.
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert (tmp_path / "checkpoints_unreadable" / "40" / "state").is_dir()
    assert aaejax.load(tmp_path).step == 40
    for f in (ckpt_dir / "40" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    for f in (ckpt_dir / "20" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        aaejax.load(tmp_path)


def _clustering(**overrides):
    return tiny_variant("clustering_plus", **overrides)


def _bigan_constant_rate(**overrides):  # a decaying schedule would refuse the changed num_steps
    return tiny_bigan_config(lr_schedule="constant", **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("make_config", [tiny_aae_config, _clustering, _bigan_constant_rate],
                         ids=["aae", "clustering_plus", "bigan_official"])
def test_resume_continues_to_the_same_parameters(tmp_path, bars, make_config):
    """20 steps + 20 more (resumed from the checkpoint) == 40 steps in one go, bit for bit."""
    full = trainer.train(make_config(num_steps=40), tmp_path / "a", bars)
    trainer.train(make_config(num_steps=20), tmp_path / "b", bars)
    resumed = trainer.train(make_config(num_steps=40), tmp_path / "b", bars)
    chex.assert_trees_all_equal(full, resumed)
    chex.assert_trees_all_equal(aaejax.load(tmp_path / "b").state, resumed)


def _tensorboard_events(path):
    """The Event protos of one TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        events.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
        i += 12 + n + 4
    return events


def test_resume_relogs_later_steps_once(tmp_path, bars):
    """Killed after step 40 was logged but before its checkpoint: the resumed run drops the
    metrics after step 20 and tells TensorBoard to purge its events after step 20 (purge_step)."""
    import shutil

    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    shutil.rmtree(tmp_path / "checkpoints" / "40")
    trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert [r["step"] for r in aaejax.run.writers.read_metrics(tmp_path)] == [10, 20, 30, 40]
    first, second = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"), key=os.path.getmtime)
    purge = [e for e in _tensorboard_events(second) if e.HasField("session_log")]
    assert purge and purge[0].session_log.status == purge[0].session_log.START and purge[0].step == 21
    logged = [e.step for e in _tensorboard_events(second) if e.HasField("summary")]
    assert min(logged) == 30 and max(logged) == 40


def test_two_writers_within_one_second_keep_their_own_event_files(tmp_path, monkeypatch):
    """tensorboardX names an event file by the second and opens it with "wb": a second writer on
    the same work dir within that second (a resume in the same process) keeps the first's events."""
    import time

    monkeypatch.setattr(time, "time", lambda: 1764675000.25)  # both writers in the same second
    for step, resume in ((10, 0), (20, 10)):
        writer = aaejax.run.writers.MetricWriter(tmp_path, resume_step=resume)
        writer.write(step, {"loss": float(step)})
        writer.close()
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.1764675000.*"))
    assert len(files) == 2
    logged = sorted(e.step for f in files for e in _tensorboard_events(f) if e.HasField("summary"))
    assert logged == [10, 20]


def test_killed_before_the_first_checkpoint_starts_over_cleanly(tmp_path, bars):
    """Metrics logged before any checkpoint committed (a kill in between) are not kept twice."""
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before the first save committed
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    assert [r["step"] for r in aaejax.run.writers.read_metrics(tmp_path)] == [10, 20]


def test_workdir_with_another_config_is_refused(tmp_path, bars):
    trainer.train(tiny_aae_config(num_steps=10), tmp_path, bars)
    with pytest.raises(ConfigError, match="latent_dim"):
        trainer.train(tiny_aae_config(num_steps=10, latent_dim=3), tmp_path, bars)
    # A long list is cut at six fields and says how many it left out.
    many = dict(latent_dim=3, lr=1e-3, b1=0.9, recon_weight=0.5, adv_weight=0.5, prior_scale=2.0, seed=7,
                batch_size=8)
    found = rundir.config_diff(tmp_path, tiny_aae_config(num_steps=10, **many))
    assert found.count(" -> ") == 6 and found.endswith(" and 2 more"), found


def test_num_steps_may_change_on_resume_only_with_a_constant_learning_rate(tmp_path, bars):
    """A decaying schedule is laid out over num_steps: resuming with another num_steps would jump
    the learning rate, so it is refused; with a constant rate the run just goes on."""
    decaying = dict(lr_schedule="exponential")
    trainer.train(tiny_aae_config(num_steps=10, **decaying), tmp_path / "decay", bars)
    with pytest.raises(ConfigError, match="num_steps: 10 -> 20 .*schedule"):
        trainer.train(tiny_aae_config(num_steps=20, **decaying), tmp_path / "decay", bars)
    assert json.loads((tmp_path / "decay" / "config.json").read_text())["num_steps"] == 10
    assert rundir.config_diff(tmp_path / "decay", tiny_aae_config(num_steps=10, **decaying)) == ""
    trainer.train(tiny_aae_config(num_steps=10), tmp_path / "constant", bars)
    assert rundir.config_diff(tmp_path / "constant", tiny_aae_config(num_steps=20)) == ""


# Fields the AAE's configs gained after commit 86008c2, each taking its default when a saved config lacks it.
ADDED_SINCE_86008C2 = ("phases", "balance_weight", "input_noise", "labelled_recon", "labelled_shift",
                       "consistency_weight", "consistency_shift", "augment_rotation", "init", "d_update", "init_std",
                       "lr_recon", "lr_adv", "lr_supervised", "momentum_recon", "momentum_adv", "momentum_supervised",
                       "lr_drop_epochs", "lr_drop_factor")


def test_saved_config_predating_a_field_gets_the_value_that_reproduces_it(tmp_path):
    """A run saved before a field existed resumes when the field's value is the one that run used,
    and is refused when it is not (semi-supervised now rebuilds and shifts labelled images, with the
    balance and consistency terms; clustering runs sequential phases, input noise, the balance and
    consistency terms)."""
    for variant, differing in (("seed", {"init", "d_update"}),  # the seed became Keras-GAN's program
                               ("semi_supervised_plus", {"labelled_recon", "labelled_shift", "balance_weight",
                                                    "consistency_weight", "augment_rotation"}),
                               ("clustering_plus", {"phases", "input_noise", "balance_weight", "consistency_weight",
                                               "augment_rotation"})):
        config = tiny_variant(variant)
        saved = {k: v for k, v in rundir.config_dict(config).items() if k not in ADDED_SINCE_86008C2}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        found = rundir.config_diff(tmp_path, config)
        assert {part.split(":")[0] for part in found.split(", ") if part} == differing, found


@pytest.mark.parametrize("field,value,match", [
    ("batch_size", 0, "batch_size"), ("num_steps", -1, "num_steps"), ("dataset", "cifar", "dataset"),
    ("model", "vae", "unknown model"), ("adv_weight", -1.0, "adv_weight must be >= 0"), ("prior", "cauchy", "unknown prior"),
    ("lr_schedule", "cosine", "unknown lr_schedule"),
])
def test_bad_config_is_refused_before_any_work(tmp_path, field, value, match):
    config = tiny_aae_config()
    config[field] = value
    with pytest.raises(ConfigError, match=match):
        trainer.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, bars, monkeypatch, retrace):
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    saved = aaejax.load(tmp_path).state
    signed = images.signed
    monkeypatch.setattr(images, "signed", lambda x: signed(x) * jnp.nan)  # every later batch is NaN
    with pytest.raises(trainer.NonFiniteError, match="non-finite .* at step 21; nothing was saved after step 20"):
        trainer.train(tiny_aae_config(num_steps=40), tmp_path, bars)
    assert checkpoint_steps(tmp_path) == [20]
    chex.assert_trees_all_equal(aaejax.load(tmp_path).state, saved)
    assert [r["step"] for r in aaejax.run.writers.read_metrics(tmp_path)] == [10, 20]


def test_overwrite_replaces_a_run_with_another_config(tmp_path, bars):
    trainer.train(tiny_aae_config(num_steps=20), tmp_path, bars)
    (tmp_path / "notes.txt").write_text("mine")  # not a run artifact: must survive
    evaluations = ("eval.json", "eval_20.json", "curve.json")  # evaluate's files of the old run
    for name in evaluations:
        (tmp_path / name).write_text("{}")
    state = trainer.train(tiny_aae_config(num_steps=10, latent_dim=3), tmp_path, bars, overwrite=True)
    assert not [name for name in evaluations if (tmp_path / name).exists()]
    assert int(state.step) == 10  # a fresh run, not a resume
    assert checkpoint_steps(tmp_path) == [10]
    assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == 3
    assert [r["step"] for r in aaejax.run.writers.read_metrics(tmp_path)] == [10]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_skip_nonfinite_updates(tmp_path, bars, monkeypatch, retrace):
    """Batches that make the loss NaN: stop by default; with skip_nonfinite their updates are
    dropped (optax.apply_if_finite), counted, and the run finishes with a finite state."""
    signed = images.signed

    def poisoned(x):  # some batches (by where their first image's bar starts) turn NaN
        return jnp.where(jnp.argmax(x[0].ravel()) % 3 == 0, jnp.nan, signed(x))

    monkeypatch.setattr(images, "signed", poisoned)
    with pytest.raises(trainer.NonFiniteError, match="non-finite .* at step"):
        trainer.train(tiny_aae_config(num_steps=40), tmp_path / "stop", bars)
    state = trainer.train(tiny_aae_config(num_steps=40, skip_nonfinite=True), tmp_path / "skip", bars)
    assert bool(trainer.state_is_finite(state))
    skipped = sum(r["skipped_updates"] for r in aaejax.run.writers.read_metrics(tmp_path / "skip"))
    assert 0 < skipped < 40


def test_skip_nonfinite_keeps_the_batchnorm_statistics_of_a_skipped_update(tmp_path, bars, monkeypatch,
                                                                           retrace):
    """BiGAN: a skipped update keeps the parameters, and the BatchNorm statistics with them (a NaN
    forward pass would otherwise leave NaN statistics and stop the run)."""
    unit, train_step = images.unit, BiGAN.train_step

    def poisoned_step(self, state, batch):  # some batches turn NaN, in the train step only
        bad = jnp.argmax(batch["image"][0].ravel()) % 3 == 0
        monkeypatch.setattr(images, "unit", lambda x: jnp.where(bad, jnp.nan, unit(x)))
        try:
            return train_step(self, state, batch)
        finally:
            monkeypatch.setattr(images, "unit", unit)

    monkeypatch.setattr(BiGAN, "train_step", poisoned_step)
    state = trainer.train(tiny_bigan_config(num_steps=40, skip_nonfinite=True), tmp_path, bars)
    assert bool(trainer.state_is_finite(state))
    skipped = sum(r["skipped_updates"] for r in aaejax.run.writers.read_metrics(tmp_path))
    assert 0 < skipped < 40


@pytest.mark.parametrize("name", ["aae", "bigan"])
def test_cli_end_to_end_on_mock_data(tmp_path, name):
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", "--steps=12", "--seed=3", "--config.log_every=4",
            "--config.sample_every=8", "--config.checkpoint_every=8"] + TINY_FLAGS[name]
    # Whether PyTorch (installed for the tests) was imported, said at exit: nothing of a run needs it.
    said_at_exit = "import atexit, sys\natexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))\n"
    proc = run_cli(f"experiments.{name}", args, tmp_path, prelude=said_at_exit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == "False"  # tensorboardX would import it (2-3 s)
    # It says where its data and devices are, and how long it will take.
    assert re.search(r"^data: mnist from tfds:.* \(\d+ training, \d+ test images\)$", proc.stderr, re.M)
    assert re.search(r"^devices: 1 x cpu \(cpu\)$", proc.stderr, re.M)
    assert f"training {name} ({'seed' if name == 'aae' else 'official'}) for 12 steps" in proc.stderr
    assert re.search(r"^first chunk [\d.]+ s incl. compilation$", proc.stderr, re.M)  # too short a run for an ETA
    assert "dataset_info.json" not in proc.stderr  # no warning about folders that do not exist
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_steps"] == 12 and config["seed"] == 3 and config["model"] == name
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert sorted(p.name for p in (workdir / "samples").glob("*.png")) == [
        "recon_0000008.png", "recon_0000012.png", "samples_0000008.png", "samples_0000012.png"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoint_steps(workdir) == [8, 12]

    model = aaejax.load(workdir)
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    z = model.encode(x)
    chex.assert_shape(z, (5, model.latent_dim))
    chex.assert_trees_all_close(model.encode(x), z)  # deterministic
    as_bytes = np.round(x * 255).astype(np.uint8)  # uint8 images are scaled, not taken as 0..255 floats
    chex.assert_trees_all_close(model.encode(as_bytes), model.encode(as_bytes / np.float32(255)), atol=1e-5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.encode(as_bytes.astype(np.float32))
    for images in (model.decode(z), model.sample(7, seed=1)):
        chex.assert_type(images, jnp.float32)
        assert images.shape[1:] == (28, 28, 1)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    chex.assert_trees_all_close(model.sample(7, seed=1), model.sample(7, seed=1))
    if name == "aae":  # the same command again: nothing to do, and it says so
        again = run_cli(f"experiments.{name}", args, tmp_path)
        assert again.returncode == 0 and "already at step 12 of 12" in again.stderr


@pytest.mark.slow
def test_cli_variant_with_seeds_and_overwrite(tmp_path):
    """A named variant with two vmapped seeds from the command line; a different config on the
    same work dir is refused and the message points to --overwrite (whose effect
    test_overwrite_replaces_a_run_with_another_config checks)."""
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", "--config=experiments/aae.py:semi_supervised_plus", "--steps=4",
            "--config.num_seeds=2", "--config.hidden=(32,32)", "--config.disc_hidden=(16,16)",
            "--config.style_dim=2", "--config.num_labels=10", "--config.batch_size=16",
            "--config.labelled_batch_size=8", "--config.log_every=2"]
    proc = run_cli("experiments.aae", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and len(records[-1]["per_seed"]["supervised_ce"]) == 2
    assert aaejax.load(workdir, seed_index=1).sample(3).shape == (3, 28, 28, 1)
    proc = run_cli("experiments.aae", args + ["--config.style_dim=3"], tmp_path)
    assert proc.returncode != 0 and "style_dim: 2 -> 3" in proc.stderr and "--overwrite" in proc.stderr
    assert json.loads((workdir / "config.json").read_text())["style_dim"] == 2  # untouched


def test_no_host_transfer_inside_a_chunk(bars):
    config = tiny_aae_config()
    model = AAE(config)
    chunk = trainer.make_train_chunk(model, config.batch_size, bars.train_images.shape[0], data_seed=0)
    images, labels = jax.device_put(bars.train_images), jax.device_put(bars.train_labels)
    state = jax.jit(model.init)(jax.random.PRNGKey(0))
    chunk(state, images, labels, length=4)  # compile outside the guard
    state = jax.jit(model.init)(jax.random.PRNGKey(0))
    with jax.transfer_guard("disallow"):
        state, metrics, _ = chunk(state, images, labels, length=4)
        jax.block_until_ready(metrics)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    """A real run is sent SIGTERM mid-training: it checkpoints, exits non-zero, and resumes."""
    import signal
    import time

    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", "--steps=100000", "--config.log_every=5", "--config.sample_every=100000",
            "--config.checkpoint_every=100000"] + TINY_FLAGS["aae"]
    proc = subprocess.Popen([sys.executable, "-c", cli_code("experiments.aae", args)], cwd=REPO,
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "checkpoint saved" in err
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and steps[0] >= 15 and steps[0] % 5 == 0
    assert aaejax.load(workdir).step == steps[0]


def test_unwritable_workdir_is_a_clear_error(tmp_path, bars):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        trainer.train(tiny_aae_config(), blocker / "run", bars)


@pytest.mark.slow
def test_sigkill_mid_save_and_mid_chunk_then_resume_is_bit_identical(tmp_path):
    """Killed twice at seeded points, each time resumed by the same command: first while the save
    of checkpoint k1 is on disk half-done (orbax's temporary folder), then a seeded few ms after
    checkpoint k2 is committed (mid-chunk, so the resume restores k2). The final parameters equal an
    uninterrupted run's, every step logged once."""
    import random
    import signal
    import time

    flags_ = ["--steps=60", "--config.log_every=5", "--config.sample_every=1000",
              "--config.checkpoint_every=10"] + TINY_FLAGS["aae"]
    argv = lambda workdir: [sys.executable, "-c", cli_code("experiments.aae", [f"--workdir={workdir}"] + flags_)]
    run = lambda workdir: subprocess.run(argv(workdir), cwd=REPO, env=cli_env(tmp_path), capture_output=True,
                                         text=True, timeout=300)
    assert run(tmp_path / "full").returncode == 0
    killed = tmp_path / "killed"
    draw = random.Random(20261129)
    k1, delay = draw.choice([10, 20]), draw.uniform(0.0, 0.01)
    k2 = k1 + 20  # each save takes ~0.1 s here, a 10-step chunk ~0.02 s: the kill lands before step 60

    def kill_when(ready, delay=0.0):
        proc = subprocess.Popen(argv(killed), cwd=REPO, env=cli_env(tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not ready():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its kill point"
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    saving = lambda k: (killed / "checkpoints").is_dir() and any(
        p.name.startswith(f"{k}.orbax-checkpoint-tmp") for p in (killed / "checkpoints").iterdir())
    kill_when(lambda: saving(k1))
    assert max(checkpoint_steps(killed), default=0) <= k1
    kill_when(lambda: k2 in checkpoint_steps(killed), delay)
    last = max(checkpoint_steps(killed))
    assert k2 <= last < 60
    done = run(killed)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from step {last} in" in done.stderr  # restored, not started again
    chex.assert_trees_all_equal(aaejax.load(tmp_path / "full").state, aaejax.load(killed).state)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5))  # every logged step once, in order


def test_a_stops_checkpoint_skips_the_deploy_statistics_and_load_computes_them(tmp_path, bars):
    """A stop saves at once (the official BiGAN's statistics take 5 s on 2 cores): its meta says
    deploy_stats: false, and aaejax.load computes exactly the statistics a boundary save holds."""
    config = tiny_bigan_config(num_steps=20)
    trainer.train(config, tmp_path / "run", bars)
    saved = aaejax.load(tmp_path / "run", dataset=bars)
    (tmp_path / "stopped").mkdir()
    run = trainer.Run(config, tmp_path / "stopped", registry.build_model(config), bars)
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", read_only=True)
    raw, _ = ckpt.restore(abstract_like(saved.state), step=20)
    ckpt.close()
    # G's and E's statistics as if never computed (prepare_eval recomputes those; D's are training's).
    raw = raw.replace(nets={**raw.nets, **{n: raw.nets[n].replace(batch_stats=jax.tree_util.tree_map(
        jnp.zeros_like, raw.nets[n].batch_stats)) for n in ("generator", "encoder")}})
    run.save(20, raw, deploy_stats=False)
    run.ckpt.close()
    shutil.copy(tmp_path / "run" / "config.json", tmp_path / "stopped" / "config.json")
    assert Checkpointer(tmp_path / "stopped" / "checkpoints", read_only=True).read_meta(20)["deploy_stats"] is False
    loaded = aaejax.load(tmp_path / "stopped", dataset=bars)
    chex.assert_trees_all_equal(loaded.state.nets, saved.state.nets)


def test_loading_step_0_recreates_the_initial_state_with_its_population_statistics(tmp_path, bars):
    """aaejax.load(dir, step=0) without a step-0 checkpoint: the run's initial weights, and the
    BatchNorm statistics the trainer would compute for them (not Flax's initial 0 / 1)."""
    config = tiny_bigan_config(num_steps=10)
    trainer.train(config, tmp_path, bars)
    loaded = aaejax.load(tmp_path, step=0, dataset=bars)
    model = registry.build_model(config)
    init = model.init(seed_keys(config.seed)[0])
    images_, _ = data_lib.training_examples(bars, config)
    expected = model.prepare_eval(init, jnp.asarray(images_), jax.random.fold_in(seed_keys(config.seed)[3], 0))
    chex.assert_trees_all_close(loaded.state.nets, expected.nets, rtol=1e-5, atol=1e-6)
    mean = loaded.state.nets["encoder"].batch_stats
    assert not all(np.allclose(x, 0) or np.allclose(x, 1) for x in jax.tree_util.tree_leaves(mean))
