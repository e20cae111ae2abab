"""Flax Linen networks of both models. Images enter flattened or as [B, 28, 28, 1].

Every module takes `train: bool` explicitly where it has BatchNorm; discriminators return logits
(the sigmoid lives in the loss, see losses.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGE_SHAPE = (28, 28, 1)
IMAGE_DIM = 28 * 28


def leaky_relu(x):
    return nn.leaky_relu(x, negative_slope=0.2)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


def _leaky_mlp(h: jax.Array, hidden: Sequence[int]) -> jax.Array:
    """Dense + LeakyReLU(0.2) per width; called inside a compact module, so the layers keep the
    module's Dense_0, Dense_1, ... names."""
    for width in hidden:
        h = leaky_relu(nn.Dense(width)(h))
    return h


# ----------------------------------------------------------------------------- AAE


class AAEEncoder(nn.Module):
    """x [B, 28, 28, 1] in [-1, 1] -> (mu, log_var), each [B, latent_dim]."""

    latent_dim: int = 10
    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, x):
        h = _leaky_mlp(_flat(x), self.hidden)
        return nn.Dense(self.latent_dim, name="mu")(h), nn.Dense(self.latent_dim, name="log_var")(h)


class CategoricalEncoder(nn.Module):
    """x [B, 28, 28, 1] in [-1, 1] -> (category logits [B, num_categories], style [B, style_dim]).

    The semi-supervised / clustering AAE's deterministic encoder: one trunk, two heads.
    """

    num_categories: int = 10
    style_dim: int = 10
    hidden: Sequence[int] = (1000, 1000)

    @nn.compact
    def __call__(self, x):
        h = _leaky_mlp(_flat(x), self.hidden)
        return nn.Dense(self.num_categories, name="category")(h), nn.Dense(self.style_dim, name="style")(h)


class AAEDecoder(nn.Module):
    """z [B, latent_dim] -> x [B, 28, 28, 1] in [-1, 1] (tanh)."""

    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, z):
        h = _leaky_mlp(z, self.hidden)
        return jnp.tanh(nn.Dense(IMAGE_DIM)(h)).reshape((z.shape[0], *IMAGE_SHAPE))


class LatentDiscriminator(nn.Module):
    """z [B, latent_dim] -> logit [B] (prior sample = real)."""

    hidden: Sequence[int] = (512, 256)

    @nn.compact
    def __call__(self, z):
        h = _leaky_mlp(z, self.hidden)
        return nn.Dense(1)(h)[:, 0]


# ----------------------------------------------------------------------------- BiGAN


def _bn(train: bool, affine: bool, momentum: float, name: str):
    # use_running_average=not train: batch statistics in training, population statistics in eval.
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                        use_bias=affine, use_scale=affine, name=name)


def _kernel_init(std: float | None) -> Callable:
    return nn.initializers.normal(std) if std else nn.initializers.lecun_normal()


class BiGANGenerator(nn.Module):
    """G: z [B, latent_dim] -> x [B, 28, 28, 1] in [0, 1]. Dense-BN-ReLU x2, Dense, sigmoid."""

    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    bn_affine: bool = True
    bn_momentum: float = 0.99
    init_std: float | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        h = z
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=_kernel_init(self.init_std))(h)
            h = nn.relu(_bn(train, self.bn_affine, self.bn_momentum, f"bn{i}")(h))
        x = nn.sigmoid(nn.Dense(IMAGE_DIM, kernel_init=_kernel_init(self.init_std))(h))
        return x.reshape((z.shape[0], *IMAGE_SHAPE))


class BiGANEncoder(nn.Module):
    """E: x [B, 28, 28, 1] in [0, 1] -> z [B, latent_dim] in the prior's range.

    Dense-LReLU, Dense-BN-LReLU, Dense, sigmoid; `out_low`/`out_high` rescale the sigmoid to the
    prior's support ([0, 1) seed, [-1, 1] paper).
    """

    latent_dim: int = 50
    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    bn_affine: bool = True
    bn_momentum: float = 0.99
    init_std: float | None = None
    out_low: float = 0.0
    out_high: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool):
        h = _flat(x)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=_kernel_init(self.init_std))(h)
            if i > 0:  # no BatchNorm on the input layer (as in the official code)
                h = _bn(train, self.bn_affine, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        z = nn.sigmoid(nn.Dense(self.latent_dim, kernel_init=_kernel_init(self.init_std))(h))
        return self.out_low + (self.out_high - self.out_low) * z


class JointDiscriminator(nn.Module):
    """D: (x [B, 28, 28, 1], z [B, latent_dim]) -> logit [B]; the input is concat(x, z), 834-d."""

    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    bn_affine: bool = True
    bn_momentum: float = 0.99
    init_std: float | None = None

    @nn.compact
    def __call__(self, x, z, train: bool):
        h = jnp.concatenate([_flat(x), z], axis=-1)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=_kernel_init(self.init_std))(h)
            if i > 0:
                h = _bn(train, self.bn_affine, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        return nn.Dense(1, kernel_init=_kernel_init(self.init_std))(h)[:, 0]
