"""Adversarial autoencoder (Makhzani et al.), seed = the well-known Keras version.

One step: (1) the latent discriminator learns prior samples = real vs encodings = fake;
(2) encoder and decoder minimise w_rec * MSE(recon) + w_adv * fooling(D(E(x))) against the
*updated* discriminator (losses.py). Images are scaled to [-1, 1] inside (decoder ends in tanh).
`d_update`: "averaged" = one D update on the mean of its real and fake losses; "two_batches" =
Keras-GAN's two `train_on_batch` calls, an update on the prior batch and then one on the encoded
batch, each encoding drawing its own noise (as its separate `encoder.predict` and autoencoder
calls do).

Options from the paper: `prior_conditioned` (D also sees the one-hot label, and the prior sample
of a "real" pair comes from the label's mixture component / swiss-roll segment, Figure 4) and
`supervised` (the decoder gets the one-hot label, so the latent holds only the style, Figure 6).
The semi-supervised and clustering AAEs (categorical + style latent) are aae_categorical.py.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from aaejax.data import images
from aaejax.models import losses
from aaejax.configs import PRIORS_2D
from aaejax.models.nets import IMAGE_SHAPE, AAEDecoder, aae_encoder, LatentDiscriminator
from aaejax.models.optim import make_optimizers
from aaejax.models.priors import make_prior
from aaejax.models.schemas import SCHEMAS
from aaejax.models.protocol import ConfigEquality
from aaejax.models.state import NetState, TrainState

NETS = ("encoder", "decoder", "discriminator")


class AAE(ConfigEquality):
    """The trainer's model protocol (aaejax/models/protocol.py) for the AAE with a continuous prior."""

    name = "aae"
    SCHEMA = SCHEMAS["aae"]["basic"]

    def __init__(self, config):
        self.config = config = config.copy_and_resolve_references()  # its own: see ConfigEquality
        self.latent_dim = int(config.latent_dim)
        self.encoder = aae_encoder(self.latent_dim, tuple(config.hidden), config.init)
        self.decoder = AAEDecoder(tuple(config.hidden), config.init)
        self.discriminator = LatentDiscriminator(tuple(config.disc_hidden), config.init)
        self.prior = make_prior(config)
        self.num_classes = int(config.num_classes)
        self.conditioned, self.supervised = bool(config.prior_conditioned), bool(config.supervised)
        self.needs_labels = self.supervised  # decode() renders a style code as the given classes
        # One optimizer (and schedule) per network: separate trees, separate Adam states. With the
        # Keras Adam they share its iteration counter as Keras-GAN's one optimizer instance does:
        # each iteration D's update(s) come first, then the autoencoder's (optim.scale_by_keras_adam).
        d_count = 2 if config.d_update == "two_batches" else 1
        counts = {"discriminator": (d_count + 1, 1, d_count), "encoder": (d_count + 1, d_count + 1, 1),
                  "decoder": (d_count + 1, d_count + 1, 1)}
        self.txs, self.schedules = make_optimizers(config, NETS, counts, {"discriminator": d_count})

    # ------------------------------------------------------------------ init / step

    def init(self, rng: jax.Array) -> TrainState:
        k_enc, k_dec, k_disc, k_state = jax.random.split(rng, 4)
        x = jnp.zeros((1, 28, 28, 1), jnp.float32)
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        y = jnp.zeros((1, self.num_classes), jnp.float32)
        variables = {
            "encoder": self.encoder.init(k_enc, x),
            "decoder": self.decoder.init(k_dec, jnp.concatenate([z, y], -1) if self.supervised else z),
            "discriminator": self.discriminator.init(k_disc, jnp.concatenate([z, y], -1) if self.conditioned else z),
        }
        return TrainState.create(k_state, {n: NetState.create(v, self.txs[n]) for n, v in variables.items()})

    def labelled_streams(self, train_labels, seed: int) -> dict:
        """No labelled batches besides the main one (whose labels the conditioned AAEs read)."""
        return {}

    def _with_label(self, z, onehot, flag: bool):
        return jnp.concatenate([z, onehot], -1) if flag else z

    def draws(self, state: TrainState, batch: dict) -> dict:
        """This step's noise: eps [B, latent_dim] of the autoencoder's codes, the prior codes
        z_real, and (two_batches) eps_d of the codes D sees, drawn apart as Keras-GAN's separate
        calls draw them."""
        # One fold_in index per draw. (Under JAX's threefry_partitionable, the default, split(k)[i]
        # is fold_in(k, i): eps_d's key was once fold_in(k, 1), the prior's.)
        k_eps, k_prior, k_eps_d = (jax.random.fold_in(state.step_key(), i) for i in range(3))
        shape = (batch["image"].shape[0], self.latent_dim)
        out = {"eps": jax.random.normal(k_eps, shape),
               "z_real": self.prior.sample(k_prior, shape, batch["label"] if self.conditioned else None)}
        out["eps_d"] = jax.random.normal(k_eps_d, shape) if self.config.d_update == "two_batches" else out["eps"]
        return out

    def _update_discriminator(self, disc, z_real, z_fake, onehot):
        """D on prior codes = real and encodings = fake (fixed): one update on the two losses'
        mean, or (two_batches) one on each batch in turn. Returns (disc, loss, real, fake logits)."""
        d_in = lambda z: self._with_label(z, onehot, self.conditioned)
        apply = lambda p, z: self.discriminator.apply({"params": p}, d_in(z))
        if self.config.d_update == "two_batches":
            real_loss, grads = jax.value_and_grad(lambda p: losses.bce_logits(apply(p, z_real), 1.0))(disc.params)
            disc = disc.apply_gradients(self.txs["discriminator"], grads)
            fake_loss, grads = jax.value_and_grad(lambda p: losses.bce_logits(apply(p, z_fake), 0.0))(disc.params)
            disc = disc.apply_gradients(self.txs["discriminator"], grads)
            return disc, 0.5 * (real_loss + fake_loss), apply(disc.params, z_real), apply(disc.params, z_fake)

        # Real and fake pass through in one batched call.
        def d_loss_fn(p):
            real, fake = jnp.split(self.discriminator.apply({"params": p}, jnp.concatenate([d_in(z_real), d_in(z_fake)])), 2)
            return losses.latent_discriminator_loss(real, fake), (real, fake)

        (d_loss, (real, fake)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(disc.params)
        return disc.apply_gradients(self.txs["discriminator"], grads), d_loss, real, fake

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image']: uint8 [B, 28, 28, 1], batch['label']: int32 [B]. Pure; jitted (inside a
        scan) by the trainer."""
        cfg = self.config
        chex.assert_shape(batch["image"], (None, *IMAGE_SHAPE))
        chex.assert_shape(batch["label"], batch["image"].shape[:1])
        x = images.signed(batch["image"])
        onehot = jax.nn.one_hot(batch["label"], self.num_classes)
        draws = self.draws(state, batch)
        enc, dec, disc = (state.nets[n] for n in NETS)

        # The encoder's forward pass is shared by both updates: its vjp carries the AE gradient.
        (mu, log_var), enc_vjp = jax.vjp(lambda p: self.encoder.apply({"params": p}, x), enc.params)
        z_fake = jax.lax.stop_gradient(mu + jnp.exp(0.5 * log_var) * draws["eps_d"])
        disc, d_loss, real_logits, fake_logits = self._update_discriminator(disc, draws["z_real"], z_fake, onehot)

        # The autoencoder against the updated discriminator.
        def ae_loss_fn(mu, log_var, dec_params):
            z = mu + jnp.exp(0.5 * log_var) * draws["eps"]
            recon = self.decoder.apply({"params": dec_params}, self._with_label(z, onehot, self.supervised))
            rec = losses.mse(recon, x)
            adv = losses.fooling_loss(
                self.discriminator.apply({"params": disc.params}, self._with_label(z, onehot, self.conditioned)))
            return cfg.recon_weight * rec + cfg.adv_weight * adv, (rec, adv)

        (ae_loss, (rec, adv)), (g_mu, g_lv, dec_grads) = jax.value_and_grad(
            ae_loss_fn, argnums=(0, 1, 2), has_aux=True)(mu, log_var, dec.params)
        (enc_grads,) = enc_vjp((g_mu, g_lv))
        nets = {"encoder": enc.apply_gradients(self.txs["encoder"], enc_grads),
                "decoder": dec.apply_gradients(self.txs["decoder"], dec_grads), "discriminator": disc}
        metrics = {"d_loss": d_loss, "d_accuracy": losses.accuracy_logits(real_logits, fake_logits),
                   "ae_loss": ae_loss, "recon_mse": images.unit_mse_from_signed(rec), "adv_loss": adv,
                   "lr_discriminator": self.schedules["discriminator"](state.step),
                   "lr_autoencoder": self.schedules["encoder"](state.step)}
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ evaluation

    def prepare_eval(self, state: TrainState, images_, key) -> TrainState:
        """No BatchNorm: nothing to recompute."""
        del images_, key
        return state

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> posterior mean [N, latent_dim] (deterministic)."""
        chex.assert_shape(x01, (None, *IMAGE_SHAPE))
        mu, _ = self.encoder.apply(state.nets["encoder"].variables, images.signed(x01))
        return mu

    def decode(self, state: TrainState, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """[N, latent_dim] (and, for the supervised AAE, int labels [N]) -> [N, 28, 28, 1] in [0, 1]."""
        chex.assert_shape(z, (None, self.latent_dim))
        if self.supervised:
            if labels is None:
                raise ValueError("the supervised AAE decodes a style code together with labels: decode(z, labels)")
            chex.assert_shape(labels, z.shape[:1])
            z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes)], -1)
        return images.unit_from_signed(self.decoder.apply(state.nets["decoder"].variables, z))

    def sample(self, state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        """n images; `labels` [n] pick the prior component (conditioned) / the class (supervised),
        drawn uniformly when not given."""
        k_label, k_z = jax.random.split(key)
        if labels is None and (self.supervised or self.conditioned):
            labels = jax.random.randint(k_label, (n,), 0, self.num_classes)
        z = self.prior.sample(k_z, (n, self.latent_dim), labels if self.conditioned else None)
        return self.decode(state, z, labels)

    def reconstruct(self, state: TrainState, x01: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        return self.decode(state, self.encode(state, x01), labels)

    def style_grid(self, state: TrainState, key: jax.Array, rows: int) -> jax.Array | None:
        """Supervised AAE: [rows * 10, 28, 28, 1], each row one style code from the prior, each
        column a class (the paper's Figure 6); None for the others."""
        if not self.supervised:
            return None
        styles = self.prior.sample(key, (rows, self.latent_dim))
        return self.decode(state, jnp.repeat(styles, self.num_classes, 0), jnp.tile(jnp.arange(self.num_classes), rows))

    def report(self, state: TrainState, dataset) -> dict:
        """Nothing beyond the common report card."""
        return {}

    # ------------------------------------------------------------------ config

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError for AAE settings that make no sense together (configs.check has
        checked each field on its own)."""
        if config.prior in PRIORS_2D and config.latent_dim != 2:
            raise ValueError(f"prior {config.prior!r} is 2-D: set latent_dim=2 (got {config.latent_dim})")
        if config.prior_conditioned and config.prior not in PRIORS_2D:
            raise ValueError(f"prior_conditioned needs a prior with one component per class "
                             f"({', '.join(PRIORS_2D)}), got {config.prior!r}")
        if config.recon_weight + config.adv_weight == 0:
            raise ValueError("recon_weight and adv_weight are both 0: nothing to learn")
        if config.prior == "uniform" and not config.prior_low < config.prior_high:
            raise ValueError(f"prior_low must be < prior_high, got {config.prior_low}, {config.prior_high}")
