"""BiGAN: shapes, one step, BatchNorm handling in eval mode, the paper schedule."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aaejax.data import datasets as data_lib
from aaejax.data import images
from aaejax.models.bigan import BiGAN
from aaejax.models.nets import BiGANEncoder, BiGANGenerator, JointDiscriminator
from conftest import batch_of, tiny_bigan_config
from experiments import bigan as bigan_exp


def test_seed_networks_shapes():
    key = jax.random.PRNGKey(0)
    x, z = jnp.zeros((4, 28, 28, 1)), jnp.zeros((4, 50))
    g, e, d = BiGANGenerator(), BiGANEncoder(50), JointDiscriminator()
    gv = g.init(key, z, train=False)
    out = g.apply(gv, z, train=False)
    chex.assert_shape(out, (4, 28, 28, 1))
    assert [p["kernel"].shape for k, p in gv["params"].items() if k.startswith("Dense")] == [
        (50, 1024), (1024, 1024), (1024, 784)]
    ev = e.init(key, x, train=False)
    chex.assert_shape(e.apply(ev, x, train=False), (4, 50))
    dv = d.init(key, x, z, train=False)
    assert dv["params"]["Dense_0"]["kernel"].shape == (834, 1024)
    chex.assert_shape(d.apply(dv, x, z, train=False), (4,))


@pytest.mark.parametrize("variant", ["official", "seed"])
def test_one_step_keeps_shapes(bars, variant):
    """Shapes, finiteness, BatchNorm statistics kept per network (the step's values: test_steps.py)."""
    model = BiGAN(tiny_bigan_config(variant))
    state = model.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(model.train_step)(state, batch_of(bars, 16))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
    chex.assert_tree_all_finite((new, metrics))
    for name in ("generator", "encoder", "discriminator"):
        assert state.nets[name].batch_stats, f"{name} has BatchNorm statistics"


@pytest.mark.parametrize("order", ["d_first", "simultaneous"])
def test_update_order(bars, order):
    """D's update never depends on G's and E's. With d_first, theirs are taken against the updated
    D; simultaneously (the official code), against the same pre-step D as D's own update."""
    batch = batch_of(bars, 16)

    def step(frozen):
        model = BiGAN(tiny_bigan_config(update_order=order, zero_output=False))
        model.txs = dict(model.txs, **{n: optax.set_to_zero() for n in frozen})
        return jax.jit(model.train_step)(model.init(jax.random.PRNGKey(0)), batch)[0].nets

    # A frozen optimizer makes another program, which XLA may fuse and round differently in the
    # last bit (measured: 4e-9); a dependence on the other update moves G and E by 4e-4.
    same = dict(rtol=1e-6, atol=1e-7)
    full, ge_frozen, d_frozen = step(()), step(("generator", "encoder")), step(("discriminator",))
    chex.assert_trees_all_close(full["discriminator"].params, ge_frozen["discriminator"].params, **same)
    for name in ("generator", "encoder"):
        if order == "simultaneous":
            chex.assert_trees_all_close(full[name].params, d_frozen[name].params, **same)
        else:
            apart = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b, **same), full[name].params,
                                           d_frozen[name].params)
            assert any(jax.tree_util.tree_leaves(apart)), f"{name}'s update ignored the updated discriminator"


def test_eval_mode_is_independent_of_batch_composition(bars):
    model = BiGAN(tiny_bigan_config())
    state = model.init(jax.random.PRNGKey(0))
    state = model.prepare_eval(state, jnp.asarray(bars.train_images), jax.random.PRNGKey(1))
    x = images.unit(bars.test_images[:32])
    z_all = model.encode(state, x)
    z_part = model.encode(state, x[:5])
    z_other = model.encode(state, jnp.concatenate([x[:5], 1.0 - x[5:]]))
    chex.assert_trees_all_close(z_all[:5], z_part, atol=1e-5)
    chex.assert_trees_all_close(z_all[:5], z_other[:5], atol=1e-5)
    codes = jax.random.uniform(jax.random.PRNGKey(2), (12, 8), minval=-1, maxval=1)
    chex.assert_trees_all_close(model.decode(state, codes)[:3], model.decode(state, codes[:3]), atol=1e-5)


def test_official_schedule_is_set_once_an_epoch():
    """train_gan.py's set_lr: 2e-4 for epochs 0-199, then lr * 0.01 ** ((epoch - 199) / 200)."""
    config = bigan_exp.get_config("official")
    sched = BiGAN(config).schedules["generator"]
    epoch = 391
    assert config.num_steps == 400 * epoch
    for e in (0, 1, 199, 200, 250, 399):
        want = 2e-4 if e < 200 else 2e-4 * 0.01 ** ((e - 199) / 200)
        for step in (e * epoch, e * epoch + 390):
            np.testing.assert_allclose(sched(step), want, rtol=1e-5)


def test_official_config_choices():
    c = bigan_exp.get_config("official")
    assert (c.prior_low, c.prior_high, c.hidden_bias, c.output_bias, c.bn_affine, c.init_std, c.weight_decay) == (
        -1.0, 1.0, False, False, False, 0.02, 2.5e-5)
    assert (c.z_input, c.g_z_skip, c.zero_output, c.loss_scale, c.update_order, c.adam, c.bn_flavour) == (
        "hidden", True, True, 0.5, "simultaneous", "dcgan", "official")
    assert (c.data_split, c.data_order, c.bn_eval_batches) == ("official", "stream", 1000)
    model = BiGAN(tiny_bigan_config("official"))
    state = model.init(jax.random.PRNGKey(0))
    for name in ("generator", "encoder", "discriminator"):
        leaves = jax.tree_util.tree_leaves_with_path(state.nets[name].params)
        assert all(path[-1].key == "kernel" for path, _ in leaves), f"{name} has a bias"
    assert not np.any(state.nets["discriminator"].params["Dense_2"]["kernel"])
    z = model.encode(state, jnp.ones((2, 28, 28, 1)) * 0.5)
    assert float(z.min()) >= -1 and float(z.max()) <= 1


def test_features_are_the_encoders_last_hidden_layer_and_its_linear_output(bars):
    """model.features against a direct forward pass of the official encoder: x W0 -> LReLU ->
    x W1 -> BN with the deploy statistics (epsilon 1e-8) -> LReLU = features; features W2 =
    logits, and E(x) = 2 sigmoid(logits) - 1."""
    model = BiGAN(tiny_bigan_config())
    state = model.init(jax.random.PRNGKey(0))
    state = model.prepare_eval(state, jnp.asarray(bars.train_images), jax.random.PRNGKey(1))
    x = np.asarray(images.unit(bars.test_images[:20]))
    logits, hidden = model.features(state, x)
    p, bn = state.nets["encoder"].params, state.nets["encoder"].batch_stats["bn1"]
    lrelu = lambda a: np.where(a > 0, a, 0.2 * a)
    h = lrelu(x.reshape(20, -1) @ np.asarray(p["Dense_0"]["kernel"]))
    h = h @ np.asarray(p["Dense_1"]["kernel"])
    h = lrelu((h - np.asarray(bn["mean"])) / np.sqrt(np.asarray(bn["var"]) + 1e-8))
    chex.assert_shape(hidden, (20, 64))
    np.testing.assert_allclose(hidden, h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, h @ np.asarray(p["Dense_2"]["kernel"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.encode(state, x), 2 / (1 + np.exp(-np.asarray(logits))) - 1, atol=1e-5)


def test_deploy_statistics_are_the_mean_of_unbiased_batch_statistics(bars):
    """The official deploy step: the population mean is the average of the batch means, the
    variance the average of the batches' unbiased variances (n / (n - 1)), in E and in G; the
    batches walk the training images epoch by epoch, each epoch in a fresh order."""
    config = tiny_bigan_config(bn_eval_batches=3)  # batch 16, official: no biases, G's bn0 too
    model = BiGAN(config)
    state = model.init(jax.random.PRNGKey(0))
    train_images = jnp.asarray(bars.train_images[:40])  # two batches an epoch: the third is the next epoch's
    key = jax.random.PRNGKey(1)
    new = model.prepare_eval(state, train_images, key)
    k_perm, k_z = jax.random.split(key)
    perms = [np.asarray(jax.random.permutation(k, 40)) for k in (k_perm, jax.random.fold_in(k_perm, 1))]
    batches = [perms[0][:16], perms[0][16:32], perms[1][:16]]
    enc, gen = state.nets["encoder"].params, state.nets["generator"].params
    lrelu = lambda a: np.where(a > 0, a, 0.2 * a)
    pre = {"encoder": [], "generator": []}
    for i, idx in enumerate(batches):
        x = np.asarray(train_images[idx], np.float32).reshape(16, -1) / 255.0
        pre["encoder"].append(lrelu(x @ np.asarray(enc["Dense_0"]["kernel"])) @ np.asarray(enc["Dense_1"]["kernel"]))
        z = np.asarray(model.prior.sample(jax.random.fold_in(k_z, i), (16, model.latent_dim)))
        pre["generator"].append(z @ np.asarray(gen["Dense_0"]["kernel"]))
    for net, layer in (("encoder", "bn1"), ("generator", "bn0")):
        stats = new.nets[net].batch_stats[layer]
        np.testing.assert_allclose(stats["mean"], np.mean([a.mean(0) for a in pre[net]], 0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats["var"], np.mean([a.var(0, ddof=1) for a in pre[net]], 0), rtol=1e-4, atol=1e-7)


def test_official_split():
    """load.mnist_with_valid_set: RandomState(42) shuffles the 60 000; the first 50 000 train."""
    train, held = data_lib.official_split()
    assert (len(train), len(held)) == (50000, 10000)
    assert len(np.union1d(train, held)) == 60000
    np.testing.assert_array_equal(train[:6], [12628, 37730, 39991, 8525, 8279, 51012])
    np.testing.assert_array_equal(held[:6], [3675, 15450, 20608, 46531, 6749, 32888])
