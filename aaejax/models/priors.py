"""Latent priors behind one seam: `prior.sample(key, shape, labels=None) -> [*shape]` float32.

A prior is chosen by `config.prior` (a name) and its parameters. The 2-D priors of the AAE paper
(a mixture of 10 Gaussians, a swiss roll) can be label-conditioned: given int labels [B], sample i
comes from the mixture component / the swiss-roll segment of labels[i] (the paper's Figure 4);
without labels the component is drawn uniformly.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from aaejax.configs import PRIORS


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """N(0, scale^2 I)."""

    scale: float = 1.0
    num_components = 0  # not label-conditionable

    def sample(self, key: jax.Array, shape, labels=None) -> jax.Array:
        return self.scale * jax.random.normal(key, shape, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """U[low, high)^d, BiGAN's latent distribution."""

    low: float = 0.0
    high: float = 1.0
    num_components = 0

    def sample(self, key: jax.Array, shape, labels=None) -> jax.Array:
        return jax.random.uniform(key, shape, jnp.float32, self.low, self.high)


def _components_2d(key, shape, num: int, labels):
    """(component [B] -- the labels, or uniform draws without them -- and a fresh key)."""
    batch, dim = shape
    assert dim == 2, f"a 2-D prior needs latent_dim 2, got {dim}"
    k_comp, key = jax.random.split(key)
    comp = jax.random.randint(k_comp, (batch,), 0, num) if labels is None else labels.astype(jnp.int32)
    return comp, key


@dataclasses.dataclass(frozen=True)
class GaussianMixture2D:
    """`num_components` elongated 2-D Gaussians evenly spaced on a circle of `radius`: component k
    is N((radius, 0), diag(0.5, 0.1)^2 * scale^2) rotated by 2*pi*k/num_components."""

    num_components: int = 10
    radius: float = 2.0
    scale: float = 1.0

    def sample(self, key: jax.Array, shape, labels=None) -> jax.Array:
        comp, k_noise = _components_2d(key, shape, self.num_components, labels)
        noise = jax.random.normal(k_noise, (shape[0], 2)) * jnp.array([0.5, 0.1]) * self.scale
        x, y = noise[:, 0] + self.radius, noise[:, 1]
        angle = 2 * math.pi * comp / self.num_components
        return jnp.stack([x * jnp.cos(angle) - y * jnp.sin(angle), x * jnp.sin(angle) + y * jnp.cos(angle)], -1)


@dataclasses.dataclass(frozen=True)
class SwissRoll2D:
    """A 2-D swiss roll: u ~ U[0, 1), r = scale * 3 sqrt(u), angle = 4 pi sqrt(u); label k restricts
    u to the k-th of `num_components` equal segments."""

    num_components: int = 10
    scale: float = 1.0

    def sample(self, key: jax.Array, shape, labels=None) -> jax.Array:
        comp, k_u = _components_2d(key, shape, self.num_components, labels)
        u = (comp + jax.random.uniform(k_u, (shape[0],))) / self.num_components
        r, angle = 3.0 * self.scale * jnp.sqrt(u), 4.0 * math.pi * jnp.sqrt(u)
        return jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], -1)





def make_prior(config):
    """Builds the prior named by `config.prior` from the config's prior fields."""
    name = config.prior
    if name == "gaussian":
        return Gaussian(float(config.prior_scale))
    if name == "uniform":
        return Uniform(float(config.prior_low), float(config.prior_high))
    if name == "mixture2d":
        return GaussianMixture2D(int(config.num_classes), float(config.prior_radius),
                                 float(config.prior_scale))
    if name == "swiss_roll":
        return SwissRoll2D(int(config.num_classes), float(config.prior_scale))
    raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
