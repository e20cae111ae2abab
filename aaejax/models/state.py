"""Explicit training state: one `NetState` per network, each with its own optimizer state.

The optimizers themselves (optax transformations with their schedules, aaejax/models/optim.py) are
static and live on the model object; the state holds only arrays, so it jits, donates and
checkpoints as a pytree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class NetState:
    """One network: its params, its optax state and (if it has BatchNorm) its statistics."""

    params: Any
    opt_state: Any
    batch_stats: Any

    @classmethod
    def create(cls, variables, tx: optax.GradientTransformation) -> "NetState":
        params = variables["params"]
        return cls(params=params, opt_state=tx.init(params), batch_stats=variables.get("batch_stats", {}))

    @property
    def variables(self) -> dict:
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    def apply_gradients(self, tx: optax.GradientTransformation, grads) -> "NetState":
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)

    @classmethod
    def create_phased(cls, variables, txs: dict) -> "NetState":
        """A network updated by several costs, each with its own optimizer state (the AAE paper's
        phases: each cost its own momentum): opt_state = {phase: state}."""
        params = variables["params"]
        return cls(params=params, opt_state={p: tx.init(params) for p, tx in txs.items()},
                   batch_stats=variables.get("batch_stats", {}))

    def apply_phase(self, phase: str, tx: optax.GradientTransformation, grads) -> "NetState":
        """apply_gradients with the optimizer state of `phase` (create_phased)."""
        updates, phase_state = tx.update(grads, self.opt_state[phase], self.params)
        return self.replace(params=optax.apply_updates(self.params, updates),
                            opt_state={**self.opt_state, phase: phase_state})


@struct.dataclass
class TrainState:
    """step: int32 []; rng: uint32 [2] (per-step keys are fold_in(rng, step)); nets: name -> NetState."""

    step: jax.Array
    rng: jax.Array
    nets: dict

    @classmethod
    def create(cls, rng: jax.Array, nets: dict) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), rng=rng, nets=nets)

    def step_key(self) -> jax.Array:
        return jax.random.fold_in(self.rng, self.step)


def all_finite(tree) -> jax.Array:
    """bool []: every float leaf of `tree` is finite (NaN/Inf anywhere -> False)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The keys a model trained from `seed` draws from: (init, data order, sample grids, evaluation).
    The trainer trains with them; aaejax.load and the report recreate an initial state from them."""
    init, data, samples, evaluation = jax.random.split(jax.random.PRNGKey(seed), 4)
    return init, data, samples, evaluation


def has_batch_stats(state: TrainState) -> bool:
    """Whether any of the state's networks has BatchNorm statistics (the BiGAN's do)."""
    return bool(jax.tree_util.tree_leaves([net.batch_stats for net in state.nets.values()]))
