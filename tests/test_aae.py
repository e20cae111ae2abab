"""AAE: network shapes, one step's purity and effect, learning on a small set."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aaejax import trainer
from aaejax.aae import AAE
from aaejax.models import AAEDecoder, AAEEncoder, LatentDiscriminator
from conftest import tiny_aae_config


def test_seed_networks_shapes():
    """The seed architecture: 784->512->512->(10, 10); 10->512->512->784; 10->512->256->1."""
    key = jax.random.PRNGKey(0)
    x, z = jnp.zeros((3, 28, 28, 1)), jnp.zeros((3, 10))
    enc, dec, disc = AAEEncoder(10), AAEDecoder(), LatentDiscriminator()
    mu, log_var = enc.apply(enc.init(key, x), x)
    chex.assert_shape([mu, log_var], [(3, 10)] * 2)
    dv = dec.init(key, z)
    out = dec.apply(dv, z)
    chex.assert_shape(out, (3, 28, 28, 1))
    assert float(jnp.max(jnp.abs(out))) <= 1.0  # tanh
    chex.assert_shape(disc.apply(disc.init(key, z), z), (3,))
    kernels = [p["kernel"].shape for p in dv["params"].values()]
    assert kernels == [(10, 512), (512, 512), (512, 784)]


def _batch(ds, n):
    return {"image": jnp.asarray(ds.train_images[:n]), "label": jnp.asarray(ds.train_labels[:n])}


def test_one_step_keeps_shapes_is_finite_and_changes_every_tree(bars):
    model = AAE(tiny_aae_config())
    state = model.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(model.train_step)(state, _batch(bars, 16))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
    chex.assert_tree_all_finite((new, metrics))
    for name in ("encoder", "decoder", "discriminator"):
        diff = jax.tree_util.tree_map(lambda a, b: jnp.any(a != b), state.nets[name].params, new.nets[name].params)
        assert any(jax.tree_util.tree_leaves(diff)), f"{name} params did not change"
    assert int(new.step) == 1
    assert set(metrics) >= {"d_loss", "d_accuracy", "recon_mse", "adv_loss", "lr_discriminator", "lr_autoencoder"}


def test_discriminator_steps_first_and_the_autoencoder_trains_against_it(bars):
    """D's update does not depend on the autoencoder's (it comes first, on detached codes); the
    encoder's does depend on D's (it is taken against the updated D); the decoder's does not (the
    adversarial term reaches the encoder only)."""
    def step(frozen):
        model = AAE(tiny_aae_config())
        model.txs = dict(model.txs, **{n: optax.set_to_zero() for n in frozen})
        state = model.init(jax.random.PRNGKey(1))
        return jax.jit(model.train_step)(state, _batch(bars, 16))[0].nets

    full, ae_frozen, d_frozen = step(()), step(("encoder", "decoder")), step(("discriminator",))
    chex.assert_trees_all_equal(full["discriminator"].params, ae_frozen["discriminator"].params)
    diff = jax.tree_util.tree_map(lambda a, b: jnp.any(a != b), full["encoder"].params, d_frozen["encoder"].params)
    assert any(jax.tree_util.tree_leaves(diff)), "the encoder's update ignored the updated discriminator"
    chex.assert_trees_all_equal(full["decoder"].params, d_frozen["decoder"].params)


def test_training_lowers_reconstruction_error(bars):
    config = tiny_aae_config(batch_size=32, lr=1e-3)
    model = AAE(config)
    state = model.init(jax.random.PRNGKey(0))
    chunk = trainer.make_train_chunk(model, config.batch_size, bars.train_images.shape[0], data_seed=0)
    x = jnp.asarray(bars.test_images, jnp.float32) / 255.0
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
