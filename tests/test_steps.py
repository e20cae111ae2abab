"""Each model's train_step (which reuses forward passes through their vjps) equals a naive step
that takes jax.grad of its losses with respect to each network's parameters, written out here
from the losses alone (aaejax/models/losses.py)."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from aaejax.data import augment, images
from aaejax.models import losses, registry
from conftest import batch_of, tiny_aae_config, tiny_bigan_config, tiny_variant

TOL = dict(atol=1e-6, rtol=1e-4)


def _apply(model, net, grads, name=None):
    return net.apply_gradients(model.txs[name], grads)


def naive_aae_step(model, state, batch):
    cfg, nets = model.config, dict(state.nets)
    x = images.signed(batch["image"])
    draws = model.draws(state, batch)
    onehot = jax.nn.one_hot(batch["label"], model.num_classes)
    with_label = lambda z, flag: jnp.concatenate([z, onehot], -1) if flag else z

    def codes(enc_params, eps):
        mu, log_var = model.encoder.apply({"params": enc_params}, x)
        return mu + jnp.exp(0.5 * log_var) * eps

    d = lambda p, z: model.discriminator.apply({"params": p}, with_label(z, model.conditioned))
    fake = jax.lax.stop_gradient(codes(nets["encoder"].params, draws["eps_d"]))
    if cfg.d_update == "two_batches":  # an update on the prior codes, then one on the encoded ones
        for z, label in ((draws["z_real"], 1.0), (fake, 0.0)):
            grads = jax.grad(lambda p: losses.bce_logits(d(p, z), label))(nets["discriminator"].params)
            nets["discriminator"] = _apply(model, nets["discriminator"], grads, "discriminator")
    else:
        grads = jax.grad(lambda p: losses.latent_discriminator_loss(d(p, draws["z_real"]), d(p, fake)))(
            nets["discriminator"].params)
        nets["discriminator"] = _apply(model, nets["discriminator"], grads, "discriminator")

    def ae_loss(enc_params, dec_params):
        z = codes(enc_params, draws["eps"])
        rec = losses.mse(model.decoder.apply({"params": dec_params}, with_label(z, model.supervised)), x)
        adv = losses.fooling_loss(d(nets["discriminator"].params, z))
        return cfg.recon_weight * rec + cfg.adv_weight * adv

    g_enc, g_dec = jax.grad(ae_loss, argnums=(0, 1))(nets["encoder"].params, nets["decoder"].params)
    nets["encoder"] = _apply(model, nets["encoder"], g_enc, "encoder")
    nets["decoder"] = _apply(model, nets["decoder"], g_dec, "decoder")
    return nets


def naive_categorical_step(model, state, batch):
    cfg, nets, d = model.config, dict(state.nets), model._draws(state, batch)
    enc = lambda p, x: model.encoder.apply({"params": p}, x)

    def update_discriminators(logits, z):
        for name, real, fake in (("disc_category", d["y_real"], jax.nn.softmax(logits)),
                                 ("disc_style", d["z_real"], z)):
            module = getattr(model, name)
            loss = lambda p: losses.latent_discriminator_loss(module.apply({"params": p}, real),
                                                              module.apply({"params": p}, jax.lax.stop_gradient(fake)))
            nets[name] = _apply(model, nets[name], jax.grad(loss)(nets[name].params), name)

    def rec(ep, dp):
        logits, z = enc(ep, d["x_in"])
        return losses.mse(model.decoder.apply({"params": dp}, jnp.concatenate([jax.nn.softmax(logits), z], -1)), d["x"])

    def reg(ep):
        logits, z = enc(ep, d["x_in"])
        y = jax.nn.softmax(logits)
        adv = (losses.fooling_loss(model.disc_category.apply({"params": nets["disc_category"].params}, y))
               + losses.fooling_loss(model.disc_style.apply({"params": nets["disc_style"].params}, z)))
        target = jax.lax.stop_gradient(y)
        view = images.signed(augment.random_view(d["k_consist"], batch["image"], cfg.augment_rotation,
                                                 cfg.consistency_shift))
        cons = losses.consistency_kl(target, enc(ep, view)[0])
        return cfg.adv_weight * adv + cfg.balance_weight * losses.category_balance_kl(y) + cfg.consistency_weight * cons

    def sup(ep, dp):
        clean = images.signed(augment.random_view(d["k_shift"], batch["labelled_image"], cfg.augment_rotation,
                                                  cfg.labelled_shift))
        noisy = clean + cfg.input_noise * jax.random.normal(d["k_noise_l"], clean.shape)
        logits, z = enc(ep, noisy)
        code = jnp.concatenate([jax.nn.one_hot(batch["labelled_label"], model.num_categories), z], -1)
        rebuilt = losses.mse(model.decoder.apply({"params": dp}, code), clean) if cfg.labelled_recon else 0.0
        return cfg.supervised_weight * losses.supervised_ce(logits, batch["labelled_label"]) + cfg.recon_weight * rebuilt

    if cfg.phases == "joint":
        update_discriminators(*enc(nets["encoder"].params, d["x_in"]))
        total = lambda ep, dp: cfg.recon_weight * rec(ep, dp) + reg(ep) + (sup(ep, dp) if model.semi_supervised else 0.0)
        g_enc, g_dec = jax.grad(total, argnums=(0, 1))(nets["encoder"].params, nets["decoder"].params)
        nets["encoder"] = _apply(model, nets["encoder"], g_enc, "encoder")
        nets["decoder"] = _apply(model, nets["decoder"], g_dec, "decoder")
        return nets
    g_enc, g_dec = jax.grad(lambda ep, dp: cfg.recon_weight * rec(ep, dp), argnums=(0, 1))(
        nets["encoder"].params, nets["decoder"].params)
    nets["encoder"] = _apply(model, nets["encoder"], g_enc, "encoder")
    nets["decoder"] = _apply(model, nets["decoder"], g_dec, "decoder")
    update_discriminators(*enc(nets["encoder"].params, d["x_in"]))
    nets["encoder"] = _apply(model, nets["encoder"], jax.grad(reg)(nets["encoder"].params), "encoder")
    if model.semi_supervised:
        g_enc, g_dec = jax.grad(sup, argnums=(0, 1))(nets["encoder"].params, nets["decoder"].params)
        nets["encoder"] = _apply(model, nets["encoder"], g_enc, "encoder")
        if cfg.labelled_recon:
            nets["decoder"] = _apply(model, nets["decoder"], g_dec, "decoder")
    return nets


def naive_bigan_step(model, state, batch):
    cfg, nets = model.config, dict(state.nets)
    x = images.unit(batch["image"])
    z = model.prior.sample(state.step_key(), (x.shape[0], model.latent_dim))
    fwd = lambda net, module, *args: module.apply({"params": net[0], "batch_stats": net[1]}, *args, train=True,
                                                  mutable=["batch_stats"])
    gen = lambda p: fwd((p, nets["generator"].batch_stats), model.generator, z)
    enc = lambda p: fwd((p, nets["encoder"].batch_stats), model.encoder, x)

    def d_logits(dp, x_fake, z_real):  # real and fake pairs normalised separately
        run = lambda xx, zz: fwd((dp, nets["discriminator"].batch_stats), model.discriminator, xx, zz)
        (real, s_real), (fake, s_fake) = run(x, z_real), run(x_fake, z)
        stats = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, s_real["batch_stats"], s_fake["batch_stats"])
        return real, fake, stats

    def d_loss(dp):
        real, fake, stats = d_logits(dp, jax.lax.stop_gradient(gen(nets["generator"].params)[0]),
                                     jax.lax.stop_gradient(enc(nets["encoder"].params)[0]))
        return losses.joint_discriminator_loss(real, fake, cfg.loss_scale), stats

    d_grads, d_stats = jax.grad(d_loss, has_aux=True)(nets["discriminator"].params)
    new_d = _apply(model, nets["discriminator"], d_grads, "discriminator").replace(batch_stats=d_stats)
    against = new_d if cfg.update_order == "d_first" else nets["discriminator"]

    def ge_loss(gp, ep):
        run = lambda xx, zz: fwd((against.params, against.batch_stats), model.discriminator, xx, zz)[0]
        real, fake = run(x, enc(ep)[0]), run(gen(gp)[0], z)
        return losses.encoder_generator_loss(real, fake, cfg.loss_scale, cfg.ge_loss)

    g_g, g_e = jax.grad(ge_loss, argnums=(0, 1))(nets["generator"].params, nets["encoder"].params)
    nets["generator"] = _apply(model, nets["generator"], g_g, "generator").replace(
        batch_stats=gen(nets["generator"].params)[1]["batch_stats"])
    nets["encoder"] = _apply(model, nets["encoder"], g_e, "encoder").replace(
        batch_stats=enc(nets["encoder"].params)[1]["batch_stats"])
    nets["discriminator"] = new_d
    return nets


CASES = {
    "aae_seed_two_batches": (lambda: tiny_aae_config(), naive_aae_step, 0),
    "aae_paper_averaged": (lambda: tiny_variant("parzen_keras", hidden=(64, 64), disc_hidden=(32, 32)), naive_aae_step, 0),
    "aae_supervised": (lambda: tiny_variant("supervised"), naive_aae_step, 0),
    "aae_mixture_conditioned": (lambda: tiny_variant("mixture_cond"), naive_aae_step, 0),
    "semi_supervised_joint": (lambda: tiny_variant("semi_supervised_plus"), naive_categorical_step, 8),
    "semi_supervised_sequential_noisy": (
        lambda: tiny_variant("semi_supervised_plus", phases="sequential", input_noise=0.3, lr_schedule="constant"),
        naive_categorical_step, 8),
    "clustering_sequential": (lambda: tiny_variant("clustering_plus"), naive_categorical_step, 0),
    "bigan_official_simultaneous": (lambda: tiny_bigan_config(zero_output=False), naive_bigan_step, 0),
    "bigan_seed_minimax": (lambda: tiny_bigan_config("seed"), naive_bigan_step, 0),
    "bigan_d_first": (lambda: tiny_bigan_config(update_order="d_first", zero_output=False), naive_bigan_step, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_step_equals_naive_gradients_of_its_losses(bars, case):
    make_config, naive, labelled = CASES[case]
    model = registry.build_model(make_config())
    # Plain SGD steps (lr 0.1), so the parameters differ by exactly the gradients' difference (Adam's
    # normalisation would magnify float noise in near-zero gradients).
    model.txs = {name: optax.sgd(0.1) for name in model.txs}
    state = model.init(jax.random.PRNGKey(3))
    for _ in range(2):  # the second step starts from trained weights
        batch = batch_of(bars, 16, labelled)
        want = jax.jit(lambda s, b: naive(model, s, b))(state, batch)
        state, _ = jax.jit(model.train_step)(state, batch)
        for name in want:
            chex.assert_trees_all_close(state.nets[name].params, want[name].params, **TOL)
            chex.assert_trees_all_close(state.nets[name].batch_stats, want[name].batch_stats, **TOL)
