"""The AAE paper's categorical models: semi-supervised classification and unsupervised clustering.

The encoder q(y, z | x) has two heads: a categorical y (softmax over `num_categories`) and a
style z. The decoder sees concat(softmax(y), z). Two discriminators impose the priors: D_cat
learns one-hot samples of Cat(K) = real vs softmax(y) = fake, D_style learns N(0, s^2 I) = real
vs z = fake. Losses (losses.py; weights in the config):
  reconstruction   recon_weight * MSE(decoder(y, z), x)                       encoder, decoder
  regularisation   both discriminators on prior vs encodings                 D_cat, D_style
                   adv_weight * (fooling(D_cat(y)) + fooling(D_style(z)))
                   + balance_weight * KL(batch-mean y || uniform)            encoder
                   + consistency_weight * KL(y(x) || y(view of x))           encoder (not in the paper)
  supervised       supervised_weight * CE(y, label) on a labelled batch      encoder
                   (+ recon_weight * MSE(decoder(one_hot(label), z), x) with labelled_recon)
Two update orders compose the same pieces: `phases="sequential"` (the paper) makes the three
updates one after another in each step, each on the parameters the previous one left;
`phases="joint"` updates the discriminators, then encoder and decoder once on the weighted sum.
`input_noise` > 0 trains a denoising encoder (it sees x + noise, the decoder rebuilds x). The
labelled images are shifted by up to `labelled_shift` pixels and turned by up to
`augment_rotation` degrees, the consistency view by up to `consistency_shift` pixels and the same
angle. With `num_labels` = 0 it is the clustering model (K = 16 in the paper's set-up); with
`num_labels` > 0 the trainer supplies a labelled batch from a class-balanced subset chosen by the
seed (`batch['labelled_image']`, `batch['labelled_label']`, see `labelled_streams`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aaejax.data import augment, batching, images
from aaejax.models import losses
from aaejax.models.nets import IMAGE_SHAPE, AAEDecoder, categorical_encoder, LatentDiscriminator
from aaejax.models.optim import make_optimizers
from aaejax.models.priors import Gaussian
from aaejax.models.schemas import SCHEMAS
from aaejax.models.protocol import ConfigEquality
from aaejax.models.state import NetState, TrainState

NETS = ("encoder", "decoder", "disc_category", "disc_style")


def add_trees(a, b):
    """Gradients of two losses, summed leaf by leaf."""
    return jax.tree_util.tree_map(jnp.add, a, b)


class CategoricalAAE(ConfigEquality):
    """The trainer's model protocol (aaejax/models/protocol.py) for the semi-supervised / clustering AAE."""

    name = "aae"
    SCHEMA = SCHEMAS["aae"]["categorical"]
    needs_labels = False  # decode() takes labels only to replace the code's category part

    def __init__(self, config):
        self.config = config = config.copy_and_resolve_references()  # its own: see ConfigEquality
        self.num_categories, self.style_dim = int(config.num_categories), int(config.style_dim)
        self.latent_dim = self.num_categories + self.style_dim  # the code: concat(softmax y, z)
        self.encoder = categorical_encoder(self.num_categories, self.style_dim, tuple(config.hidden), config.init)
        self.decoder = AAEDecoder(tuple(config.hidden), config.init)
        self.disc_category = LatentDiscriminator(tuple(config.disc_hidden), config.init)
        self.disc_style = LatentDiscriminator(tuple(config.disc_hidden), config.init)
        self.prior = Gaussian(float(config.prior_scale))
        self.semi_supervised = int(config.num_labels) > 0
        self.txs, self.schedules = make_optimizers(config, NETS)

    # ------------------------------------------------------------------ init / batches

    def init(self, rng: jax.Array) -> TrainState:
        keys = jax.random.split(rng, 5)
        x = jnp.zeros((1, 28, 28, 1), jnp.float32)
        y, z = jnp.zeros((1, self.num_categories)), jnp.zeros((1, self.style_dim))
        variables = {
            "encoder": self.encoder.init(keys[0], x),
            "decoder": self.decoder.init(keys[1], jnp.zeros((1, self.latent_dim))),
            "disc_category": self.disc_category.init(keys[2], y),
            "disc_style": self.disc_style.init(keys[3], z),
        }
        return TrainState.create(keys[4], {n: NetState.create(v, self.txs[n]) for n, v in variables.items()})

    def labelled_streams(self, train_labels: np.ndarray, seed: int) -> dict:
        """Semi-supervised: {"labelled": (a class-balanced subset of num_labels indices chosen by
        `seed`, labelled_batch_size)}; clustering: none."""
        if not self.semi_supervised:
            return {}
        cfg = self.config
        subset = batching.labelled_subset(train_labels, int(cfg.num_labels), int(cfg.num_classes), seed)
        return {"labelled": (subset, int(cfg.labelled_batch_size))}

    # ------------------------------------------------------------------ the pieces of a step

    def _encode(self, params, x):
        """x [B, 28, 28, 1] in [-1, 1] -> (category logits [B, K], style [B, style_dim])."""
        return self.encoder.apply({"params": params}, x)

    def _recon_loss(self, dec_params, logits, z, x):
        recon = self.decoder.apply({"params": dec_params}, jnp.concatenate([jax.nn.softmax(logits), z], -1))
        return losses.mse(recon, x)

    def _regularisation(self, nets, logits, z):
        """(adv_cat, adv_style, balance): the encoder's fooling losses against both discriminators,
        and KL(batch-mean y || uniform)."""
        y = jax.nn.softmax(logits)
        adv_cat = losses.fooling_loss(self.disc_category.apply({"params": nets["disc_category"].params}, y))
        adv_style = losses.fooling_loss(self.disc_style.apply({"params": nets["disc_style"].params}, z))
        return adv_cat, adv_style, losses.category_balance_kl(y)

    def _update_discriminators(self, nets, draws, logits, z):
        """Both discriminators, each on its prior samples and the (fixed) codes in one batched
        call. Returns (nets with both updated, metrics)."""
        nets, metrics = dict(nets), {}
        for name, real, fake in (("disc_category", draws["y_real"], jax.nn.softmax(logits)),
                                 ("disc_style", draws["z_real"], z)):
            module, d_in = getattr(self, name), jnp.concatenate([real, jax.lax.stop_gradient(fake)])

            def d_loss_fn(p, module=module, d_in=d_in):
                r, f = jnp.split(module.apply({"params": p}, d_in), 2)
                return losses.latent_discriminator_loss(r, f), (r, f)

            (d_loss, (r, f)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(nets[name].params)
            nets[name] = nets[name].apply_gradients(self.txs[name], grads)
            short = name.removeprefix("disc_")
            metrics.update({f"d_{short}_loss": d_loss, f"d_{short}_accuracy": losses.accuracy_logits(r, f)})
        return nets, metrics

    def _supervised_grads(self, enc_params, dec_params, batch, key, noise_key):
        """(encoder grads, decoder grads or None, metrics) of the supervised phase on the labelled
        batch, shifted and turned (more than 10 images a class); with labelled_recon the
        labelled images are also rebuilt from their true one-hot label and style."""
        cfg, labels = self.config, batch["labelled_label"]
        clean = images.signed(augment.random_view(key, batch["labelled_image"], float(cfg.augment_rotation),
                                                  int(cfg.labelled_shift)))
        noisy = clean + cfg.input_noise * jax.random.normal(noise_key, clean.shape) if cfg.input_noise else clean

        def sup_loss_fn(p, dec_p):
            logits, style = self._encode(p, noisy)
            ce = losses.supervised_ce(logits, labels)
            loss = cfg.supervised_weight * ce
            if cfg.labelled_recon:
                code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), style], -1)
                loss += cfg.recon_weight * losses.mse(self.decoder.apply({"params": dec_p}, code), clean)
            return loss, (ce, jnp.mean(jnp.argmax(logits, -1) == labels))

        (_, (ce, acc)), (enc_g, dec_g) = jax.value_and_grad(sup_loss_fn, argnums=(0, 1), has_aux=True)(
            enc_params, dec_params)
        return enc_g, (dec_g if cfg.labelled_recon else None), {"supervised_ce": ce, "labelled_accuracy": acc}

    def _consistency_grads(self, enc_params, logits, batch, key):
        """(encoder grads, metrics) of consistency_weight * KL(y(x) || y(view of x)) on the
        unlabelled batch; y(x) (`logits`) is the fixed target, the gradient flows through the view."""
        cfg = self.config
        target = jax.nn.softmax(jax.lax.stop_gradient(logits))
        view = images.signed(augment.random_view(key, batch["image"], float(cfg.augment_rotation),
                                                 int(cfg.consistency_shift)))

        def kl_fn(p):
            kl = losses.consistency_kl(target, self._encode(p, view)[0])
            return cfg.consistency_weight * kl, kl

        (_, kl), grads = jax.value_and_grad(kl_fn, has_aux=True)(enc_params)
        return grads, {"consistency_kl": kl}

    def _draws(self, state: TrainState, batch: dict) -> dict:
        """This step's random draws and inputs, each from its own fold_in(step_key, i). (Under
        JAX's threefry_partitionable, the default, split(k)[i] is fold_in(k, i): the labelled
        shifts and the consistency view once drew from indices 2 and 3, the input noises'.)"""
        cfg = self.config
        k_cat, k_style, k_noise, k_noise_l, k_shift, k_consist = (
            jax.random.fold_in(state.step_key(), i) for i in range(6))
        x = images.signed(batch["image"])
        batch_size = x.shape[0]
        x_in = x + cfg.input_noise * jax.random.normal(k_noise, x.shape) if cfg.input_noise else x
        y_real = jax.nn.one_hot(jax.random.randint(k_cat, (batch_size,), 0, self.num_categories), self.num_categories)
        return {"x": x, "x_in": x_in, "y_real": y_real, "z_real": self.prior.sample(k_style, (batch_size, self.style_dim)),
                "k_noise_l": k_noise_l, "k_shift": k_shift, "k_consist": k_consist}

    def _ae_totals(self, rec, adv_cat, adv_style, balance):
        cfg = self.config
        return cfg.recon_weight * rec + cfg.adv_weight * (adv_cat + adv_style) + cfg.balance_weight * balance

    def _joint_update(self, nets, batch, draws):
        """The discriminators, then encoder and decoder once on the weighted sum of every loss
        against the updated discriminators. Returns (nets, metrics)."""
        enc, dec = nets["encoder"], nets["decoder"]
        (logits, z), enc_vjp = jax.vjp(lambda p: self._encode(p, draws["x_in"]), enc.params)
        nets, metrics = self._update_discriminators(nets, draws, logits, z)

        def ae_loss_fn(logits, z, dec_params):
            rec = self._recon_loss(dec_params, logits, z, draws["x"])
            adv_cat, adv_style, balance = self._regularisation(nets, logits, z)
            return self._ae_totals(rec, adv_cat, adv_style, balance), (rec, adv_cat, adv_style, balance)

        (ae_loss, parts), (g_logits, g_z, dec_grads) = jax.value_and_grad(ae_loss_fn, argnums=(0, 1, 2), has_aux=True)(
            logits, z, dec.params)
        (enc_grads,) = enc_vjp((g_logits, g_z))
        if self.config.consistency_weight:
            cons_grads, cons_metrics = self._consistency_grads(enc.params, logits, batch, draws["k_consist"])
            enc_grads, metrics = add_trees(enc_grads, cons_grads), {**metrics, **cons_metrics}
        if self.semi_supervised:
            sup_enc, sup_dec, sup_metrics = self._supervised_grads(enc.params, dec.params, batch, draws["k_shift"],
                                                                   draws["k_noise_l"])
            enc_grads, metrics = add_trees(enc_grads, sup_enc), {**metrics, **sup_metrics}
            dec_grads = dec_grads if sup_dec is None else add_trees(dec_grads, sup_dec)
        nets.update(encoder=enc.apply_gradients(self.txs["encoder"], enc_grads),
                    decoder=dec.apply_gradients(self.txs["decoder"], dec_grads))
        return nets, {**metrics, **self._loss_metrics(ae_loss, *parts, logits)}

    def _sequential_update(self, nets, batch, draws):
        """The paper's three phases, each its own update on what the previous one left:
        (a) reconstruction (encoder, decoder); (b) regularisation: the discriminators on the
        updated encoder's codes, then the encoder against them; (c) supervised (encoder, and the
        decoder with labelled_recon). Returns (nets, metrics)."""
        def rec_fn(enc_params, dec_params):
            logits, z = self._encode(enc_params, draws["x_in"])
            rec = self._recon_loss(dec_params, logits, z, draws["x"])
            return self.config.recon_weight * rec, (rec, logits)

        (_, (rec, rec_logits)), (enc_g, dec_g) = jax.value_and_grad(rec_fn, argnums=(0, 1), has_aux=True)(
            nets["encoder"].params, nets["decoder"].params)
        nets = dict(nets, encoder=nets["encoder"].apply_gradients(self.txs["encoder"], enc_g),
                    decoder=nets["decoder"].apply_gradients(self.txs["decoder"], dec_g))
        # One encoder forward pass serves both the discriminators and the encoder's update.
        (logits, z), enc_vjp = jax.vjp(lambda p: self._encode(p, draws["x_in"]), nets["encoder"].params)
        nets, metrics = self._update_discriminators(nets, draws, logits, z)

        def reg_fn(logits, z):
            adv_cat, adv_style, balance = self._regularisation(nets, logits, z)
            cfg = self.config
            return cfg.adv_weight * (adv_cat + adv_style) + cfg.balance_weight * balance, (adv_cat, adv_style, balance)

        (_, parts), code_grads = jax.value_and_grad(reg_fn, argnums=(0, 1), has_aux=True)(logits, z)
        (enc_g,) = enc_vjp(code_grads)
        if self.config.consistency_weight:
            cons_grads, cons_metrics = self._consistency_grads(nets["encoder"].params, logits, batch, draws["k_consist"])
            enc_g, metrics = add_trees(enc_g, cons_grads), {**metrics, **cons_metrics}
        nets["encoder"] = nets["encoder"].apply_gradients(self.txs["encoder"], enc_g)
        if self.semi_supervised:
            enc_g, dec_g, sup_metrics = self._supervised_grads(nets["encoder"].params, nets["decoder"].params, batch,
                                                               draws["k_shift"], draws["k_noise_l"])
            nets["encoder"] = nets["encoder"].apply_gradients(self.txs["encoder"], enc_g)
            if dec_g is not None:
                nets["decoder"] = nets["decoder"].apply_gradients(self.txs["decoder"], dec_g)
            metrics = {**metrics, **sup_metrics}
        ae_loss = self._ae_totals(rec, *parts)
        return nets, {**metrics, **self._loss_metrics(ae_loss, rec, *parts, rec_logits)}

    @staticmethod
    def _loss_metrics(ae_loss, rec, adv_cat, adv_style, balance, logits) -> dict:
        return {"ae_loss": ae_loss, "recon_mse": images.unit_mse_from_signed(rec), "adv_category_loss": adv_cat, "adv_style_loss": adv_style,
                "category_balance_kl": balance, "mean_top_prob": jnp.mean(jnp.max(jax.nn.softmax(logits), -1))}

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image'] uint8 [B, 28, 28, 1]; semi-supervised also batch['labelled_image'] [L, ...]
        and batch['labelled_label'] int32 [L]. batch['label'] is never used (unsupervised data)."""
        chex.assert_shape(batch["image"], (None, *IMAGE_SHAPE))
        if self.semi_supervised:
            chex.assert_shape(batch["labelled_image"], (None, *IMAGE_SHAPE))
            chex.assert_shape(batch["labelled_label"], batch["labelled_image"].shape[:1])
        draws = self._draws(state, batch)
        update = self._sequential_update if self.config.phases == "sequential" else self._joint_update
        nets, metrics = update(state.nets, batch, draws)
        metrics["lr_autoencoder"] = self.schedules["encoder"](state.step)
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ evaluation

    def prepare_eval(self, state: TrainState, images_, key) -> TrainState:
        """No BatchNorm: nothing to recompute."""
        del images_, key
        return state

    def classify(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> category logits [N, num_categories]."""
        return self.encoder.apply(state.nets["encoder"].variables, images.signed(x01))[0]

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> concat(softmax(y) [N, K], style [N, style_dim])."""
        chex.assert_shape(x01, (None, *IMAGE_SHAPE))
        logits, z = self.encoder.apply(state.nets["encoder"].variables, images.signed(x01))
        return jnp.concatenate([jax.nn.softmax(logits), z], -1)

    def decode(self, state: TrainState, code: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """code [N, K + style_dim] -> [N, 28, 28, 1] in [0, 1]; `labels` [N], if given, replace
        the code's category part with one-hot categories."""
        chex.assert_shape(code, (None, self.latent_dim))
        if labels is not None:
            chex.assert_shape(labels, code.shape[:1])
            code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), code[:, self.num_categories:]], -1)
        return images.unit_from_signed(self.decoder.apply(state.nets["decoder"].variables, code))

    def sample(self, state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        k_cat, k_z = jax.random.split(key)
        if labels is None:
            labels = jax.random.randint(k_cat, (n,), 0, self.num_categories)
        z = self.prior.sample(k_z, (n, self.style_dim))
        return self.decode(state, jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), z], -1))

    def reconstruct(self, state: TrainState, x01: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        del labels  # the encoder infers the category
        return self.decode(state, self.encode(state, x01))

    def style_grid(self, state: TrainState, key: jax.Array, rows: int) -> jax.Array:
        """[rows * K, 28, 28, 1]: each row one style drawn from the prior, each column a category
        (the paper's Figures 8 and 9)."""
        styles = self.prior.sample(key, (rows, self.style_dim))
        codes = jnp.repeat(jnp.concatenate([jnp.zeros((rows, self.num_categories)), styles], -1), self.num_categories, 0)
        return self.decode(state, codes, jnp.tile(jnp.arange(self.num_categories), rows))

    def report(self, state: TrainState, dataset) -> dict:
        """The categories as classes: test_error (semi-supervised), the majority-vote and Hungarian
        cluster errors (the project's; the paper's rule is aae_paper's) and how many clusters the
        test set uses."""
        from aaejax.eval import metrics as ev

        classify = jax.jit(self.classify)
        assign = lambda x: np.asarray(ev.batched(lambda b: classify(state, images.unit(b)), x).argmax(-1))
        y_train, y_test = assign(dataset.train_images), assign(dataset.test_images)
        out = {}
        if self.semi_supervised:
            out["test_error"] = float(np.mean(y_test != np.asarray(dataset.test_labels)))
        out.update(ev.cluster_errors(y_train, dataset.train_labels, y_test, dataset.test_labels, self.num_categories))
        out["clusters_used"] = int(len(np.unique(y_test)))
        return out

    # ------------------------------------------------------------------ config

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError for categorical-AAE settings that make no sense together
        (configs.check has checked each field on its own)."""
        if config.num_labels % config.num_classes:
            raise ValueError(f"num_labels must be a multiple of num_classes ({config.num_classes}), got "
                             f"{config.num_labels}")
        if config.num_labels and config.num_categories != config.num_classes:
            raise ValueError("semi-supervised (num_labels > 0) needs num_categories == num_classes")
        if config.phases == "sequential" and config.lr_schedule != "constant":
            # Each phase steps the encoder's one optimizer, so its schedule would run 2-3x ahead.
            raise ValueError(f"phases='sequential' updates the encoder several times a step and needs "
                             f"lr_schedule='constant', got {config.lr_schedule!r}")
