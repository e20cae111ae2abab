"""Adversarial autoencoder (Makhzani et al.), seed = the well-known Keras version.

One step: (1) the latent discriminator learns prior samples = real vs encodings = fake;
(2) encoder and decoder minimise w_rec * MSE(recon) + w_adv * BCE(D(E(x)), real) against the
*updated* discriminator. Images are scaled to [-1, 1] inside (decoder ends in tanh).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aaejax import losses
from aaejax.models import AAEDecoder, AAEEncoder, LatentDiscriminator
from aaejax.priors import make_prior
from aaejax.state import NetState, TrainState, make_optimizers

NETS = ("encoder", "decoder", "discriminator")


def to_model(x01: jax.Array) -> jax.Array:
    """[0, 1] (or uint8) images -> [-1, 1] float32."""
    if x01.dtype == jnp.uint8:
        return x01.astype(jnp.float32) / 127.5 - 1.0
    return x01.astype(jnp.float32) * 2.0 - 1.0


def to_unit(x: jax.Array) -> jax.Array:
    return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)


class AAE:
    """Supplies init / train_step / eval functions to the shared trainer (see trainer.py)."""

    name = "aae"

    def __init__(self, config):
        self.config = config
        self.latent_dim = int(config.latent_dim)
        self.encoder = AAEEncoder(self.latent_dim, tuple(config.hidden))
        self.decoder = AAEDecoder(tuple(config.hidden))
        self.discriminator = LatentDiscriminator(tuple(config.disc_hidden))
        self.prior = make_prior(config)
        # One optimizer (and schedule) per network: separate trees, separate Adam states.
        self.txs, self.schedules = make_optimizers(config, NETS)

    # ------------------------------------------------------------------ init / step

    def init(self, rng: jax.Array) -> TrainState:
        k_enc, k_dec, k_disc, k_state = jax.random.split(rng, 4)
        x = jnp.zeros((1, 28, 28, 1), jnp.float32)
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        variables = {
            "encoder": self.encoder.init(k_enc, x),
            "decoder": self.decoder.init(k_dec, z),
            "discriminator": self.discriminator.init(k_disc, z),
        }
        nets = {n: NetState.create(v, self.txs[n]) for n, v in variables.items()}
        return TrainState.create(k_state, nets)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image']: uint8 [B, 28, 28, 1]. Pure; jitted (inside a scan) by the trainer."""
        cfg = self.config
        x = to_model(batch["image"])
        batch_size = x.shape[0]
        k_eps, k_prior = jax.random.split(state.step_key())
        enc, dec, disc = (state.nets[n] for n in NETS)

        # The encoder's forward pass is shared by both updates: its vjp carries the AE gradient.
        (mu, log_var), enc_vjp = jax.vjp(lambda p: self.encoder.apply({"params": p}, x), enc.params)
        eps = jax.random.normal(k_eps, mu.shape)
        z_fake = mu + jnp.exp(0.5 * log_var) * eps
        z_real = self.prior.sample(k_prior, (batch_size, self.latent_dim))

        # (1) Discriminator: real and fake pass through in one batched call.
        def d_loss_fn(p):
            logits = self.discriminator.apply({"params": p}, jnp.concatenate([z_real, jax.lax.stop_gradient(z_fake)]))
            real, fake = jnp.split(logits, 2)
            return 0.5 * (losses.bce_logits(real, 1.0) + losses.bce_logits(fake, 0.0)), (real, fake)

        (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(disc.params)
        disc = disc.apply_gradients(self.txs["discriminator"], d_grads)

        # (2) Autoencoder against the updated discriminator.
        def ae_loss_fn(mu, log_var, dec_params):
            z = mu + jnp.exp(0.5 * log_var) * eps
            recon = self.decoder.apply({"params": dec_params}, z)
            rec = losses.mse(recon, x)
            adv = losses.bce_logits(self.discriminator.apply({"params": disc.params}, z), 1.0)
            return cfg.recon_weight * rec + cfg.adv_weight * adv, (rec, adv)

        (ae_loss, (rec, adv)), (g_mu, g_lv, dec_grads) = jax.value_and_grad(
            ae_loss_fn, argnums=(0, 1, 2), has_aux=True)(mu, log_var, dec.params)
        (enc_grads,) = enc_vjp((g_mu, g_lv))
        enc = enc.apply_gradients(self.txs["encoder"], enc_grads)
        dec = dec.apply_gradients(self.txs["decoder"], dec_grads)

        metrics = {
            "d_loss": d_loss,
            "d_accuracy": losses.accuracy_logits(real_logits, fake_logits),
            "ae_loss": ae_loss,
            "recon_mse": rec,
            "adv_loss": adv,
            "lr_discriminator": self.schedules["discriminator"](state.step),
            "lr_autoencoder": self.schedules["encoder"](state.step),
        }
        nets = {"encoder": enc, "decoder": dec, "discriminator": disc}
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ evaluation

    def prepare_eval(self, state: TrainState, images, key) -> TrainState:
        """No BatchNorm: nothing to recompute."""
        del images, key
        return state

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> posterior mean [N, latent_dim] (deterministic)."""
        mu, _ = self.encoder.apply(state.nets["encoder"].variables, to_model(x01))
        return mu

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """[N, latent_dim] -> [N, 28, 28, 1] in [0, 1]."""
        return to_unit(self.decoder.apply(state.nets["decoder"].variables, z))

    def sample(self, state: TrainState, key: jax.Array, n: int) -> jax.Array:
        return self.decode(state, self.prior.sample(key, (n, self.latent_dim)))

    def reconstruct(self, state: TrainState, x01: jax.Array) -> jax.Array:
        return self.decode(state, self.encode(state, x01))


def validate(config) -> None:
    """Raises ValueError for AAE settings that make no sense."""
    if config.latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {config.latent_dim}")
    if config.recon_weight < 0 or config.adv_weight < 0 or config.recon_weight + config.adv_weight == 0:
        raise ValueError(f"loss weights must be >= 0 and not both 0, got recon_weight={config.recon_weight}, "
                         f"adv_weight={config.adv_weight}")
    if config.prior == "gaussian" and config.prior_scale <= 0:
        raise ValueError(f"prior_scale must be > 0, got {config.prior_scale}")
