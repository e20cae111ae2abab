"""Devices: one `Mesh` over all of them, and where the seed axis and the batch go on it.

`config.shard`:
- "seeds": the leading seed axis of the state and the batch is split over the devices (each
  device trains num_seeds / num_devices models; no communication in the step);
- "batch": parameters replicated, the batch split over the devices; XLA inserts the gradient
  (and BatchNorm statistic) all-reduces, so the result matches one device with the same global
  batch up to floating-point reassociation;
- "none": everything replicated (one device's work repeated);
- "auto": "seeds" when num_seeds > 1 divides evenly, else "batch" when batch_size does, else
  "none". With one device every mode is the same computation.
Multi-host: `initialize_distributed()` calls `jax.distributed.initialize()` when the standard
environment says the job has several processes; the mesh then spans every process's devices.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aaejax.configs import SHARD_MODES

log = logging.getLogger(__name__)

AXIS = "devices"


def initialize_distributed() -> bool:
    """jax.distributed.initialize() for multi-process jobs (JAX_COORDINATOR_ADDRESS with
    JAX_NUM_PROCESSES / JAX_PROCESS_ID, or Slurm / Open MPI, which JAX detects itself)."""
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                   int(env["JAX_PROCESS_ID"]))
        return True
    # SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the latter is also set in a plain shell inside an
    # allocation, where a single process must not wait for peers that never start.
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        jax.distributed.initialize()
        return True
    return False


def describe_devices() -> str:
    """One line: how many devices of which kind JAX trains on; a warning when the machine has an
    NVIDIA GPU JAX does not use (the CPU build of jaxlib installed: `make install ACCEL=cuda12`)."""
    import shutil
    import subprocess

    devices = jax.devices()
    line = f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
    if jax.default_backend() != "gpu" and shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            gpu = False
        if gpu:
            log.warning("this machine has an NVIDIA GPU but JAX sees none: install the CUDA build "
                        "(`make install ACCEL=cuda12`, or pip install -e '.[cuda12]')")
    return line


def sync(name: str) -> None:
    """A barrier across processes (a no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def resolve_mode(config, num_devices: int) -> str:
    mode = config.shard
    if mode not in SHARD_MODES:
        raise ValueError(f"unknown shard mode {mode!r}; choose one of {', '.join(SHARD_MODES)}")
    seeds, batch = int(config.num_seeds), int(config.batch_size)
    if mode == "auto":
        if num_devices == 1:
            return "none"
        if seeds > 1 and seeds % num_devices == 0:
            return "seeds"
        return "batch" if batch % num_devices == 0 else "none"
    if mode == "seeds" and seeds % num_devices:
        raise ValueError(f"shard=seeds needs num_seeds ({seeds}) divisible by the {num_devices} devices")
    if mode == "batch" and batch % num_devices:
        raise ValueError(f"shard=batch needs batch_size ({batch}) divisible by the {num_devices} devices")
    return mode


class Layout:
    """Shardings of the state, the dataset and each step's batch for one run."""

    def __init__(self, config, devices=None):
        devices = list(devices or jax.devices())
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.mode = resolve_mode(config, len(devices))
        self.seed_axis = int(config.num_seeds) > 1
        self.replicated = NamedSharding(self.mesh, P())

    def _key(self) -> tuple:
        return self.mesh, self.mode, self.seed_axis

    def __eq__(self, other) -> bool:  # by value: a static argument of the compiled chunk
        return isinstance(other, Layout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def state(self) -> NamedSharding:
        """Every state leaf (with a leading seed axis when num_seeds > 1)."""
        return NamedSharding(self.mesh, P(AXIS)) if self.mode == "seeds" else self.replicated

    @property
    def batch(self) -> NamedSharding:
        """Each batch leaf: [B, ...], or [S, B, ...] with seeds."""
        if self.mode == "seeds":
            return NamedSharding(self.mesh, P(AXIS))
        if self.mode == "batch":
            return NamedSharding(self.mesh, P(None, AXIS) if self.seed_axis else P(AXIS))
        return self.replicated

    def constrain_state(self, state):
        return jax.lax.with_sharding_constraint(state, jax.tree_util.tree_map(lambda _: self.state, state))

    def constrain_order(self, order):
        """The data order a chunk carries: with seeds on the mesh, its per-seed leaves [S, ...] are
        placed as the state (the shared epoch stays replicated), so the order a chunk returns has
        the sharding of the one it was given (else the next call compiles the chunk again)."""
        if self.mode != "seeds":
            return order
        return jax.lax.with_sharding_constraint(
            order, jax.tree_util.tree_map(lambda x: self.state if x.ndim else self.replicated, order))

    def constrain_batch(self, batch):
        return jax.lax.with_sharding_constraint(batch, jax.tree_util.tree_map(lambda _: self.batch, batch))

    def put_replicated(self, x: np.ndarray) -> jax.Array:
        """A host array copied to every device (works across processes: built from local data)."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, self.replicated, lambda idx: x[idx])
