"""What the trainer, `evaluate` and `aaejax.load` need of a model (every model implements it).

Images cross this boundary as float32 in [0, 1] (or uint8 0..255 where noted), [N, 28, 28, 1];
a model converts to its own scale inside (aaejax/data/images.py).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import numpy as np

from aaejax.models.state import TrainState


class ConfigEquality:
    """A model is a pure function of its config: two built from equal configs are equal and hash
    alike. The trainer and `aaejax.load` jit module-level functions with the model as a static
    argument, so every run or load of an equal config in one process reuses one trace and one
    compiled program (a bound method, jitted afresh, is traced and lowered again each time).

    Each model keeps its own copy of the config it was built from, so a caller changing its config
    afterwards (a loaded run's `m.config`, say) changes neither the model nor its key."""

    config: Any

    @functools.cached_property
    def _config_key(self) -> tuple:
        return type(self), self.config.to_json_best_effort(sort_keys=True)

    def __eq__(self, other) -> bool:
        return isinstance(other, ConfigEquality) and self._config_key == other._config_key

    def __hash__(self) -> int:
        return hash(self._config_key)


class Model(Protocol):
    name: str  # config.model
    config: Any
    latent_dim: int
    needs_labels: bool  # decode() needs int labels [N] (the supervised AAE)

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError for settings of this model that make no sense."""

    def init(self, rng: jax.Array) -> TrainState:
        """A fresh state: one NetState (params, optimizer state, BatchNorm statistics) per network."""

    def labelled_streams(self, train_labels: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, int]]:
        """The batch hook: {name: (indices into the training set, batch size)} of extra batches the
        trainer adds to every step as batch[f"{name}_image"] / batch[f"{name}_label"], drawn with
        replacement from those indices (the semi-supervised AAE's labelled subset); usually {}."""

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """Pure: batch["image"] uint8 [B, 28, 28, 1], batch["label"] int32 [B] (+ the streams)."""

    def prepare_eval(self, state: TrainState, train_images: jax.Array, key: jax.Array) -> TrainState:
        """The state evaluation uses (BatchNorm population statistics over uint8 training images)."""

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] -> [N, latent_dim] (deterministic)."""

    def decode(self, state: TrainState, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """[N, latent_dim] (+ labels [N]) -> [N, 28, 28, 1] in [0, 1]."""

    def sample(self, state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        """n decoded prior samples [n, 28, 28, 1] in [0, 1]."""

    def reconstruct(self, state: TrainState, x01: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """decode(encode(x))."""

    def style_grid(self, state: TrainState, key: jax.Array, rows: int) -> jax.Array | None:
        """[rows * classes, 28, 28, 1]: rows share a style, columns are the classes; None when the
        model has no class in its code."""

    def report(self, state: TrainState, dataset) -> dict:
        """Model-specific entries of the report card (evaluate), from host uint8 data."""


# The protocol's image functions, jitted with the model as a static argument (ConfigEquality):
# the trainer's sample grids and `aaejax.load` share one trace per config and shape.


@functools.partial(jax.jit, static_argnames="model")
def encode(state: TrainState, x01: jax.Array, *, model: Model) -> jax.Array:
    return model.encode(state, x01)


@functools.partial(jax.jit, static_argnames="model")
def decode(state: TrainState, z: jax.Array, labels: jax.Array | None = None, *, model: Model) -> jax.Array:
    return model.decode(state, z, labels)


@functools.partial(jax.jit, static_argnames=("n", "model"))
def sample(state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None, *, model: Model) -> jax.Array:
    return model.sample(state, key, n, labels)


@functools.partial(jax.jit, static_argnames="model")
def reconstruct(state: TrainState, x01: jax.Array, labels: jax.Array | None = None, *, model: Model) -> jax.Array:
    return model.reconstruct(state, x01, labels)
