"""BiGAN: shapes, one step, BatchNorm handling in eval mode, the paper schedule."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aaejax.bigan import BiGAN
from aaejax.models import BiGANEncoder, BiGANGenerator, JointDiscriminator
from conftest import tiny_bigan_config
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


@pytest.mark.parametrize("variant,d_bn", [("official", "separate"), ("seed", "separate"), ("official", "joint")])
def test_one_step(bars, variant, d_bn):
    model = BiGAN(tiny_bigan_config(variant, d_bn=d_bn))
    state = model.init(jax.random.PRNGKey(0))
    batch = {"image": jnp.asarray(bars.train_images[:16]), "label": jnp.asarray(bars.train_labels[:16])}
    new, metrics = jax.jit(model.train_step)(state, batch)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
    chex.assert_tree_all_finite((new, metrics))
    for name in ("generator", "encoder", "discriminator"):
        before, after = jax.tree_util.tree_leaves(state.nets[name].params), jax.tree_util.tree_leaves(new.nets[name].params)
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
        assert state.nets[name].batch_stats, f"{name} has BatchNorm statistics"


@pytest.mark.parametrize("order", ["d_first", "simultaneous"])
def test_update_order(bars, order):
    """D's update never depends on G's and E's. With d_first, theirs are taken against the updated
    D; simultaneously (the official code), against the same pre-step D as D's own update."""
    batch = {"image": jnp.asarray(bars.train_images[:16]), "label": jnp.asarray(bars.train_labels[:16])}

    def step(frozen):
        model = BiGAN(tiny_bigan_config(update_order=order, zero_output=False))
        model.txs = dict(model.txs, **{n: optax.set_to_zero() for n in frozen})
        return jax.jit(model.train_step)(model.init(jax.random.PRNGKey(0)), batch)[0].nets

    full, ge_frozen, d_frozen = step(()), step(("generator", "encoder")), step(("discriminator",))
    chex.assert_trees_all_equal(full["discriminator"].params, ge_frozen["discriminator"].params)
    for name in ("generator", "encoder"):
        if order == "simultaneous":
            chex.assert_trees_all_equal(full[name].params, d_frozen[name].params)
        else:
            diff = jax.tree_util.tree_map(lambda a, b: jnp.any(a != b), full[name].params, d_frozen[name].params)
            assert any(jax.tree_util.tree_leaves(diff)), f"{name}'s update ignored the updated discriminator"


def test_eval_mode_is_independent_of_batch_composition(bars):
    model = BiGAN(tiny_bigan_config())
    state = model.init(jax.random.PRNGKey(0))
    state = model.prepare_eval(state, jnp.asarray(bars.train_images), jax.random.PRNGKey(1))
    x = jnp.asarray(bars.test_images[:32], jnp.float32) / 255.0
    z_all = model.encode(state, x)
    z_part = model.encode(state, x[:5])
    z_other = model.encode(state, jnp.concatenate([x[:5], 1.0 - x[5:]]))
    chex.assert_trees_all_close(z_all[:5], z_part, atol=1e-5)
    chex.assert_trees_all_close(z_all[:5], z_other[:5], atol=1e-5)
    codes = jax.random.uniform(jax.random.PRNGKey(2), (12, 8), minval=-1, maxval=1)
    chex.assert_trees_all_close(model.decode(state, codes)[:3], model.decode(state, codes[:3]), atol=1e-5)


def test_prepare_eval_recomputes_population_statistics(bars):
    model = BiGAN(tiny_bigan_config())
    state = model.init(jax.random.PRNGKey(0))
    images = jnp.asarray(bars.train_images)
    new = model.prepare_eval(state, images, jax.random.PRNGKey(1))
    # The encoder's statistics equal those of its first hidden layer's pre-activations over data.
    stats = new.nets["encoder"].batch_stats["bn1"]
    chex.assert_tree_all_finite(stats)
    assert not np.allclose(stats["mean"], state.nets["encoder"].batch_stats["bn1"]["mean"])
    assert np.all(np.asarray(stats["var"]) > 0)


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
