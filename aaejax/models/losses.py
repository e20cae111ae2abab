"""Every loss of every model, as named pure functions on logits (no log(sigmoid) underflows).

Each model's train_step composes these; tests/test_losses.py checks each against a known answer.
"""

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


def half_sse(a: jax.Array, b: jax.Array) -> jax.Array:
    """The AAE paper's reconstruction cost, "half the Euclidean error": 0.5 * the squared error
    summed over each example's pixels, averaged over the batch (a, b [B, ...])."""
    return 0.5 * jnp.mean(jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), -1))


def gan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The GAN paper's discriminator cost: -mean log D(real) - mean log(1 - D(fake))."""
    return bce_logits(real_logits, 1.0) + bce_logits(fake_logits, 0.0)


# ----------------------------------------------------------------------------- AAEs


def latent_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """A latent discriminator's loss: prior samples = real, encodings = fake, the two BCEs averaged
    (Keras's 0.5 * (loss on the real batch + loss on the fake batch))."""
    return 0.5 * (bce_logits(real_logits, 1.0) + bce_logits(fake_logits, 0.0))


def fooling_loss(fake_logits: jax.Array) -> jax.Array:
    """The encoder's adversarial loss: BCE of D on its codes against the label "real"."""
    return bce_logits(fake_logits, 1.0)


def category_balance_kl(y: jax.Array) -> jax.Array:
    """KL(batch-mean y || uniform) of softmax outputs y [B, K]: 0 when every category is used
    equally often in the batch."""
    mean_y = jnp.mean(y, 0)
    return jnp.log(y.shape[-1]) + jnp.sum(mean_y * jnp.log(mean_y + 1e-12))


def consistency_kl(target: jax.Array, view_logits: jax.Array) -> jax.Array:
    """Mean KL(target || softmax(view_logits)) over the batch: target [B, K] probabilities of the
    plain images (held fixed), view_logits [B, K] the encoder's on a warped view of them."""
    log_q = jax.nn.log_softmax(view_logits)
    return jnp.mean(jnp.sum(target * (jnp.log(target + 1e-12) - log_q), -1))


def supervised_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of category logits [B, K] against int labels [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ----------------------------------------------------------------------------- BiGAN


def joint_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, scale: float) -> jax.Array:
    """D on (x, E(x)) = real and (G(z), z) = fake: scale * (BCE(real, 1) + BCE(fake, 0))."""
    return scale * gan_discriminator_loss(real_logits, fake_logits)


def encoder_generator_loss(real_logits: jax.Array, fake_logits: jax.Array, scale: float,
                           kind: str = "flipped") -> jax.Array:
    """G's and E's loss. "flipped" (non-saturating): D's BCE with the labels swapped; "minimax":
    minus D's loss."""
    if kind == "flipped":
        return scale * (bce_logits(real_logits, 0.0) + bce_logits(fake_logits, 1.0))
    return -joint_discriminator_loss(real_logits, fake_logits, scale)
