"""Flax Linen networks of both models. Images enter flattened or as [B, 28, 28, 1].

Every module takes `train: bool` explicitly where it has BatchNorm; discriminators return logits
(the sigmoid lives in the loss, see losses.py). `init` picks each Dense layer's initialisers, as
the program a config follows has them: "default" (Flax: LeCun normal kernels, or N(0, init_std)
where the module has init_std > 0; zero biases), "glorot" (Keras: Glorot uniform kernels, zero
biases) or "torch" (PyTorch's nn.Linear: kernel and bias uniform in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aaejax.configs import INITS

IMAGE_SHAPE = (28, 28, 1)
IMAGE_DIM = 28 * 28


def leaky_relu(x):
    return nn.leaky_relu(x, negative_slope=0.2)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


def dense(h: jax.Array, width: int, name: str | None = None, init: str = "default", std: float | None = None,
          use_bias: bool = True, zero: bool = False) -> jax.Array:
    """A Dense layer inside a compact module, initialised as `init` says (module docstring);
    `zero` starts its kernel at zero."""
    if zero:
        kernel = nn.initializers.zeros
    elif init == "torch":
        kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # kaiming_uniform_(a=sqrt(5))
    elif init == "glorot":
        kernel = nn.initializers.glorot_uniform()
    elif init != "default":
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    else:
        kernel = nn.initializers.normal(std) if std else nn.initializers.lecun_normal()
    bias = nn.initializers.zeros
    if init == "torch":
        bound = 1 / math.sqrt(h.shape[-1])
        bias = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
    return nn.Dense(width, use_bias=use_bias, kernel_init=kernel, bias_init=bias, name=name)(h)


def _leaky_mlp(h: jax.Array, hidden: Sequence[int], init: str = "default") -> jax.Array:
    """Dense + LeakyReLU(0.2) per width, named Dense_0, Dense_1, ..."""
    for i, width in enumerate(hidden):
        h = leaky_relu(dense(h, width, f"Dense_{i}", init))
    return h


# ----------------------------------------------------------------------------- AAE


class TwoHeadEncoder(nn.Module):
    """x [B, 28, 28, 1] in [-1, 1] -> one [B, width] output per (name, width) of `heads`: a
    Dense + LeakyReLU(0.2) trunk, then a linear head each."""

    heads: tuple[tuple[str, int], ...]
    hidden: Sequence[int] = (512, 512)
    init_kind: str = "default"

    @nn.compact
    def __call__(self, x):
        h = _leaky_mlp(_flat(x), self.hidden, self.init_kind)
        return tuple(dense(h, width, name, self.init_kind) for name, width in self.heads)


def aae_encoder(latent_dim: int = 10, hidden: Sequence[int] = (512, 512), init_kind: str = "default") -> TwoHeadEncoder:
    """The AAE's encoder: x -> (mu, log_var), each [B, latent_dim]."""
    return TwoHeadEncoder((("mu", latent_dim), ("log_var", latent_dim)), tuple(hidden), init_kind)


def categorical_encoder(num_categories: int = 10, style_dim: int = 10, hidden: Sequence[int] = (1000, 1000),
                        init_kind: str = "default") -> TwoHeadEncoder:
    """The semi-supervised / clustering AAE's deterministic encoder: x -> (category logits
    [B, num_categories], style [B, style_dim])."""
    return TwoHeadEncoder((("category", num_categories), ("style", style_dim)), tuple(hidden), init_kind)


class AAEDecoder(nn.Module):
    """z [B, latent_dim] -> x [B, 28, 28, 1] in [-1, 1] (tanh)."""

    hidden: Sequence[int] = (512, 512)
    init_kind: str = "default"

    @nn.compact
    def __call__(self, z):
        h = _leaky_mlp(z, self.hidden, self.init_kind)
        x = dense(h, IMAGE_DIM, f"Dense_{len(self.hidden)}", self.init_kind)
        return jnp.tanh(x).reshape((z.shape[0], *IMAGE_SHAPE))


class LatentDiscriminator(nn.Module):
    """z [B, latent_dim] -> logit [B] (prior sample = real)."""

    hidden: Sequence[int] = (512, 256)
    init_kind: str = "default"

    @nn.compact
    def __call__(self, z):
        h = _leaky_mlp(z, self.hidden, self.init_kind)
        return dense(h, 1, f"Dense_{len(self.hidden)}", self.init_kind)[:, 0]


# ----------------------------------------------------------------------------- the AAE paper's own


def _relu_mlp(h: jax.Array, hidden: Sequence[int], std: float) -> jax.Array:
    """Dense (N(0, std) kernels, zero biases) + ReLU per width, named Dense_0, Dense_1, ..."""
    for i, width in enumerate(hidden):
        h = nn.relu(dense(h, width, f"Dense_{i}", std=std))
    return h


def _relu_mlp_out(h: jax.Array, hidden: Sequence[int], width: int, std: float) -> jax.Array:
    """_relu_mlp, then a linear layer of `width` (named Dense_<len(hidden)>)."""
    return dense(_relu_mlp(h, hidden, std), width, f"Dense_{len(hidden)}", std=std)


class PaperEncoder(nn.Module):
    """The AAE paper's deterministic encoder (its Appendix A): x [B, 28, 28, 1] in [0, 1] ->
    (category logits [B, num_categories], or None when num_categories = 0; z [B, latent_dim]).
    One ReLU trunk shared by both heads; the z head is linear, q(y|x) is a softmax of the logits."""

    num_categories: int
    latent_dim: int
    hidden: Sequence[int] = (1000, 1000)
    init_std: float = 0.01

    @nn.compact
    def __call__(self, x):
        h = _relu_mlp(_flat(x), self.hidden, self.init_std)
        logits = dense(h, self.num_categories, "category", std=self.init_std) if self.num_categories else None
        return logits, dense(h, self.latent_dim, "z", std=self.init_std)


class PaperDecoder(nn.Module):
    """code [B, D] -> x [B, 28, 28, 1] in [0, 1]: ReLU layers, then a sigmoid (the paper's MNIST)."""

    hidden: Sequence[int] = (1000, 1000)
    init_std: float = 0.01

    @nn.compact
    def __call__(self, code):
        return nn.sigmoid(_relu_mlp_out(code, self.hidden, IMAGE_DIM, self.init_std)).reshape((code.shape[0], *IMAGE_SHAPE))


class PaperDiscriminator(nn.Module):
    """code [B, D] -> logit [B] (prior sample = real): ReLU layers, a linear output."""

    hidden: Sequence[int] = (1000, 1000)
    init_std: float = 0.01

    @nn.compact
    def __call__(self, code):
        return _relu_mlp_out(code, self.hidden, 1, self.init_std)[:, 0]


# ----------------------------------------------------------------------------- BiGAN

# BatchNorm flavours, each the normalisation of one program: epsilon, and whether the batch
# variance is E[x^2] - E[x]^2 (flax's fast form) or the mean squared deviation.
BN_FLAVOURS = {"flax": (1e-5, True), "official": (1e-8, False), "torch": (1e-5, False)}


def _bn(train: bool, affine: bool, flavour: str, momentum: float, name: str):
    # use_running_average=not train: batch statistics in training, population statistics in eval.
    epsilon, fast_variance = BN_FLAVOURS[flavour]
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        use_bias=affine, use_scale=affine, use_fast_variance=fast_variance, name=name)


class BiGANGenerator(nn.Module):
    """G: z [B, latent_dim] -> x [B, 28, 28, 1] in [0, 1]. (Dense-BN-ReLU) per hidden layer (no BN
    on the first without `bn_first`, as in the PyTorch seed program), Dense, sigmoid. `z_skip`:
    every hidden layer after the first also gets a linear map of z added before its BatchNorm
    (the official code's conditioning of its generator on z)."""

    hidden: Sequence[int] = (1024, 1024)
    hidden_bias: bool = True
    output_bias: bool = True
    bn_affine: bool = True
    bn_flavour: str = "flax"
    bn_momentum: float = 0.99
    init_std: float | None = None
    init_kind: str = "default"
    z_skip: bool = False
    bn_first: bool = True

    @nn.compact
    def __call__(self, z, train: bool):
        h = z
        for i, width in enumerate(self.hidden):
            h = dense(h, width, f"Dense_{i}", self.init_kind, self.init_std, self.hidden_bias)
            if i > 0 and self.z_skip:
                h = h + dense(z, width, f"z_skip_{i}", self.init_kind, self.init_std, use_bias=False)
            if i > 0 or self.bn_first:
                h = _bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h)
            h = nn.relu(h)
        x = dense(h, IMAGE_DIM, f"Dense_{len(self.hidden)}", self.init_kind, self.init_std, self.output_bias)
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
    init_kind: str = "default"
    out_low: float = 0.0
    out_high: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool):
        h = _flat(x)
        for i, width in enumerate(self.hidden):
            h = dense(h, width, f"Dense_{i}", self.init_kind, self.init_std, self.hidden_bias)
            if i > 0:  # no BatchNorm on the input layer (as in the official code)
                h = _bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        self.sow("intermediates", "features", h)
        logits = dense(h, self.latent_dim, f"Dense_{len(self.hidden)}", self.init_kind, self.init_std, self.output_bias)
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
    init_kind: str = "default"
    z_input: str = "concat"
    zero_output: bool = False

    @nn.compact
    def __call__(self, x, z, train: bool):
        h = _flat(x) if self.z_input == "hidden" else jnp.concatenate([_flat(x), z], axis=-1)
        for i, width in enumerate(self.hidden):
            h = dense(h, width, f"Dense_{i}", self.init_kind, self.init_std, self.hidden_bias)
            if i == 1 and self.z_input == "hidden":
                h = h + dense(z, width, "z_in", self.init_kind, self.init_std, use_bias=False)
            if i > 0:
                h = _bn(train, self.bn_affine, self.bn_flavour, self.bn_momentum, f"bn{i}")(h)
            h = leaky_relu(h)
        return dense(h, 1, f"Dense_{len(self.hidden)}", self.init_kind, self.init_std, self.output_bias,
                     zero=self.zero_output)[:, 0]
