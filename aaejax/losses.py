"""Pure loss functions. Everything works on logits, so no log(sigmoid) ever underflows."""

import jax
import jax.numpy as jnp
import optax


def bce_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant target (0 or 1)."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def accuracy_logits(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Discriminator accuracy over a real batch (label 1) and a fake batch (label 0)."""
    return 0.5 * (jnp.mean(real_logits > 0) + jnp.mean(fake_logits <= 0))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))
