"""The one training loop both models share.

A model supplies `init(rng)`, a pure `train_step(state, batch) -> (state, metrics)`,
`prepare_eval`, `encode`, `decode`, `sample` and `reconstruct`; the trainer owns the rest.

Design for speed: the dataset is put on the device once as uint8. `log_every` steps form one
*chunk*, compiled as a single `lax.scan` over the train step with the state donated. Inside the
scan each step gathers its batch on the device from the epoch's permutation, which is derived
from (data seed, epoch) alone -- so the data order survives a resume mid-epoch -- and recomputed
only when a new epoch starts. Logging, sample grids and checkpoints happen between chunks, where
the only host transfer is the chunk's stacked metrics ([K] scalars each).

Scale: with num_seeds > 1 the state has a leading seed axis and the step is vmapped over it
(each model its own data order); parallel.Layout places the seed axis or the batch on the
device mesh, so the same chunk runs on one device or many.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from aaejax import configs
from aaejax import data as data_lib
from aaejax import parallel
from aaejax import writers
from aaejax.checkpoint import Checkpointer, abstract_like
from aaejax.state import ADAMS, SCHEDULES, all_finite

log = logging.getLogger(__name__)

MODELS = {"aae": "aaejax.aae:build", "bigan": "aaejax.bigan:BiGAN"}
# Fields that may change when a run is resumed (they don't change what is learned). num_steps
# only with a constant learning rate: a decaying schedule is laid out over num_steps.
RESUMABLE_FIELDS = ("num_steps", "log_every", "sample_every", "checkpoint_every", "max_to_keep", "keep_steps")
DATA_SPLITS = ("all", "official")
DATA_ORDERS = ("epochs", "stream")


class ConfigError(ValueError):
    pass


class NonFiniteError(FloatingPointError):
    pass


def model_class(name: str):
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(config):
    validate_config(config)
    return model_class(config.model)(config)


def validate_config(config) -> None:
    """Fails before any work on settings that make no sense (one clear line each)."""
    cls = model_class(config.model)
    if config.dataset not in data_lib.DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(data_lib.DATASETS)}")
    if not 1 <= config.batch_size <= data_lib.SPLIT_SIZES["train"]:
        raise ConfigError(f"batch_size must be in 1..{data_lib.SPLIT_SIZES['train']}, got {config.batch_size}")
    if config.num_steps < 0:
        raise ConfigError(f"num_steps must be >= 0, got {config.num_steps}")
    for field in ("log_every", "sample_every", "checkpoint_every", "max_to_keep"):
        if config[field] < 1:
            raise ConfigError(f"{field} must be >= 1, got {config[field]}")
    if config.lr <= 0:
        raise ConfigError(f"lr must be > 0, got {config.lr}")
    if config.lr_schedule not in SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.data_split not in DATA_SPLITS:
        raise ConfigError(f"unknown data_split {config.data_split!r}; choose one of {', '.join(DATA_SPLITS)}")
    if config.data_order not in DATA_ORDERS:
        raise ConfigError(f"unknown data_order {config.data_order!r}; choose one of {', '.join(DATA_ORDERS)}")
    if config.adam not in ADAMS:
        raise ConfigError(f"unknown adam {config.adam!r}; choose one of {', '.join(ADAMS)}")
    if config.lr_decay_every < 0:
        raise ConfigError(f"lr_decay_every must be >= 0, got {config.lr_decay_every}")
    if config.num_seeds < 1:
        raise ConfigError(f"num_seeds must be >= 1, got {config.num_seeds}")
    try:
        parallel.resolve_mode(config, jax.device_count())
    except ValueError as e:
        raise ConfigError(str(e)) from e
    try:
        importlib.import_module(cls.__module__).validate(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def make_train_chunk(model, batch_size: int, num_examples: int, data_seed, labelled=None,
                     labelled_batch_size: int = 0, num_seeds: int = 1, layout=None, data_order: str = "epochs"):
    """Returns jitted `chunk(state, images, labels, length=K) -> (state, metrics [K], finite [])`.

    `finite` says whether every float in the state (params, optimizer and BatchNorm statistics)
    is finite after the chunk. `data_order` (config.data_order): "epochs" walks a fresh
    permutation per epoch, dropping the remainder; "stream" reads the shuffled epochs as one
    stream of ceil(N / batch) batches an epoch. With num_seeds > 1 the state carries a leading seed axis, and
    `data_seed` / `labelled` hold one entry per seed: each model has its own data order and
    labelled subset; the step is vmapped, so metrics are [K, S] and finite is [S]. `layout`
    (parallel.Layout) pins the state's and the batches' shardings on the device mesh.
    """
    steps_per_epoch = num_examples // batch_size
    seeded = num_seeds > 1
    keys = (jnp.stack([jax.random.PRNGKey(int(d)) for d in data_seed]) if seeded
            else jax.random.PRNGKey(int(data_seed)))

    def per_seed(f, in_axes):
        return jax.vmap(f, in_axes) if seeded else f

    perm_fn = per_seed(lambda k, epoch: data_lib.epoch_permutation(k, epoch, num_examples), (0, None))
    index_fn = per_seed(lambda perm, pos: data_lib.batch_indices(perm, pos, batch_size), (0, None))
    # Labelled batches from their own stream, apart from the epoch keys.
    labelled_fn = per_seed(lambda k, subset, step: data_lib.labelled_batch_indices(
        jax.random.fold_in(jax.random.fold_in(k, 2**31 - 1), step), subset, labelled_batch_size), (0, 0, None))
    step_fn = per_seed(model.train_step, (0, 0))
    finite_fn = per_seed(state_is_finite, 0)

    stream = data_order == "stream"
    stream_fn = per_seed(lambda perm, nxt, start: data_lib.stream_indices(perm, nxt, start, batch_size), (0, 0, None))

    def stream_perms(epoch):
        return perm_fn(keys, epoch), perm_fn(keys, epoch + 1)

    def batch_indices(perm, step):
        """(indices of this step's batch, the carried permutation(s))."""
        if stream:  # perm = (order of the position's epoch, order of the next one), epoch
            (cur, nxt, carried), (epoch, start) = perm, jnp.divmod(step * batch_size, num_examples)
            cur, nxt = jax.lax.cond(epoch == carried, lambda: (cur, nxt), lambda: (nxt, perm_fn(keys, epoch + 1)))
            return stream_fn(cur, nxt, start), (cur, nxt, epoch)
        epoch, pos = jnp.divmod(step, steps_per_epoch)
        perm = jax.lax.cond(pos == 0, lambda: perm_fn(keys, epoch), lambda: perm)
        return index_fn(perm, pos), perm

    def chunk(state, images, labels, length: int):
        def body(carry, _):
            state, perm, step = carry
            idx, perm = batch_indices(perm, step)
            batch = {"image": images[idx], "label": labels[idx]}
            if labelled is not None:  # semi-supervised: a batch from the labelled subset too
                li = labelled_fn(keys, labelled, step)
                batch.update(labelled_image=images[li], labelled_label=labels[li])
            if layout is not None:
                batch = layout.constrain_batch(batch)
            state, metrics = step_fn(state, batch)
            if layout is not None:
                state = layout.constrain_state(state)
            return (state, perm, step + 1), metrics

        step0 = state.step[0] if seeded else state.step  # all seeds step together
        if stream:
            epoch0 = step0 * batch_size // num_examples
            perm = (*stream_perms(epoch0), epoch0)
        else:
            perm = perm_fn(keys, step0 // steps_per_epoch)
        (state, _, _), metrics = jax.lax.scan(body, (state, perm, step0), length=length)
        return state, metrics, finite_fn(state)

    return jax.jit(chunk, static_argnames="length", donate_argnums=0)


def training_examples(dataset: data_lib.Dataset, config) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a run trains on: all of the training split, or (data_split
    "official") the official BiGAN code's 50 000 of them."""
    if config.data_split == "official":
        idx, _ = data_lib.official_split(len(dataset.train_images))
        return dataset.train_images[idx], dataset.train_labels[idx]
    return dataset.train_images, dataset.train_labels


def state_is_finite(state) -> jax.Array:
    return all_finite(state.nets)


def config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


# What a run writes into its work dir (removed by an explicit overwrite, nothing else is).
RUN_ARTIFACTS = ("checkpoints", "checkpoints_unreadable", "samples", "tensorboard", "eval", "metrics.jsonl", "eval.json", "config.json")


def workdir_config_diff(workdir: Path, config) -> str:
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
    if "num_steps" in diff:
        text += (f" (the {new.get('lr_schedule')!r} learning-rate schedule is laid out over num_steps, "
                 f"so the run must resume with the num_steps it started with)")
    return text


def delete_run(workdir: Path) -> None:
    for name in RUN_ARTIFACTS:
        target = workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


class _Progress:
    """A one-line progress bar with ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.tty, self.enabled = total, sys.stderr.isatty(), enabled

    def update(self, step: int, rate: float, scalars: dict) -> None:
        if not self.enabled:
            return
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if not k.startswith("lr"))
        line = f"step {step}/{self.total} [{100 * step / max(self.total, 1):3.0f}%] {rate:.1f} steps/s ETA {eta_s} {shown}"
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
            sys.stderr.flush()
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and self.enabled:
            sys.stderr.write("\n")


class _StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop at the next chunk boundary, where the state is whole
    and gets checkpointed; a second signal interrupts at once."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum
        log.warning("signal %d: stopping after the current chunk (again to stop now)", signum)

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(config, workdir: str | Path, dataset: data_lib.Dataset | None = None, overwrite: bool = False):
    """Trains `config.model` to `config.num_steps`, resuming from `workdir` when it has a run of
    the same config (a different one is refused, or deleted first when `overwrite`).

    Returns the final TrainState (on the device).
    """
    model = build_model(config)
    workdir = Path(workdir)
    # Several processes (multi-host): all train; process 0 alone writes the run's files (orbax
    # coordinates the checkpoints itself).
    primary = jax.process_index() == 0
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{jax.process_index()}.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"work dir {workdir} is not writable: {e}") from e
    diff = workdir_config_diff(workdir, config)
    if diff and not overwrite:
        raise ConfigError(f"{workdir} holds a run with a different config ({diff}); use a fresh "
                          f"--workdir, or --overwrite to delete that run and start over")
    dataset = dataset or data_lib.load(config.dataset, config.data_dir or None)
    if diff and primary:  # deleted only once the data has loaded, so a data error loses nothing
        log.warning("--overwrite: deleting the run in %s (%s)", workdir, diff)
        delete_run(workdir)
    parallel.sync("aaejax: work dir ready")

    layout = parallel.Layout(config)
    num_seeds = int(config.num_seeds)
    train_images, train_labels = training_examples(dataset, config)
    images = layout.put_replicated(train_images)  # uint8 on every device, once
    labels = layout.put_replicated(train_labels)
    fixed_inputs = jnp.asarray(dataset.test_images[:64], jnp.float32) / 255.0
    fixed_labels = jnp.asarray(dataset.test_labels[:64])
    # Model i of a multi-seed run draws everything from seed + i, as a single run with that seed would.
    keys = [jax.random.split(jax.random.PRNGKey(config.seed + i), 4) for i in range(num_seeds)]
    init_keys, data_seed_keys, sample_keys, eval_keys = (jnp.stack(k) for k in zip(*keys))
    data_seeds = [int(jax.random.randint(k, (), 0, 2**31 - 1)) for k in data_seed_keys]
    labelled = None
    if config.get("num_labels", 0):
        labelled = np.stack([data_lib.labelled_subset(train_labels, config.num_labels,
                                                      config.num_classes, config.seed + i) for i in range(num_seeds)])

    # The init, vmapped over seeds: one compiled (and cached) call, not hundreds of eager ops.
    if num_seeds == 1:
        state = jax.jit(model.init, out_shardings=layout.state)(init_keys[0])
        data_seed, labelled = data_seeds[0], None if labelled is None else jnp.asarray(labelled[0])
        prepare = jax.jit(model.prepare_eval)
        eval_keys = eval_keys[0]
    else:
        state = jax.jit(jax.vmap(model.init), out_shardings=layout.state)(init_keys)
        data_seed, labelled = data_seeds, None if labelled is None else jnp.asarray(labelled)
        prepare = jax.jit(jax.vmap(model.prepare_eval, in_axes=(0, None, 0)))
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=config.max_to_keep, keep_steps=config.keep_steps)

    def check_meta(meta):
        if meta.get("model") != config.model:
            raise ConfigError(f"checkpoint in {workdir} is a {meta.get('model')!r} model, not {config.model!r}")

    restored, start = ckpt.restore(abstract_like(state), check_meta)
    if restored is not None:
        state = restored
        log.info("resumed from step %d in %s", start, workdir)
        # Newer steps were unreadable: move them aside, or saving those steps again would fail.
        ckpt.set_aside([s for s in ckpt.steps() if s > start], move=primary)
    if primary:  # written only now that the work dir's checkpoint is known to be this model's
        (workdir / "config.json").write_text(json.dumps(config_dict(config), indent=2, sort_keys=True))
        writers.truncate_metrics(workdir, start if restored is not None else 0)
    # Metrics of steps after the checkpoint were dropped above: those steps are trained (and
    # logged) again; with no checkpoint -- a run killed before its first save committed -- all are.
    step = int(state.step if num_seeds == 1 else state.step[0])

    chunk_fn = make_train_chunk(model, config.batch_size, images.shape[0], data_seed, labelled,
                                config.get("labelled_batch_size", 0), num_seeds, layout, config.data_order)
    recon_fn = jax.jit(model.reconstruct)
    sample_fn = jax.jit(model.sample, static_argnums=2)
    fold_in = jax.vmap(jax.random.fold_in, (0, None)) if num_seeds > 1 else jax.random.fold_in
    metrics_out = writers.MetricWriter(workdir, enabled=primary, resume_step=step)
    progress = _Progress(config.num_steps, enabled=primary)

    def meta():
        return {"model": config.model, "step": step, "num_seeds": num_seeds, "config": config_dict(config)}

    def save_eval_state(s):
        # BatchNorm population statistics (BiGAN) are recomputed before every save and grid; the
        # training steps use batch statistics, so this does not change what is learned.
        return prepare(s, images, fold_in(eval_keys, step))

    def write_samples(s):  # of the first model when there are several
        s = s if num_seeds == 1 else jax.tree_util.tree_map(lambda x: x[0], s)
        recon = np.asarray(recon_fn(s, fixed_inputs, fixed_labels))
        pairs = writers.side_by_side(np.asarray(fixed_inputs), recon)
        metrics_out.image("recon", step, writers.image_grid(pairs, ncols=8))
        samples = np.asarray(sample_fn(s, sample_keys[0], 64))
        metrics_out.image("samples", step, writers.image_grid(samples, ncols=8))

    # Several processes: every one gathers the (global) metrics, so all take the same decisions.
    fetch = jax.device_get if jax.process_count() == 1 else functools.partial(
        multihost_utils.process_allgather, tiled=True)

    def stop_requested(stop) -> bool:
        """Whether any process got SIGINT/SIGTERM: all stop (and save) at the same boundary, since
        the save is collective; a signal that reached only some processes would hang the rest."""
        if jax.process_count() == 1:
            return stop.signum is not None
        flags = multihost_utils.process_allgather(np.int32(stop.signum is not None))
        return bool(np.any(flags))

    def finish(pending, step):
        """Waits for a dispatched chunk; returns (metrics on host, an error message or None).

        Non-finite metrics stop the run unless config.skip_nonfinite (then those updates were
        skipped by the optimizer); a non-finite state always does.
        """
        metrics, finite = fetch(pending[1:])  # the chunk's only host transfer
        kept = f"nothing was saved after step {step}" + (" (last checkpoint kept)" if ckpt.steps() else "")
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad and not config.skip_nonfinite:
            where = np.argwhere(~np.isfinite(metrics[bad[0]]))[0]  # (step[, seed])
            seed = f" (seed index {where[1]})" if len(where) > 1 else ""
            return metrics, f"non-finite {', '.join(bad)} at step {step + where[0] + 1}{seed}; {kept}"
        if not np.all(finite):
            seeds = f" (seed indices {np.flatnonzero(~np.asarray(finite)).tolist()})" if num_seeds > 1 else ""
            return metrics, (f"the training state became non-finite between steps {step} and "
                             f"{step + len(next(iter(metrics.values())))}{seeds}; {kept}")
        return metrics, None

    keep_steps = sorted(int(k) for k in config.keep_steps)
    t_start, compile_s, pending = time.perf_counter(), None, None
    stop = _StopOnSignal().__enter__()
    try:
        while step < config.num_steps:
            length = min(config.log_every, config.num_steps - step, *(k - step for k in keep_steps if k > step))
            t0 = time.perf_counter()
            pending = chunk_fn(state, images, labels, length=length)  # `state` is donated here
            metrics, error = finish(pending, step)
            if error:
                pending = None
                raise NonFiniteError(error)
            dt = time.perf_counter() - t0
            compile_s = dt if compile_s is None else compile_s
            prev_step, (state, pending), step = step, (pending[0], None), step + length
            scalars = {k: float(np.nanmean(v)) for k, v in metrics.items()}
            if config.skip_nonfinite:
                rows = np.stack([~np.isfinite(v) for v in metrics.values()]).any(axis=0)
                scalars["skipped_updates"] = float(rows.sum())  # in this chunk
            scalars["steps_per_sec"] = length / dt
            per_seed = None
            if num_seeds > 1:  # means over seeds above; each model's own in the JSON line
                scalars["model_steps_per_sec"] = num_seeds * length / dt
                per_seed = {k: np.nanmean(v, axis=0).tolist() for k, v in metrics.items()}
            metrics_out.write(step, scalars, per_seed)
            progress.update(step, length / dt, scalars)
            last = step == config.num_steps
            want_samples = step // config.sample_every > prev_step // config.sample_every or last
            want_ckpt = step // config.checkpoint_every > prev_step // config.checkpoint_every or last or step in keep_steps
            if want_samples or want_ckpt:
                state = save_eval_state(state)  # once per boundary, shared by grid and checkpoint
            if want_samples:
                write_samples(state)
            if want_ckpt:
                ckpt.save(step, state, meta())
            if stop_requested(stop):
                if step not in ckpt.steps():
                    ckpt.save(step, save_eval_state(state), meta())
                log.warning("stopped by signal %s at step %d; checkpoint saved", stop.signum, step)
                raise KeyboardInterrupt(f"signal {stop.signum}")
    except KeyboardInterrupt:
        progress.close()
        if pending is not None:  # interrupted while a chunk ran: its input state is donated, so
            _, error = finish(pending, step)  # finish it and keep its result if it is finite
            if error is None:
                state, step = pending[0], int(np.ravel(pending[0].step)[0])
        if not any(x.is_deleted() for x in jax.tree_util.tree_leaves(state)) and step not in ckpt.steps():
            log.warning("interrupted: saving a checkpoint at step %d", step)
            ckpt.save(step, save_eval_state(state), meta())
        raise
    finally:
        stop.__exit__()
        ckpt.close()
        metrics_out.close()
    progress.close()
    total = time.perf_counter() - t_start
    if step and config.num_steps:
        log.info("trained to step %d in %.1f s (first chunk incl. compile %.1f s)", step, total, compile_s or 0)
    return state
