"""Latent priors behind one seam: `prior.sample(key, shape) -> [*shape]` float32.

A prior is chosen by `config.prior` (a name) and its parameters (`config.prior_scale`, ...), so
later priors (mixtures, swiss roll, label-conditioned) plug in here without touching the models.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """N(0, scale^2 I)."""

    scale: float = 1.0

    def sample(self, key: jax.Array, shape) -> jax.Array:
        return self.scale * jax.random.normal(key, shape, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """U[low, high)^d, BiGAN's latent distribution."""

    low: float = 0.0
    high: float = 1.0

    def sample(self, key: jax.Array, shape) -> jax.Array:
        return jax.random.uniform(key, shape, jnp.float32, self.low, self.high)


PRIORS = ("gaussian", "uniform")


def make_prior(config):
    """Builds the prior named by `config.prior` from the config's prior fields."""
    name = config.prior
    if name == "gaussian":
        return Gaussian(float(config.prior_scale))
    if name == "uniform":
        return Uniform(float(config.prior_low), float(config.prior_high))
    raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
