"""The AAE `seed` config against Keras-GAN's program (github.com/eriklindernoren/Keras-GAN,
`aae/aae.py`, commit 04e9630), transcribed from Keras 2's maths: Dense (x W + b), LeakyReLU(0.2),
tanh, sigmoid; `binary_crossentropy` on probabilities clipped to [1e-7, 1 - 1e-7] and `mse`;
Adam with eps 1e-7 added to sqrt(v) and the bias correction in the step size, one optimizer
instance -- so one `iterations` counter -- shared by the discriminator and the adversarial
autoencoder; per iteration D.train_on_batch(prior codes, 1), D.train_on_batch(encoded codes, 0),
then AAE.train_on_batch(imgs, [imgs, 1]) against the updated D, each encoding with its own noise.
Gradients of the transcribed forward maths come from jax.grad; the Adam updates are NumPy.
After 1 and 10 iterations on the same batches and draws, the parameters must agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aaejax.models import registry
from conftest import tiny_aae_config

EPS = 1e-7  # K.epsilon()


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def lrelu(x):
    return jnp.where(x > 0, x, 0.2 * x)


def keras_bce(p, y):
    """K.binary_crossentropy(y, p) (TF backend): clip, back to logits, sigmoid cross-entropy."""
    p = jnp.clip(p, EPS, 1 - EPS)
    logits = jnp.log(p / (1 - p))
    return jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def encoder(p, x):
    h = lrelu(dense(p["Dense_1"], lrelu(dense(p["Dense_0"], x.reshape(len(x), -1)))))
    return dense(p["mu"], h), dense(p["log_var"], h)


def decoder(p, z):
    h = lrelu(dense(p["Dense_1"], lrelu(dense(p["Dense_0"], z))))
    return jnp.tanh(dense(p["Dense_2"], h)).reshape(len(z), 28, 28, 1)


def discriminator(p, z):
    h = lrelu(dense(p["Dense_1"], lrelu(dense(p["Dense_0"], z))))
    return jax.nn.sigmoid(dense(p["Dense_2"], h))[:, 0]


class KerasAdam:
    """keras.optimizers.Adam(0.0002, 0.5) of Keras 2.1: `iterations` belongs to the instance."""

    def __init__(self, lr=2e-4, b1=0.5, b2=0.999):
        self.lr, self.b1, self.b2, self.iterations = lr, b1, b2, 0

    def slots(self, params):
        return [jax.tree_util.tree_map(np.zeros_like, params) for _ in range(2)]

    def update(self, params, grads, slots):
        self.iterations += 1
        t = np.float32(self.iterations)
        lr_t = np.float32(self.lr) * (np.sqrt(np.float32(1) - np.float32(self.b2) ** t)
                                      / (np.float32(1) - np.float32(self.b1) ** t))
        m, v = slots
        m = jax.tree_util.tree_map(lambda m, g: self.b1 * m + (1 - self.b1) * np.asarray(g), m, grads)
        v = jax.tree_util.tree_map(lambda v, g: self.b2 * v + (1 - self.b2) * np.square(np.asarray(g)), v, grads)
        new = jax.tree_util.tree_map(lambda p, m, v: p - lr_t * m / (np.sqrt(v) + EPS), params, m, v)
        return new, [m, v]


@jax.jit
def _fake_codes(enc, imgs, eps_d):
    mu, lv = encoder(enc, imgs)
    return mu + eps_d * jnp.exp(lv / 2)  # self.encoder.predict(imgs)


@jax.jit
@jax.grad
def _d_grads(disc, codes, label):
    return keras_bce(discriminator(disc, codes), label)


@jax.jit
@jax.grad
def _ae_grads(ae, disc, imgs, eps_ae):
    mu, lv = encoder(ae["encoder"], imgs)
    z = mu + eps_ae * jnp.exp(lv / 2)
    mse = jnp.mean(jnp.square(decoder(ae["decoder"], z) - imgs))
    return 0.999 * mse + 0.001 * keras_bce(discriminator(disc, z), 1.0)


def keras_iteration(params, slots, adam, imgs, z_real, eps_d, eps_ae):
    """One iteration of AdversarialAutoencoder.train: imgs in [-1, 1]. (The gradients are jitted:
    a few programs instead of a hundred eager ones.)"""
    latent_fake = _fake_codes(params["encoder"], imgs, eps_d)
    for codes, label in ((z_real, 1.0), (latent_fake, 0.0)):  # two train_on_batch calls
        grads = _d_grads(params["discriminator"], codes, label)
        params["discriminator"], slots["discriminator"] = adam.update(params["discriminator"], grads,
                                                                     slots["discriminator"])
    ae = {"encoder": params["encoder"], "decoder": params["decoder"]}
    grads = _ae_grads(ae, params["discriminator"], imgs, eps_ae)
    ae, slots["ae"] = adam.update(ae, grads, slots["ae"])
    params.update(ae)
    return params, slots


def test_seed_aae_matches_keras_gan_step_for_step(bars):
    config = tiny_aae_config()  # the seed variant's choices, at test size
    assert (config.init, config.adam, config.d_update, config.data_order) == (
        "glorot", "keras", "two_batches", "with_replacement")
    model = registry.build_model(config)
    state = model.init(jax.random.PRNGKey(0))
    params = {n: jax.tree_util.tree_map(np.asarray, state.nets[n].params) for n in state.nets}
    adam = KerasAdam()
    slots = {"discriminator": adam.slots(params["discriminator"]),
             "ae": adam.slots({"encoder": params["encoder"], "decoder": params["decoder"]})}
    step = jax.jit(model.train_step)
    rng = np.random.default_rng(0)
    for i in range(10):
        idx = rng.integers(0, len(bars.train_images), config.batch_size)  # np.random.randint
        batch = {"image": jnp.asarray(bars.train_images[idx]), "label": jnp.asarray(bars.train_labels[idx])}
        draws = model.draws(state, batch)  # the same noise for both programs
        imgs = np.asarray(bars.train_images[idx], np.float32) / 127.5 - 1
        params, slots = keras_iteration(params, slots, adam, imgs, draws["z_real"], draws["eps_d"], draws["eps"])
        state, _ = step(state, batch)
        if i in (0, 9):
            for name in ("encoder", "decoder", "discriminator"):
                jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                                       state.nets[name].params, params[name])
