"""The one training loop every model shares (the model protocol: aaejax/models/protocol.py).

Design for speed: the dataset is put on the device once as uint8. Many steps form one *chunk*,
one compiled call with the state donated (ChunkPlan says how many; a run compiles one program for
all of its lengths, TrainChunk). Inside it each step gathers its batch on the device
(aaejax/data/batching.py); the order is derived from
(data seed, epoch) alone, so it survives a resume mid-epoch. Logging, sample grids and
checkpoints happen between chunks, where the only host transfer is the chunk's stacked metrics.

Scale: with num_seeds > 1 the state has a leading seed axis and the step is vmapped over it
(each model its own data order and labelled subset, `Seeds`); parallel.Layout places the seed
axis or the batch on the device mesh, so the same chunk runs on one device or many.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from aaejax.data import batching, images
from aaejax.eval import metrics as eval_metrics
from aaejax.run import files, parallel, rundir, writers
from aaejax.models import protocol, registry
from aaejax.data import datasets as data_lib
from aaejax.run.checkpoint import Checkpointer, abstract_like
from aaejax.configs import ConfigError  # noqa: F401 - raised by train(); importable from here too
from aaejax.run.console import Progress, StopOnSignal, duration
from aaejax.models.state import all_finite, has_batch_stats, seed_keys

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    pass


class Seeds:
    """The seed axis: num_seeds independent models trained at once. With one seed there is no
    axis at all (so single-seed states, checkpoints and compiled code are the plain ones)."""

    def __init__(self, n: int):
        self.n = n

    def map(self, f, in_axes=0):
        return jax.vmap(f, in_axes) if self.n > 1 else f

    def pick(self, values):
        """A per-seed list as the state carries it: stacked, or the only entry."""
        return jnp.stack(values) if self.n > 1 else values[0]

    def first(self, tree):
        return jax.tree_util.tree_map(lambda x: x[0], tree) if self.n > 1 else tree


@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """What a compiled chunk is specialised on: its static argument. Hashable (the model and the
    layout compare by value), so every run of an equal spec in one process shares one trace."""

    model: Any
    batch_size: int
    num_examples: int
    num_seeds: int = 1
    stream_sizes: tuple[tuple[str, int], ...] = ()  # (name, batch size) of model.labelled_streams
    layout: parallel.Layout | None = None
    data_order: str = "epochs"


@dataclasses.dataclass(frozen=True, eq=False)
class TrainChunk:
    """`chunk(state, images, labels, length=K) -> (state, metrics [K], finite [])`: the jitted
    `train_chunk` with a run's data keys and labelled subsets, which are its arguments, not
    constants of the program, so another seed finds the same compiled program in JAX's
    persistent cache. The loop uses `carried`, which also takes and returns the data order
    (`order_at`): a chunk then computes an epoch's permutation only where an epoch starts, not
    again at its own start (a sort of the dataset: 26 ms on 2 CPU cores, more than a fast
    device's chunk).

    `unit`, `capacity` (the loop's ChunkPlan): a length that is a multiple of `unit`, up to
    `capacity` units, runs in one program that takes the number of units as an argument, so a
    run compiles one program, not one per length; its metrics have capacity * unit rows, the
    first `length` of them the steps'. Other lengths (and every length when `unit` is 0) get a
    program of their own, whose metrics are [length]."""

    spec: ChunkSpec
    keys: jax.Array
    subsets: dict
    unit: int = 0
    capacity: int = 1

    def program(self, length: int) -> tuple[int, int]:
        """(unit, capacity) of the program that runs `length` steps: length // unit units of it."""
        if self.unit and length % self.unit == 0 and length <= self.unit * self.capacity:
            return self.unit, self.capacity
        return length, 1

    def order_at(self, state):
        """The data order carried into a chunk that starts at the state's step."""
        return first_order(state, keys=self.keys, spec=self.spec)

    def _arguments(self, length: int) -> tuple[int, dict]:
        """train_chunk's units, and its other arguments, for a chunk of `length` steps."""
        unit, capacity = self.program(length)
        return length // unit, dict(unit=unit, capacity=capacity, keys=self.keys, subsets=self.subsets, spec=self.spec)

    def carried(self, state, order, images, labels, length: int):
        """`(state, order)` -> (state, metrics [R >= K], finite [], order); both inputs are donated."""
        units, kwargs = self._arguments(length)
        return train_chunk(state, order, images, labels, units, **kwargs)

    def __call__(self, state, images, labels, length: int):
        return self.carried(state, self.order_at(state), images, labels, length)[:3]

    def compile(self, state, images, labels, length: int):
        """Compiled ahead of time (`make bench` times it): `(state, images, labels)` -> as a call."""
        units, kwargs = self._arguments(length)
        compiled = train_chunk.lower(state, self.order_at(state), images, labels, units, **kwargs).compile()
        return lambda state, images, labels: compiled(state, self.order_at(state), images, labels, units,
                                                      keys=self.keys, subsets=self.subsets)[:3]


def make_train_chunk(model, batch_size: int, num_examples: int, data_seed, streams=None, num_seeds: int = 1,
                     layout=None, data_order: str = "epochs", unit: int = 0, capacity: int = 1) -> TrainChunk:
    """A run's chunk of training steps (TrainChunk).

    `finite` says whether every float in the state is finite after the chunk. `data_order`:
    see aaejax/data/batching.py. `streams` ({name: (indices, batch size)}, model.labelled_streams)
    add batch[f"{name}_image"] / [f"{name}_label"] drawn with replacement from those indices,
    each from its own key stream. With num_seeds > 1, `data_seed` and the streams' indices hold
    one entry per seed and metrics are [K, S], finite [S]. `layout` (parallel.Layout) pins the
    state's and the batches' shardings on the device mesh. `unit`, `capacity`: see TrainChunk.
    """
    seeds, streams = Seeds(num_seeds), streams or {}
    spec = ChunkSpec(model, batch_size, num_examples, num_seeds, tuple((n, size) for n, (_, size) in streams.items()),
                     layout, data_order)
    place = jnp.asarray if layout is None else layout.put_replicated  # as the images: on every device
    keys = place(seeds.pick([jax.random.PRNGKey(int(d)) for d in np.atleast_1d(data_seed)]))
    subsets = {name: place(idx) for name, (idx, _) in streams.items()}
    return TrainChunk(spec, keys, subsets, unit, capacity)


class _Order:
    """How a chunk's data order is made and read (aaejax/data/batching.py): the carried order is
    the current epoch's permutation; for "stream", (that epoch's, the next one's, the epoch); for
    orders that draw each batch on its own, nothing (a dummy scalar)."""

    def __init__(self, keys, spec: ChunkSpec):
        seeds, n, b = Seeds(spec.num_seeds), spec.num_examples, spec.batch_size
        self.keys, self.n, self.b, self.kind = keys, n, b, spec.data_order
        self.steps_per_epoch = n // b
        self.perm_fn = seeds.map(lambda k, epoch: batching.epoch_permutation(k, epoch, n), (0, None))
        self.index_fn = seeds.map(lambda perm, pos: batching.batch_indices(perm, pos, b), (0, None))
        self.stream_fn = seeds.map(lambda perm, nxt, start: batching.stream_indices(perm, nxt, start, b), (0, 0, None))
        self.independent_fn = seeds.map(lambda k, step: batching.independent_indices(k, step, n, b, self.kind),
                                        (0, None))

    def at(self, step):
        """The carried order at `step` (before its batch)."""
        if self.kind in ("random_subsets", "with_replacement"):
            return jnp.zeros((), jnp.int32)
        if self.kind == "stream":
            epoch = step * self.b // self.n
            return self.perm_fn(self.keys, epoch), self.perm_fn(self.keys, epoch + 1), epoch
        return self.perm_fn(self.keys, step // self.steps_per_epoch)

    def batch(self, order, step):
        """(indices of this step's batch, the order carried on)."""
        if self.kind in ("random_subsets", "with_replacement"):
            return self.independent_fn(self.keys, step), order
        if self.kind == "stream":  # positions past the epoch's end read the next epoch's order
            (cur, nxt, carried), (epoch, start) = order, jnp.divmod(step * self.b, self.n)
            cur, nxt = jax.lax.cond(epoch == carried, lambda: (cur, nxt),
                                    lambda: (nxt, self.perm_fn(self.keys, epoch + 1)))
            return self.stream_fn(cur, nxt, start), (cur, nxt, epoch)
        epoch, pos = jnp.divmod(step, self.steps_per_epoch)
        order = jax.lax.cond(pos == 0, lambda: self.perm_fn(self.keys, epoch), lambda: order)
        return self.index_fn(order, pos), order


def _step_of(state, spec: ChunkSpec):
    return state.step[0] if spec.num_seeds > 1 else state.step  # all seeds step together


@functools.partial(jax.jit, static_argnames="spec")
def first_order(state, *, keys, spec: ChunkSpec):
    """The data order carried into a chunk that starts at the state's step."""
    order = _Order(keys, spec).at(_step_of(state, spec))
    return order if spec.layout is None else spec.layout.constrain_order(order)


@functools.partial(jax.jit, static_argnames=("unit", "capacity", "spec"), donate_argnums=(0, 1))
def train_chunk(state, order, images, labels, units, *, unit: int, capacity: int, keys, subsets, spec: ChunkSpec):
    """`units` (<= capacity) x `unit` train steps, each gathering its batch on the device; `order`
    (first_order, or the previous chunk's) is carried through and returned. The steps of a unit
    are one `lax.scan`; units run in a loop of that many turns (with capacity 1: the scan alone,
    `units` is 1), writing their metrics into [capacity, unit] rows. A fast device waits for the
    loop's test once a unit, not once a step."""
    seeds, layout, data = Seeds(spec.num_seeds), spec.layout, _Order(keys, spec)
    extra_fns = {name: seeds.map(lambda k, subset, step, i=i, size=size: batching.subset_batch_indices(
        jax.random.fold_in(jax.random.fold_in(k, 2**31 - 1 - i), step), subset, size), (0, 0, None))
        for i, (name, size) in enumerate(spec.stream_sizes)}
    step_fn, finite_fn = functools.partial(_train_steps, spec=spec), seeds.map(state_is_finite)

    def body(carry, _):
        state, order, step = carry
        idx, order = data.batch(order, step)
        batch = {"image": images[idx], "label": labels[idx]}
        for name, fn in extra_fns.items():
            extra = fn(keys, subsets[name], step)
            batch.update({f"{name}_image": images[extra], f"{name}_label": labels[extra]})
        if layout is not None:
            batch = layout.constrain_batch(batch)
        state, metrics = step_fn(state, batch)
        if layout is not None:
            state = layout.constrain_state(state)
        return (state, order, step + 1), metrics

    def run_unit(carry):
        return jax.lax.scan(body, carry, length=unit)

    carry = (state, order, _step_of(state, spec))
    if capacity == 1:
        (state, order, _), metrics = run_unit(carry)
    else:
        rows = jax.tree_util.tree_map(lambda m: jnp.zeros((capacity, *m.shape), m.dtype),
                                      jax.eval_shape(run_unit, carry)[1])

        def turn(i, loop):
            carry, rows = run_unit(loop[0])
            return carry, jax.tree_util.tree_map(lambda r, m: jax.lax.dynamic_update_index_in_dim(r, m, i, 0),
                                                 loop[1], rows)

        (state, order, _), rows = jax.lax.fori_loop(0, units, turn, (carry, rows))
        metrics = jax.tree_util.tree_map(lambda r: r.reshape(capacity * unit, *r.shape[2:]), rows)
    if layout is not None:
        order = layout.constrain_order(order)
    return state, metrics, finite_fn(state), order


@functools.partial(jax.jit, static_argnames="spec")
def _train_steps(state, batch, *, spec: ChunkSpec):
    """One train step of each of the run's models. Its own jit so that it is traced once, not
    once per chunk program (XLA inlines it: the same program)."""
    return Seeds(spec.num_seeds).map(spec.model.train_step, (0, 0))(state, batch)


@functools.partial(jax.jit, static_argnames=("model", "num_seeds", "layout"))
def init_states(keys: jax.Array, *, model, num_seeds: int, layout: parallel.Layout):
    """Fresh states of a run's models (keys [S], or one key without a seed axis), placed as the
    layout says."""
    return layout.constrain_state(Seeds(num_seeds).map(model.init)(keys))


@functools.partial(jax.jit, static_argnames=("model", "num_seeds"))
def curves(state, data: dict, keys: jax.Array, *, model, num_seeds: int) -> dict:
    """model.curve of each of a run's models: {name: [] or [S]}."""
    return Seeds(num_seeds).map(model.curve, (0, None, 0))(state, data, keys)


@functools.partial(jax.jit, static_argnames=("model", "num_seeds"))
def prepare_evals(state, train_images: jax.Array, keys: jax.Array, *, model, num_seeds: int):
    """model.prepare_eval of each of a run's models."""
    return Seeds(num_seeds).map(model.prepare_eval, (0, None, 0))(state, train_images, keys)


def stacked_streams(model, train_labels: np.ndarray, seeds: list[int]) -> dict:
    """model.labelled_streams of each seed ({name: (indices, batch size)}), the indices stacked on
    a leading seed axis when there are several seeds: make_train_chunk's `streams`."""
    per_seed = [model.labelled_streams(train_labels, s) for s in seeds]
    return {name: (np.stack([p[name][0] for p in per_seed]) if len(seeds) > 1 else per_seed[0][name][0], size)
            for name, (_, size) in per_seed[0].items()}


@jax.jit
def snapshot(state):
    """A copy of `state` in new device buffers (`copy`, not forwarded), which a save can read
    while the next chunk, which donates `state`, runs."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), state)


def state_is_finite(state) -> jax.Array:
    return all_finite(state.nets)


def _open_workdir(config, workdir: Path, dataset, overwrite: bool, primary: bool) -> data_lib.Dataset:
    """Checks the (locked) work dir holds no run of another config unless `overwrite`, loads the
    data, and only then deletes an overwritten run: a data error loses nothing."""
    diff = rundir.config_diff(workdir, config)
    if diff and not overwrite:
        raise ConfigError(f"{workdir} holds a run with a different config ({diff}); use a fresh "
                          f"--workdir, or --overwrite to delete that run and start over")
    dataset = dataset or data_lib.load(config.dataset, config.data_dir or None, config.data_mirror or None)
    if diff and primary:
        log.warning("--overwrite: deleting the run in %s (%s)", workdir, diff)
        rundir.delete_run(workdir)
    parallel.sync("aaejax: work dir ready")
    return dataset


class Run:
    """One run's data on the device, its keys and files: checkpoints, metrics, sample grids.

    Model i of a multi-seed run draws everything from seed + i, as a single run with that seed
    would. Several processes (multi-host): all train; process 0 alone writes the run's files
    (orbax coordinates the checkpoints itself)."""

    def __init__(self, config, workdir: Path, model, dataset: data_lib.Dataset):
        self.config, self.workdir, self.model = config, workdir, model
        self.primary = jax.process_index() == 0
        self.seeds, self.layout = Seeds(int(config.num_seeds)), parallel.Layout(config)
        train_images, train_labels = data_lib.training_examples(dataset, config)
        self.images = self.layout.put_replicated(train_images)  # uint8 on every device, once
        self.labels = self.layout.put_replicated(train_labels)
        self.fixed_inputs = images.unit(jnp.asarray(dataset.test_images[:64]))
        self.fixed_labels = jnp.asarray(dataset.test_labels[:64])
        keys = [seed_keys(config.seed + i) for i in range(self.seeds.n)]
        init_keys, data_keys, self.sample_keys, eval_keys = (jnp.stack(k) for k in zip(*keys))
        self.init_keys, self.eval_keys = self.seeds.pick(list(init_keys)), self.seeds.pick(list(eval_keys))
        self.data_seeds = [int(jax.random.randint(k, (), 0, 2**31 - 1)) for k in data_keys]
        self.streams = stacked_streams(model, train_labels, [config.seed + i for i in range(self.seeds.n)])
        # The model's paper metric every eval_every steps, on held-out data put on the device once.
        self.curve_data = eval_metrics.heldout_data(dataset, config) if config.eval_every and hasattr(model, "curve") \
            else None
        self.ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=config.max_to_keep, keep_steps=config.keep_steps)
        self.writer: writers.MetricWriter | None = None  # opened by initial_state, at the step it restores
        self.last_save = time.perf_counter()
        self.boundary_kinds: set[str] = set()  # what boundaries did so far: samples, checkpoint, eval
        self.fetch = jax.device_get if jax.process_count() == 1 else functools.partial(
            multihost_utils.process_allgather, tiled=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            self.ckpt.close()
            if self.writer is not None:
                self.writer.close()
        except files.WriteError:
            if exc_type is None:  # else the error already on its way is the one to report
                raise
        return False

    def write_failure(self, error: files.WriteError, step: int) -> files.WriteError:
        """The one line a failed write ends the run with: what, at which step, where, the free
        space there, the last intact checkpoint, and what to do."""
        steps = self.ckpt.steps()
        kept = f"the last intact checkpoint is step {steps[-1]}" if steps else "no checkpoint was saved yet"
        what = error.what or "a checkpoint"
        return files.WriteError(files.failure_line(what, error.path, error.reason, f" at step {step}", kept),
                                error.path, what)

    def initial_state(self):
        """(state, step): the newest readable checkpoint of this model, else a fresh init. Writes
        config.json (now that the work dir's checkpoints are known to be this model's) and drops
        metrics logged after the restored step (those steps are trained, and logged, again)."""
        config = self.config
        state = init_states(self.init_keys, model=self.model, num_seeds=self.seeds.n, layout=self.layout)

        def check_meta(meta):
            if meta.get("model") != config.model:
                raise ConfigError(f"checkpoint in {self.workdir} is a {meta.get('model')!r} model, not {config.model!r}")

        restored, start = self.ckpt.restore(abstract_like(state), check_meta)
        if restored is not None:
            state = restored
            log.info("resumed from step %d in %s", start, self.workdir)
            # Newer steps were unreadable: move them aside, or saving those steps again would fail.
            self.ckpt.set_aside([s for s in self.ckpt.steps() if s > start], move=self.primary)
        if self.primary:
            rundir.write_config(self.workdir, config)
            writers.truncate_metrics(self.workdir, start if restored is not None else 0)
        step = int(state.step if self.seeds.n == 1 else state.step[0])
        self.writer = writers.MetricWriter(self.workdir, enabled=self.primary, resume_step=step)
        return state, step

    def chunk_fn(self, plan: ChunkPlan):
        """The run's TrainChunk, with the plan's shared program (ChunkPlan.shared_program)."""
        c = self.config
        return make_train_chunk(self.model, c.batch_size, self.images.shape[0], self.seeds.pick(self.data_seeds),
                                self.streams, self.seeds.n, self.layout, c.data_order, *plan.shared_program)

    def eval_state(self, state, step: int):
        """BatchNorm population statistics (BiGAN), recomputed before every save and grid; the
        training steps use batch statistics, so this does not change what is learned."""
        return prepare_evals(state, self.images, self.eval_keys_at(step), model=self.model, num_seeds=self.seeds.n)

    def eval_keys_at(self, step: int) -> jax.Array:
        """Each model's evaluation key at `step` (deploy statistics, the curve): fold_in(eval key, step)."""
        return self.seeds.map(jax.random.fold_in, (0, None))(self.eval_keys, step)

    def curve(self, step: int, state) -> dict:
        """{eval_<name>: value [] or per seed [S]} of model.curve, on the host."""
        out = self.fetch(curves(state, self.curve_data, self.eval_keys_at(step), model=self.model, num_seeds=self.seeds.n))
        return {f"eval_{k}": np.asarray(v) for k, v in out.items()}

    def seconds_since_save(self) -> float:
        """Since the run's last checkpoint was saved (or since it started)."""
        return time.perf_counter() - self.last_save

    def save(self, step: int, state, deploy_stats: bool = True) -> None:
        """Saves `state`; deploy_stats=False: its BatchNorm population statistics were not
        computed (eval_state), so the meta says so and aaejax.load computes them."""
        self.last_save = time.perf_counter()
        meta = {"model": self.config.model, "step": step, "num_seeds": self.seeds.n,
                "config": rundir.config_dict(self.config)}
        if not deploy_stats and has_batch_stats(state):
            meta["deploy_stats"] = False
        self.ckpt.save(step, state, meta)

    def sample_images(self, state) -> tuple:
        """(reconstructions of 64 test images, 64 prior samples) of the first model, on the device
        (dispatched, not waited for)."""
        s = self.seeds.first(state)
        return (protocol.reconstruct(s, self.fixed_inputs, self.fixed_labels, model=self.model),
                protocol.sample(s, self.sample_keys[0], 64, model=self.model))

    def write_samples(self, step: int, images_) -> None:
        """Writes sample_images' grids: test inputs over their reconstructions, and the samples."""
        recon, samples = (np.asarray(x) for x in images_)
        self.writer.image("recon", step, writers.image_grid(writers.side_by_side(np.asarray(self.fixed_inputs), recon),
                                                            ncols=8))
        self.writer.image("samples", step, writers.image_grid(samples, ncols=8))

    def finish(self, pending, step: int, length: int):
        """Waits for a dispatched chunk of `length` steps from `step`; returns (its metrics on the
        host, [length], an error message or None).

        Non-finite metrics stop the run unless config.skip_nonfinite (then those updates were
        skipped by the optimizer); a non-finite state always does."""
        _wait_in_python(pending[2])
        metrics, finite = self.fetch(pending[1:3])  # the chunk's only host transfer
        metrics = {k: v[:length] for k, v in metrics.items()}  # past `length`: the program's unused rows
        kept = f"nothing was saved after step {step}" + (" (last checkpoint kept)" if self.ckpt.steps() else "")
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad and not self.config.skip_nonfinite:
            where = np.argwhere(~np.isfinite(metrics[bad[0]]))[0]  # (step[, seed])
            seed = f" (seed index {where[1]})" if len(where) > 1 else ""
            return metrics, f"non-finite {', '.join(bad)} at step {step + where[0] + 1}{seed}; {kept}"
        if not np.all(finite):
            seeds = f" (seed indices {np.flatnonzero(~np.asarray(finite)).tolist()})" if self.seeds.n > 1 else ""
            return metrics, (f"the training state became non-finite between steps {step} and "
                             f"{step + len(next(iter(metrics.values())))}{seeds}; {kept}")
        return metrics, None

    def log(self, step: int, metrics: dict, seconds: float, evals: dict | None = None) -> dict:
        """Writes a chunk's means (over steps, and seeds) to metrics.jsonl and TensorBoard, each
        model's own in the JSON line's per_seed, with `evals` (Run.curve) when given; returns the
        scalars."""
        length = len(next(iter(metrics.values())))
        scalars = {k: float(np.nanmean(v)) for k, v in metrics.items()}
        evals = evals or {}
        scalars.update({k: float(np.mean(v)) for k, v in evals.items()})
        if self.config.skip_nonfinite:
            rows = np.stack([~np.isfinite(v) for v in metrics.values()]).any(axis=0)
            scalars["skipped_updates"] = float(rows.sum())  # in this chunk
        scalars["steps_per_sec"] = length / seconds
        per_seed = None
        if self.seeds.n > 1:
            scalars["model_steps_per_sec"] = self.seeds.n * length / seconds
            per_seed = {k: np.nanmean(v, axis=0).tolist() for k, v in metrics.items()}
            per_seed.update({k: np.asarray(v).tolist() for k, v in evals.items()})
        self.writer.write(step, scalars, per_seed)
        return scalars

    def stop_requested(self, stop: StopOnSignal) -> bool:
        """Whether any process got SIGINT/SIGTERM: all stop (and save) at the same boundary, since
        the save is collective; a signal that reached only some processes would hang the rest."""
        if jax.process_count() == 1:
            return stop.signum is not None
        return bool(np.any(multihost_utils.process_allgather(np.int32(stop.signum is not None))))


def _wait_in_python(x, longest: float = 0.002) -> None:
    """Waits for array(s) `x` in short sleeps, not in one blocking call: Python runs signal
    handlers only between its own instructions, so a Ctrl-C is seen (and a second one obeyed) at
    once, not after the chunk. The sleeps grow from 0.1 ms to `longest`: a wait overshoots the
    chunk's end by up to that, and the device idles meanwhile at a boundary (a 20 ms cap cost
    the aae:seed stand-in's 20 boundaries and 40 first chunks about 0.3 s; docs/benchmarks.md)."""
    leaves = [a for a in jax.tree_util.tree_leaves(x) if hasattr(a, "is_ready")]
    nap = 1e-4
    while not all(a.is_ready() for a in leaves):
        time.sleep(nap)
        nap = min(2 * nap, longest)


def _crossed(step: int, prev: int, every: int) -> bool:
    return step // every > prev // every


# A compiled call's target length in seconds once the step time is known: long enough that the
# loop around it costs little on a fast device, short enough that a stop waits only this long.
CHUNK_SECONDS = 2.0
# The longest chunk in steps: its metrics rows are fetched whole, however few steps a call runs.
MAX_CHUNK_STEPS = 16384


class ChunkPlan:
    """Where a run's chunks end. metrics.jsonl gets one line per *segment*, which ends at each
    multiple of log_every, at each keep step and at num_steps. A *boundary* is a segment end
    where the host needs the state: a sample grid, checkpoint or evaluation is due there (its
    `every` was crossed), a keep step, or the end. A chunk is one compiled call: when steps are
    fast, whole segments, never past a boundary: from a boundary to the next when it is within
    about CHUNK_SECONDS (boundaries recur, so does that length; until the first boundary the
    first chunks' length goes on), or else a power of two of them; when slow, log_every / 2^j
    steps (about CHUNK_SECONDS), cut at the segment's end. Every length is a multiple of `unit`
    (the first chunks' length) up to `capacity` units, so one program runs them all (TrainChunk),
    but where a segment ends off that grid (a keep step, num_steps or a resumed step that is not
    a multiple of `unit`) or a unit takes longer than CHUNK_SECONDS: such a length gets a program
    of its own."""

    def __init__(self, config, evaluates: bool, fixed: bool = False):
        """`fixed`: one segment per chunk, whatever the step time (a multi-process run: every
        process must choose the same lengths, and clocks differ)."""
        self.fixed = fixed
        self.log_every, self.num_steps = int(config.log_every), int(config.num_steps)
        self.keep = sorted(int(k) for k in config.keep_steps)
        self.everies = [int(config.sample_every), int(config.checkpoint_every)]
        if evaluates:
            self.everies.append(int(config.eval_every))
        # The first chunks' length, and the grid of every other: the largest divisor of
        # log_every up to an eighth of it.
        self.unit = max(d for d in range(1, max(self.log_every // 8, 1) + 1) if self.log_every % d == 0)
        # No chunk crosses a boundary, and one comes at least every min(everies) steps (at the
        # segment end after it) and at num_steps.
        longest = min(min(self.everies) + self.log_every, self.num_steps, MAX_CHUNK_STEPS)
        self.capacity = max(longest // self.unit, 1)

    @property
    def shared_program(self) -> tuple[int, int]:
        """(unit, capacity) of the one program that runs the plan's lengths (TrainChunk); (0, 1),
        a program per length, when `fixed`: every chunk is one segment, so one length anyway."""
        return (0, 1) if self.fixed else (self.unit, self.capacity)

    def segment_end(self, step: int) -> int:
        """The first segment end after `step`."""
        return min((step // self.log_every + 1) * self.log_every, self.num_steps,
                   *(k for k in self.keep if k > step))

    def is_boundary(self, end: int, start: int) -> bool:
        """Whether the segment (start, end] ends where the host needs the state."""
        return end >= self.num_steps or end in self.keep or any(_crossed(end, start, e) for e in self.everies)

    def length(self, step: int, step_seconds: float | None, previous: int = 0) -> int:
        """The next chunk's length from `step`. Before the step time is known (`step_seconds`
        None), `unit` steps, so a stop during the first chunks waits little; that length
        goes on until the first boundary (no new program). Inside a segment, the `previous`
        length, cut at the segment's end; else log_every / 2^j, the largest within the budget."""
        end = self.segment_end(step)
        start = self.segment_start(end)
        if self.fixed:
            return end - step
        if step_seconds is None:
            return min(previous or self.unit, end - step)
        budget = max(min(int(CHUNK_SECONDS / step_seconds), self.unit * self.capacity), 1)
        if step != start and 0 < previous <= 2 * budget:
            return min(previous, end - step)
        if step != start or end - step > budget:  # part of a segment: log_every / 2^j, in units
            units = max(self.log_every // self.unit, 1)
            while units > 1 and units * self.unit > budget:
                units //= 2
            length = units * self.unit
            while length > budget:  # a unit takes longer than the budget: fewer steps, so a stop waits little
                length //= 2
            return min(length, end - step)
        ends, start = [end], step
        while not self.is_boundary(ends[-1], start):
            start, nxt = ends[-1], self.segment_end(ends[-1])
            if nxt - step > budget:
                break
            ends.append(nxt)
        if self.is_boundary(ends[-1], start):  # the next boundary is within reach
            # From a boundary, all the way (boundaries recur, so this length recurs); else one
            # segment at a time (a length already compiled) until the next boundary.
            at_boundary = step == 0 or self.is_boundary(step, self.segment_start(step))
            if at_boundary:
                return ends[-1] - step
            return min(previous, end - step) if previous == self.unit else end - step
        return ends[2 ** int(math.log2(len(ends))) - 1] - step

    def segment_start(self, end: int) -> int:
        """The start of the segment that ends at `end`."""
        return max((end - 1) // self.log_every * self.log_every, *(k for k in self.keep if k < end), 0)

    def ends_segment(self, end: int) -> bool:
        return end == self.segment_end(end - 1)


class StepTimer:
    """Seconds per step, over the chunks so far (their programs' first runs left out once another
    chunk ran), each timed from when it could start (its call, or for a new program when the call
    returned compiled; and not before the chunk before it finished) to when it finished.
    `compiled`: the chunk programs (TrainChunk.program) compiled so far."""

    def __init__(self):
        self.compiled, self.steps, self.seconds = set(), 0, 0.0
        self.warm_steps, self.warm_seconds = 0, 0.0  # chunks that were not their program's first run
        self.sized_steps, self.sized_seconds = 0, 0.0  # chunks long enough that the loop's own cost is small
        # The wall clock from the end of the first such chunk: the loop's steady state, boundaries included
        self.wall_from, self.wall_to, self.wall_steps = None, None, 0
        self.excluded = 0.0  # seconds inside that window the loop spent compiling a boundary's programs
        # Once the first ETA is given (its window's seconds in min_window), the rate looks back over
        # the window's later half, at least min_window, so it follows a change of speed (a machine
        # shared for a while); marks: (seconds less those excluded, wall_steps) at chunk ends.
        self.min_window, self.marks = None, collections.deque()

    def add(self, length: int, seconds: float, whole_segments: bool, first_run: bool, now: float) -> None:
        """`whole_segments`: the chunk ran one or more whole log_every segments (as long as the
        plan allows between boundaries); else it counts for the rate only if it ran a while.
        `first_run`: its program's first execution (slower: buffers and threads start), which
        does not count for the rate, nor for the step time once another chunk ran. `now`: when it
        was seen to end."""
        fair = not first_run and (whole_segments or (self.step_seconds and length * self.step_seconds >= CHUNK_SECONDS / 4))
        self.steps, self.seconds = self.steps + length, self.seconds + seconds
        if not first_run:
            self.warm_steps, self.warm_seconds = self.warm_steps + length, self.warm_seconds + seconds
        if fair:
            self.sized_steps, self.sized_seconds = self.sized_steps + length, self.sized_seconds + seconds
        if self.wall_from is not None:
            self.wall_steps, self.wall_to = self.wall_steps + length, now
            until = now - self.excluded
            self.marks.append((until, self.wall_steps))
            span = max(self.min_window or math.inf, (until - self.wall_from) / 2)
            while len(self.marks) > 2 and until - self.marks[1][0] >= span:  # marks[0]: at least span back
                self.marks.popleft()
        elif fair:
            self.wall_from = now
            self.marks.append((now, 0))

    @property
    def step_seconds(self) -> float | None:
        """Seconds a step, over the chunks that were not first runs (over all while none ran)."""
        if self.warm_steps:
            return self.warm_seconds / self.warm_steps
        return self.seconds / self.steps if self.steps else None

    def exclude(self, seconds: float) -> None:
        """Leaves `seconds` (a boundary that compiled its programs) out of the rate's window."""
        if self.wall_from is not None:
            self.excluded += seconds

    @property
    def wall_seconds(self) -> float:
        return self.wall_to - self.wall_from - self.excluded if self.wall_steps else 0.0

    @property
    def rate(self) -> float | None:
        """Steps per second the rest of the run can expect: the steps since the first chunk of a
        fair length ended over the wall time since (the boundaries' waits, grids, evaluations and
        saves included, a boundary's first compiles not), once min_window is set over the
        window's later half (at least min_window); until a chunk followed it, over the fair
        chunks' own time."""
        if self.wall_steps:
            (since, steps), (until, total) = self.marks[0], self.marks[-1]
            if until > since:
                return (total - steps) / (until - since)
        return self.sized_steps / self.sized_seconds if self.sized_steps else None


def train(config, workdir: str | Path, dataset: data_lib.Dataset | None = None, overwrite: bool = False):
    """Trains `config.model` to `config.num_steps`, resuming from `workdir` when it has a run of
    the same config (a different one is refused, or deleted first when `overwrite`). The work
    dir is locked for the run's life (process 0 holds the lock in a multi-process run).

    Returns the final TrainState (on the device).
    """
    model, workdir, primary = registry.build_model(config), Path(workdir), jax.process_index() == 0
    rundir.ensure_writable(workdir, jax.process_index())
    with rundir.WorkdirLock(workdir, enabled=primary):
        dataset = _open_workdir(config, workdir, dataset, overwrite, primary)
        log.info("data: %s from %s (%d training, %d test images)", dataset.name, dataset.source,
                 len(dataset.train_images), len(dataset.test_images))
        log.info("devices: %s", parallel.describe_devices())
        with Run(config, workdir, model, dataset) as run:
            return _loop(run, config)


class Pipeline:
    """The chunks in flight, oldest first, and their timing: `fill` dispatches ahead (JAX runs them
    asynchronously; each donates the state and data order it was given), `take` waits for the oldest."""

    def __init__(self, run: Run, plan: ChunkPlan, step: int):
        self.run, self.plan, self.timer, self.chunk_fn = run, plan, StepTimer(), run.chunk_fn(plan)
        self.inflight: list[dict] = []
        self.dispatched, self.previous, self.last_ready, self.order = step, 0, None, None
        self.t_first, self.compile_s = 0.0, None

    def fill(self, state, num_steps: int):
        """Dispatches chunks while the state is not needed (no boundary in flight), up to
        _ahead of them; returns the state the last one will leave."""
        plan, timer, inflight = self.plan, self.timer, self.inflight
        while (self.dispatched < num_steps and len(inflight) < _ahead(plan, timer, self.previous)
               and not (inflight and inflight[-1]["boundary"])):
            length = self._next_length()
            program = self.chunk_fn.program(length)
            self.previous, new_program = length, program not in timer.compiled
            if self.compile_s is None and not inflight:
                self.t_first = time.perf_counter()
            if new_program and inflight:  # compiling it would stall, and so mistime, those in flight
                break
            timer.compiled.add(program)
            if self.order is None:
                self.order = self.chunk_fn.order_at(state)
            # The chunk runs from its call at the earliest; a new program's from when the call returns
            # (compiled). A call may return only once its chunk has nearly run (a device that waits
            # for the units' loop test on the host): so a known program is timed from the call.
            t0 = time.perf_counter()
            # `state` and the order are donated here
            out = self.chunk_fn.carried(state, self.order, self.run.images, self.run.labels, length=length)
            if new_program:  # its compile is not the loop's steady state: out of the rate, as a boundary's
                t_ready = time.perf_counter()
                timer.exclude(t_ready - t0)
                t0 = t_ready
            end = self.dispatched + length
            inflight.append({"start": self.dispatched, "length": length, "out": out, "t0": t0, "new": new_program,
                             "boundary": plan.ends_segment(end) and plan.is_boundary(end, plan.segment_start(end))})
            state, self.order, self.dispatched = out[0], out[3], end  # after the append: an interrupt between
            # leaves the three in step
        return state

    def _next_length(self) -> int:
        return self.plan.length(self.dispatched, self.timer.step_seconds,
                                self.inflight[-1]["length"] if self.inflight else self.previous)

    def compiles_next(self, num_steps: int) -> bool:
        """Whether the next chunk `fill` would dispatch needs a program not compiled yet."""
        return self.dispatched < num_steps and self.chunk_fn.program(self._next_length()) not in self.timer.compiled

    def take(self, num_steps: int):
        """Waits for the oldest chunk: (chunk, its metrics on the host, its seconds). Logs the
        first chunk's time and, once, the ETA (once the wall clock since the first chunk of a fair
        length covers 5 s or 5 % of the run: StepTimer.rate)."""
        chunk = self.inflight[0]
        metrics, error = self.run.finish(chunk["out"], chunk["start"], chunk["length"])
        if error:
            raise NonFiniteError(error)
        self.inflight.pop(0)
        now, timer = time.perf_counter(), self.timer
        dt = now - max(chunk["t0"], self.last_ready or chunk["t0"])
        self.last_ready = now
        timer.add(chunk["length"], dt, chunk["length"] >= self.plan.log_every, chunk["new"], now)
        if self.compile_s is None:
            self.compile_s = now - self.t_first
            log.info("first chunk %.1f s incl. compilation", self.compile_s)
        left = num_steps - chunk["start"] - chunk["length"]
        if (timer.min_window is None and left and timer.wall_steps and timer.rate
                and (timer.wall_seconds >= 5 or timer.wall_steps >= 0.05 * num_steps)):
            timer.min_window = timer.wall_seconds  # also says the ETA was given
            log.info("ETA: %d steps to go, about %s at %.1f steps/s (timed after compilation)", left,
                     duration(left / timer.rate), timer.rate)
        return chunk, metrics, dt

    def drain(self, step: int) -> tuple[int, bool]:
        """Interrupted with chunks in flight (their input states are donated): finishes them.
        Returns (the step the last finite one reached, whether all were finite)."""
        ok = True
        for chunk in self.inflight:
            _, error = self.run.finish(chunk["out"], chunk["start"], chunk["length"])
            ok = ok and error is None
            if ok:
                step = chunk["start"] + chunk["length"]
        self.inflight = []
        return step, ok


def _loop(run: Run, config):
    """The training loop: while the device runs a chunk, the host logs the one before (Pipeline).
    At a boundary (ChunkPlan) the loop waits for the state, copies it to save and draws samples
    from it on the device, dispatches the next chunk, and saves and writes while that runs. A stop
    (SIGINT/SIGTERM) is honoured when the chunks in flight end."""
    t_start, step, pipe = time.perf_counter(), 0, None
    try:
        state, step = run.initial_state()
        if step >= config.num_steps:
            log.warning("already at step %d of %d: nothing to train (a larger --steps trains on)", step,
                        config.num_steps)
        else:
            log.info("training %s (%s) for %d steps%s; the ETA follows the first timed chunks", config.model,
                     config.get("variant") or "custom", config.num_steps, f", from step {step}" if step else "")
        plan = ChunkPlan(config, run.curve_data is not None, fixed=jax.process_count() > 1)
        pipe, progress, segment, deferred = Pipeline(run, plan, step), Progress(config.num_steps, enabled=run.primary), \
            Segment(step), None
        with StopOnSignal() as stop:
            try:
                while True:
                    stopping = run.stop_requested(stop)
                    if not stopping and deferred is not None and pipe.compiles_next(config.num_steps):
                        deferred = _done(deferred)  # the compile would stall the device anyway: save first
                    try:
                        if not stopping:
                            state = pipe.fill(state, config.num_steps)
                    finally:  # the boundary's line and checkpoint, also when the dispatch failed
                        deferred = _done(deferred)
                    if not pipe.inflight:
                        if stopping:
                            _stop(run, state, step, stop.signum)
                        break
                    chunk, metrics, dt = pipe.take(config.num_steps)
                    step = chunk["start"] + chunk["length"]
                    if chunk["boundary"] and not pipe.inflight:  # the state at `step` is `state`: save and draw
                        t_boundary = time.perf_counter()
                        state, deferred, first_use = _at_boundary(run, config, plan, state, step, segment, progress,
                                                                  pipe.timer, metrics, dt)
                        if first_use:  # compiled its programs: not the loop's steady state
                            pipe.timer.exclude(time.perf_counter() - t_boundary)
                    else:
                        _log_segments(run, config, plan, segment, progress, pipe.timer, metrics, dt, chunk["start"])
                    if stopping and not pipe.inflight:
                        deferred = _done(deferred)  # its line (and checkpoint) before _stop's
                        _stop(run, state, step, stop.signum)
            except KeyboardInterrupt:
                progress.close()
                step, ok = pipe.drain(step)
                if ok and not any(x.is_deleted() for x in jax.tree_util.tree_leaves(state)) and step not in run.ckpt.steps():
                    log.warning("interrupted: saving a checkpoint at step %d", step)
                    run.save(step, state, deploy_stats=False)  # at once, as _stop
                raise
            progress.close()
    except files.WriteError as e:
        raise run.write_failure(e, step) from e
    if step and config.num_steps:
        log.info("trained to step %d in %.1f s (first chunk incl. compile %.1f s)", step,
                 time.perf_counter() - t_start, (pipe.compile_s if pipe else None) or 0)
    return state


def _done(work) -> None:
    """Runs a boundary's deferred host work (if any); returns None to drop the last reference to
    it, and so to the state copy it saved, at once."""
    if work is not None:
        work()


def _ahead(plan: ChunkPlan, timer: StepTimer, length: int) -> int:
    """Chunks kept in flight: two while chunks are short (the host's logging overlaps the next
    one), one once they run a while (the host's share is small, and a stop waits for fewer)."""
    if not plan.fixed and timer.step_seconds is not None and length * timer.step_seconds >= CHUNK_SECONDS / 4:
        return 1
    return 2


def _stop(run: Run, state, step: int, signum) -> None:
    """A stop requested by a signal, with no chunk in flight: saves the state, then interrupts.
    The BatchNorm population statistics are left to whoever loads it (aaejax.load computes
    them): the official BiGAN's take 5 s on 2 CPU cores, and a stop must be prompt."""
    if step not in run.ckpt.steps():
        run.save(step, state, deploy_stats=False)
    log.warning("stopped by signal %s at step %d; checkpoint saved", signum, step)
    raise KeyboardInterrupt(f"signal {signum}")


class Segment:
    """The host's share of one metrics.jsonl line: per-step metrics of the current segment, which
    a chunk may cover part of, or several of. A run stopped inside a segment (short chunks) keeps
    no partial line: resumed, that segment's line averages the steps after the resume only."""

    def __init__(self, start: int):
        self.start, self.parts, self.seconds = start, [], 0.0

    def add(self, metrics: dict, seconds: float) -> None:
        self.parts.append(metrics)
        self.seconds += seconds

    def take(self, end: int) -> tuple[dict, float]:
        metrics = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        out = (metrics, self.seconds)
        self.start, self.parts, self.seconds = end, [], 0.0
        return out


def _split(metrics: dict, start: int, ends: list[int]) -> list[dict]:
    """A chunk's per-step metrics [L, ...] from `start`, cut at the segment ends inside it."""
    cuts = [e - start for e in ends]
    return [{k: v[a:b] for k, v in metrics.items()} for a, b in zip([0, *cuts[:-1]], cuts)]


def _log_segments(run, config, plan, segment, progress, timer, metrics, dt, start, evals=None) -> None:
    """Adds a chunk's metrics to the segments they belong to, writing a line per completed one
    (`evals`: the model's curve, on the last)."""
    length = len(next(iter(metrics.values())))
    end, ends = start + length, []
    cursor = start
    while cursor < end:
        cursor = plan.segment_end(cursor)
        if cursor <= end:
            ends.append(cursor)
    if not ends or ends[-1] != end:
        ends.append(end)
    for i, (part, seg_end) in enumerate(zip(_split(metrics, start, ends), ends)):
        segment.add(part, dt * len(next(iter(part.values()))) / length)
        if seg_end == plan.segment_end(segment.start) or seg_end >= config.num_steps:
            seg_metrics, seconds = segment.take(seg_end)
            last = i == len(ends) - 1
            scalars = run.log(seg_end, seg_metrics, seconds, evals if last else None)
            rate = timer.rate or len(next(iter(seg_metrics.values()))) / seconds
            progress.update(seg_end, rate, scalars)


def _at_boundary(run, config, plan, state, step, segment, progress, timer, metrics, dt):
    """At a boundary: the deploy statistics when a grid or a checkpoint needs them, the curve, and
    the checkpoint (of a device copy, saved once the next chunk runs; see save_now). Returns (the
    state training continues from, the host work to do once the next chunk is dispatched: the
    segments' lines, then the checkpoint (a run killed after the save resumes past the line),
    then the grids; and whether this boundary did any of those for the first time in the run, so
    compiled their programs)."""
    prev = plan.segment_start(step)
    last = step >= config.num_steps
    want_samples = _crossed(step, prev, config.sample_every) or last
    want_ckpt = last or step in plan.keep or (_crossed(step, prev, config.checkpoint_every) and (
        plan.fixed or run.seconds_since_save() >= config.checkpoint_seconds))  # clocks differ across processes
    want_eval = run.curve_data is not None and (_crossed(step, prev, config.eval_every) or last)
    kinds = {k for k, want in (("samples", want_samples), ("checkpoint", want_ckpt), ("eval", want_eval)) if want}
    first_use, run.boundary_kinds = not kinds <= run.boundary_kinds, run.boundary_kinds | kinds
    if want_samples or want_ckpt:
        state = run.eval_state(state, step)  # once per boundary, shared by grid and checkpoint
    evals = run.curve(step, state) if want_eval else None
    grids = run.sample_images(state) if want_samples else None
    start = step - len(next(iter(metrics.values())))

    def lines():
        _log_segments(run, config, plan, segment, progress, timer, metrics, dt, start, evals)

    # Saved after the next chunk is dispatched, from a copy (that chunk donates `state`); but at
    # the last step (no chunk follows) and in a multi-process run, whose save synchronises the
    # processes by a device collective that would wait for the chunks in flight: at once.
    save_now = want_ckpt and (last or plan.fixed)
    if save_now:
        lines()
        run.save(step, state)
    saved = snapshot(state) if want_ckpt and not save_now else None
    jax.block_until_ready((state, grids, saved))  # else the next chunk's time would include this work

    def host_work():  # overlaps the next chunk's steps
        if not save_now:
            lines()
        if saved is not None:
            run.save(step, saved)
        if grids is not None:
            run.write_samples(step, grids)
    return state, host_work, first_use
