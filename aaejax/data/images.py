"""The one home of image scaling. Data arrive as uint8 0..255; the API speaks float32 in [0, 1];
the AAEs' networks work in [-1, 1] (their decoders end in tanh), the BiGAN's in [0, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unit(x: jax.Array) -> jax.Array:
    """uint8 0..255 or float [0, 1] images -> float32 [0, 1]."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def signed(x: jax.Array) -> jax.Array:
    """uint8 0..255 or float [0, 1] images -> float32 [-1, 1]."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 127.5 - 1.0
    return x.astype(jnp.float32) * 2.0 - 1.0


def unit_from_signed(x: jax.Array) -> jax.Array:
    """[-1, 1] -> [0, 1], clipped."""
    return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)


def unit_mse_from_signed(mse: jax.Array) -> jax.Array:
    """An MSE between [-1, 1] images in [0, 1]-pixel units (what evaluate reports): a quarter."""
    return mse / 4
