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

# BatchNorm flavours, each the normalisation of one program: epsilon, and whether the batch
# variance is E[x^2] - E[x]^2 (flax's fast form) or the mean squared deviation.
BN_FLAVOURS = {"flax": (1e-5, True), "official": (1e-8, False), "torch": (1e-5, False)}


def _bn(train: bool, affine: bool, flavour: str, momentum: float, name: str):
    # use_running_average=not train: batch statistics in training, population statistics in eval.
    epsilon, fast_variance = BN_FLAVOURS[flavour]
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        use_bias=affine, use_scale=affine, use_fast_variance=fast_variance, name=name)


def _kernel_init(std: float | None) -> Callable:
    return nn.initializers.normal(std) if std else nn.initializers.lecun_normal()


class BiGANGenerator(nn.Module):
    """G: z [B, latent_dim] -> x [B, 28, 28, 1] in [0, 1]. (Dense-BN-ReLU) per hidden layer, Dense,
    sigmoid. `z_skip`: every hidden layer after the first also gets a linear map of z added before
    its BatchNorm (the official code's conditioning of its generator on z)."""

    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    output_bias: bool = True
    bn_affine: bool = True
    bn_flavour: str = "flax"
    bn_momentum: float = 0.99
    init_std: float | None = None
    z_skip: bool = False

    @nn.compact
    def __call__(self, z, train: bool):
        init = _kernel_init(self.init_std)
        h = z
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=init, name=f"Dense_{i}")(h)
            if i > 0 and self.z_skip:
                h = h + nn.Dense(width, use_bias=False, kernel_init=init, name=f"z_skip_{i}")(z)
            h = nn.relu(_bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h))
        x = nn.Dense(IMAGE_DIM, use_bias=self.output_bias, kernel_init=init, name=f"Dense_{len(self.hidden)}")(h)
        return nn.sigmoid(x).reshape((z.shape[0], *IMAGE_SHAPE))


class BiGANEncoder(nn.Module):
    """E: x [B, 28, 28, 1] in [0, 1] -> z [B, latent_dim] in the prior's range.

    Dense-LReLU, (Dense-BN-LReLU) per further hidden layer, Dense, sigmoid; `out_low`/`out_high`
    rescale the sigmoid to the prior's support ([0, 1) seed, [-1, 1] official). Sows its last
    hidden layer ("features", [B, hidden[-1]]) and its pre-sigmoid output ("logits") into
    "intermediates": the official code's NNC_e- and NNC_e features (see `BiGAN.features`).
    """

    latent_dim: int = 50
    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    output_bias: bool = True
    bn_affine: bool = True
    bn_flavour: str = "flax"
    bn_momentum: float = 0.99
    init_std: float | None = None
    out_low: float = 0.0
    out_high: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool):
        init = _kernel_init(self.init_std)
        h = _flat(x)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=init, name=f"Dense_{i}")(h)
            if i > 0:  # no BatchNorm on the input layer (as in the official code)
                h = _bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        self.sow("intermediates", "features", h)
        logits = nn.Dense(self.latent_dim, use_bias=self.output_bias, kernel_init=init,
                          name=f"Dense_{len(self.hidden)}")(h)
        self.sow("intermediates", "logits", logits)
        return self.out_low + (self.out_high - self.out_low) * nn.sigmoid(logits)


class JointDiscriminator(nn.Module):
    """D: (x [B, 28, 28, 1], z [B, latent_dim]) -> logit [B].

    `z_input`: "concat" feeds concat(x, z) (834-d) to the first layer; "hidden" (the official
    code) feeds x alone to the first layer and adds a linear map of z to the second layer's
    pre-activation, before its BatchNorm. `zero_output` starts the output weights at zero (the
    official code's linear classifier), so D(x, z) = 0.5 everywhere at init.
    """

    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    output_bias: bool = True
    bn_affine: bool = True
    bn_flavour: str = "flax"
    bn_momentum: float = 0.99
    init_std: float | None = None
    z_input: str = "concat"
    zero_output: bool = False

    @nn.compact
    def __call__(self, x, z, train: bool):
        init = _kernel_init(self.init_std)
        h = _flat(x) if self.z_input == "hidden" else jnp.concatenate([_flat(x), z], axis=-1)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, use_bias=self.hidden_bias, kernel_init=init, name=f"Dense_{i}")(h)
            if i == 1 and self.z_input == "hidden":
                h = h + nn.Dense(width, use_bias=False, kernel_init=init, name="z_in")(z)
            if i > 0:
                h = _bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        out_init = nn.initializers.zeros if self.zero_output else init
        return nn.Dense(1, use_bias=self.output_bias, kernel_init=out_init, name=f"Dense_{len(self.hidden)}")(h)[:, 0]
