"""AAE: network shapes, one step's purity and effect, learning on a small set."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aaejax.data import images
from aaejax.run import trainer
from aaejax.models.aae import AAE
from aaejax.models.nets import AAEDecoder, aae_encoder, LatentDiscriminator
from conftest import batch_of, tiny_aae_config


def test_seed_networks_shapes():
    """The seed architecture: 784->512->512->(10, 10); 10->512->512->784; 10->512->256->1."""
    key = jax.random.PRNGKey(0)
    x, z = jnp.zeros((3, 28, 28, 1)), jnp.zeros((3, 10))
    enc, dec, disc = aae_encoder(10), AAEDecoder(), LatentDiscriminator()
    mu, log_var = enc.apply(enc.init(key, x), x)
    chex.assert_shape([mu, log_var], [(3, 10)] * 2)
    dv = dec.init(key, z)
    out = dec.apply(dv, z)
    chex.assert_shape(out, (3, 28, 28, 1))
    assert float(jnp.max(jnp.abs(out))) <= 1.0  # tanh
    chex.assert_shape(disc.apply(disc.init(key, z), z), (3,))
    kernels = [p["kernel"].shape for p in dv["params"].values()]
    assert kernels == [(10, 512), (512, 512), (512, 784)]


def test_one_step_keeps_shapes_and_metrics(bars):
    """Shapes, finiteness and the metrics of one step (its values: test_steps.py)."""
    model = AAE(tiny_aae_config())
    state = model.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(model.train_step)(state, batch_of(bars, 16))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
    chex.assert_tree_all_finite((new, metrics))
    assert int(new.step) == 1
    assert set(metrics) == {"d_loss", "d_accuracy", "ae_loss", "recon_mse", "adv_loss", "lr_discriminator",
                            "lr_autoencoder"}
    # recon_mse is in [0, 1] pixels (the loss's MSE is on the [-1, 1] scale: 4x)
    np.testing.assert_allclose(metrics["ae_loss"], 0.999 * 4 * metrics["recon_mse"] + 0.001 * metrics["adv_loss"],
                               rtol=1e-5)


def test_training_lowers_reconstruction_error(bars):
    config = tiny_aae_config(batch_size=32, lr=1e-3)
    model = AAE(config)
    state = model.init(jax.random.PRNGKey(0))
    chunk = trainer.make_train_chunk(model, config.batch_size, bars.train_images.shape[0], data_seed=0)
    x = images.unit(bars.test_images)
    before = float(jnp.mean((model.reconstruct(state, x) - x) ** 2))
    state, metrics, _ = chunk(state, jnp.asarray(bars.train_images), jnp.asarray(bars.train_labels), length=300)
    after = float(jnp.mean((model.reconstruct(state, x) - x) ** 2))
    assert after < 0.5 * before, (before, after)
    assert metrics["recon_mse"][-20:].mean() < metrics["recon_mse"][:20].mean()


def test_encode_is_deterministic_posterior_mean():
    model = AAE(tiny_aae_config())
    state = model.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 28, 28, 1))
    z1, z2 = model.encode(state, x), model.encode(state, x)
    chex.assert_shape(z1, (5, 4))
    chex.assert_trees_all_equal(z1, z2)
    mu, _ = model.encoder.apply(state.nets["encoder"].variables, x * 2 - 1)
    chex.assert_trees_all_close(z1, mu)
