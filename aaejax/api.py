"""`aaejax.load(workdir)`: a trained model behind encode / decode / sample.

Images in and out are float32 in [0, 1] shaped [N, 28, 28, 1]; each model converts to its own
scale inside. Evaluation uses the checkpointed state with its BatchNorm population statistics
(BiGAN), recomputed over training batches before it was saved (or, for a checkpoint a stop
saved in haste, here: `load` then reads the run's training images), so results do not depend on
the batch a call is made with.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aaejax.data import images
from aaejax.models import protocol, registry
from aaejax.run import rundir
from aaejax.models.state import has_batch_stats, seed_keys
from aaejax.run.checkpoint import CheckpointError, Checkpointer


class TooLarge(ValueError):
    """A request whose result would not fit in the memory that is free (sample(n) for a large n)."""


class LoadedModel:
    def __init__(self, model, state, config, step: int):
        self.model, self.state, self.config, self.step = model, state, config, step
        self._encode = functools.partial(protocol.encode, model=model)
        self._decode = functools.partial(protocol.decode, model=model)
        self._sample = functools.partial(protocol.sample, model=model)

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def encode(self, x) -> jax.Array:
        """[N, 28, 28, 1] float in [0, 1] (or uint8 in 0..255, scaled here) -> [N, latent_dim]
        (the posterior mean for the AAE)."""
        if not isinstance(x, (np.ndarray, jax.Array)):
            x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise ValueError(f"encode expects [N, 28, 28, 1] images in [0, 1], got shape {x.shape}")
        if not x.shape[0]:  # XLA's gather of an empty batch divides by zero
            return jnp.zeros((0, self.latent_dim), jnp.float32)
        if x.dtype == np.uint8:
            return self._encode(self.state, images.unit(jnp.asarray(x)))
        xp = np if isinstance(x, np.ndarray) else jnp  # the range on the host for numpy input
        lo, hi = (float(v) for v in jax.device_get((xp.min(x), xp.max(x))))
        if np.isnan(lo) or np.isnan(hi):
            raise ValueError("encode expects float images in [0, 1] (or uint8), got NaN values")
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # e.g. 0..255 floats: silently wrong codes
            raise ValueError(f"encode expects float images in [0, 1] (or uint8), got values in [{lo:g}, {hi:g}]")
        return self._encode(self.state, jnp.asarray(x, jnp.float32))

    def decode(self, z, labels=None) -> jax.Array:
        """[N, latent_dim] -> [N, 28, 28, 1] float32 in [0, 1].

        labels (int [N]): the class to render, for models that take one (the supervised AAE needs
        them; for the categorical AAE they replace the code's category part).
        """
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decode expects [N, {self.latent_dim}] codes, got shape {z.shape}")
        if z.size and not bool(jnp.all(jnp.isfinite(z))):
            raise ValueError("decode expects finite codes, got NaN or Inf")
        return self._decode(self.state, z, None if labels is None else jnp.asarray(labels, jnp.int32))

    def sample(self, n: int, seed: int = 0, labels=None) -> jax.Array:
        """n images from the prior, [n, 28, 28, 1] in [0, 1] (labels [n]: of those classes /
        prior components, where the model has them). Above SAMPLE_PIECE images, drawn in pieces;
        an n whose images do not fit in memory is refused in one line."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sample expects a whole number of images n >= 0, got {n!r}")
        n, key = int(n), jax.random.PRNGKey(seed)
        labels = None if labels is None else jnp.asarray(labels, jnp.int32)
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"sample({n}) takes one label per image, labels of shape ({n},); got {labels.shape}")
        if n <= SAMPLE_PIECE:
            return self._sample(self.state, key, n, labels)
        need, free = n * 28 * 28 * 4, _free_memory()
        if free is not None and 2 * need > free:  # the pieces and their concatenation
            raise TooLarge(f"sample({n}) needs {2 * need / 2**30:.1f} GiB for its images; the device has "
                             f"{free / 2**30:.1f} GiB free: ask for fewer")
        # In pieces of SAMPLE_PIECE, piece i from fold_in(key, i): one compiled program, bounded work.
        pieces = []
        for i, start in enumerate(range(0, n, SAMPLE_PIECE)):
            size = min(SAMPLE_PIECE, n - start)
            part = self._sample(self.state, jax.random.fold_in(key, i), SAMPLE_PIECE,
                                None if labels is None else _pad(labels[start:start + size], SAMPLE_PIECE))
            pieces.append(part[:size])
        return jnp.concatenate(pieces)

    def reconstruct(self, x, labels=None) -> jax.Array:
        return self.decode(self.encode(x), labels)


SAMPLE_PIECE = 10000  # sample(n) above this draws pieces of it (n up to it: one call, as before)


def _pad(labels: jax.Array, size: int) -> jax.Array:
    return jnp.concatenate([labels, jnp.zeros((size - labels.shape[0],), labels.dtype)])


def _free_memory() -> int | None:
    """Bytes free where the samples will live: the device's memory where JAX reports it, else the
    host's available memory (CPU); None when neither is known."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - backends without memory_stats
        pass
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def deploy_statistics(model, config, state, step: int, seed_index: int, dataset=None):
    """model.prepare_eval of one model's state at `step`, on the run's training images and with
    its evaluation key at that step: the statistics the trainer saves at its boundaries."""
    from aaejax.data import datasets

    dataset = dataset or datasets.load(config.dataset, config.data_dir or None, config.data_mirror or None)
    images_, _ = datasets.training_examples(dataset, config)
    key = jax.random.fold_in(seed_keys(int(config.seed) + seed_index)[3], step)
    return jax.jit(model.prepare_eval)(state, jnp.asarray(images_), key)


def load(workdir: str | Path, seed_index: int = 0, step: int | None = None, dataset=None) -> LoadedModel:
    """Loads the newest readable checkpoint of the run in `workdir` (or that of `step`); of a
    multi-seed run (config.num_seeds > 1), model `seed_index` (trained from seed config.seed +
    seed_index). step=0 without a checkpoint of step 0: the run's initial state, recreated from
    its seed. A state without BatchNorm population statistics (that initial state, or a
    checkpoint a stop saved in haste: its meta says deploy_stats: false) gets them here, as the
    trainer computes them, from `dataset` (default: the run's, loaded)."""
    workdir = Path(workdir)
    config = rundir.read_config(workdir)
    # Loaded onto one device whatever the run's sharding, so the device count here need not match.
    config.shard = "none"
    model = registry.build_model(config)
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        num_seeds = int(config.num_seeds)
        if not 0 <= seed_index < num_seeds:
            raise ValueError(f"seed_index must be in 0..{num_seeds - 1} for the run in {workdir}, got {seed_index}")
        keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
        init = model.init if num_seeds == 1 else jax.vmap(model.init)
        shape = jax.eval_shape(init, keys[0] if num_seeds == 1 else keys)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # wherever it was trained
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shape)
        if step == 0 and 0 not in ckpt.steps():
            state, needs_stats = jax.jit(model.init)(seed_keys(int(config.seed) + seed_index)[0]), True
        else:
            state, step = ckpt.restore(target, step=step)
            if state is not None and num_seeds > 1:
                state = jax.tree_util.tree_map(lambda x: x[seed_index], state)
            needs_stats = state is not None and ckpt.read_meta(step).get("deploy_stats") is False
        if needs_stats and has_batch_stats(state):
            state = deploy_statistics(model, config, state, step, seed_index, dataset)
    finally:
        ckpt.close()
    if state is None:
        raise CheckpointError(f"{workdir} holds no checkpoint")
    loaded = LoadedModel(model, state, config, step)
    loaded.seed_index, loaded.num_seeds = seed_index, num_seeds
    return loaded
