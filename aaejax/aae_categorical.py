"""The AAE paper's categorical models: semi-supervised classification and unsupervised clustering.

The encoder q(y, z | x) has two heads: a categorical y (softmax over `num_categories`) and a
style z. The decoder sees concat(softmax(y), z). Two discriminators impose the priors: D_cat
learns one-hot samples of Cat(K) = real vs softmax(y) = fake, D_style learns N(0, s^2 I) = real
vs z = fake. One step:
  (1) both discriminators update on prior samples vs the current encodings;
  (2) encoder and decoder update on
        recon_weight * MSE(recon) + adv_weight * (BCE(D_cat(y), real) + BCE(D_style(z), real))
        + supervised_weight * CE(y, label)   [on a labelled batch, semi-supervised only]
      against the updated discriminators.
The paper runs the reconstruction, regularisation and supervised phases as three sequential
updates; here they are one weighted update per step (two forward passes fewer), with the weights
in the config. With `num_labels` = 0 it is the clustering model (K = 16 in the paper's set-up);
with `num_labels` > 0 the trainer supplies a labelled batch from a class-balanced subset chosen
by the seed (`batch['labelled_image']`, `batch['labelled_label']`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from aaejax import losses
from aaejax.aae import to_model, to_unit
from aaejax.models import AAEDecoder, CategoricalEncoder, LatentDiscriminator
from aaejax.priors import Gaussian
from aaejax.state import NetState, TrainState, make_optimizers

NETS = ("encoder", "decoder", "disc_category", "disc_style")


class CategoricalAAE:
    """Supplies init / train_step / eval functions to the shared trainer (see trainer.py)."""

    name = "aae"

    def __init__(self, config):
        self.config = config
        self.num_categories, self.style_dim = int(config.num_categories), int(config.style_dim)
        self.latent_dim = self.num_categories + self.style_dim  # the code: concat(softmax y, z)
        self.num_classes = int(config.num_classes)
        self.encoder = CategoricalEncoder(self.num_categories, self.style_dim, tuple(config.hidden))
        self.decoder = AAEDecoder(tuple(config.hidden))
        self.disc_category = LatentDiscriminator(tuple(config.disc_hidden))
        self.disc_style = LatentDiscriminator(tuple(config.disc_hidden))
        self.prior = Gaussian(float(config.prior_scale))
        self.semi_supervised = int(config.num_labels) > 0
        self.txs, self.schedules = make_optimizers(config, NETS)

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
        nets = {n: NetState.create(v, self.txs[n]) for n, v in variables.items()}
        return TrainState.create(keys[4], nets)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image'] uint8 [B, 28, 28, 1]; semi-supervised also batch['labelled_image'] [L, ...]
        and batch['labelled_label'] int32 [L]. batch['label'] is never used (unsupervised data)."""
        cfg = self.config
        x = to_model(batch["image"])
        batch_size = x.shape[0]
        k_cat, k_style = jax.random.split(state.step_key())
        nets = dict(state.nets)
        enc, dec = nets["encoder"], nets["decoder"]

        (logits, z), enc_vjp = jax.vjp(lambda p: self.encoder.apply({"params": p}, x), enc.params)
        y = jax.nn.softmax(logits)
        y_real = jax.nn.one_hot(jax.random.randint(k_cat, (batch_size,), 0, self.num_categories), self.num_categories)
        z_real = self.prior.sample(k_style, (batch_size, self.style_dim))

        # (1) Both discriminators, each on real and fake in one batched call.
        d_metrics = {}
        for name, real, fake in (("disc_category", y_real, y), ("disc_style", z_real, z)):
            net, module = nets[name], getattr(self, name)

            def d_loss_fn(p, real=real, fake=fake, module=module):
                out = module.apply({"params": p}, jnp.concatenate([real, jax.lax.stop_gradient(fake)]))
                r, f = jnp.split(out, 2)
                return 0.5 * (losses.bce_logits(r, 1.0) + losses.bce_logits(f, 0.0)), (r, f)

            (d_loss, (r, f)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(net.params)
            nets[name] = net.apply_gradients(self.txs[name], grads)
            short = name.removeprefix("disc_")
            d_metrics[f"d_{short}_loss"] = d_loss
            d_metrics[f"d_{short}_accuracy"] = losses.accuracy_logits(r, f)

        # (2) Encoder (both heads) and decoder against the updated discriminators.
        def ae_loss_fn(logits, z, dec_params):
            y = jax.nn.softmax(logits)
            recon = self.decoder.apply({"params": dec_params}, jnp.concatenate([y, z], -1))
            rec = losses.mse(recon, x)
            adv_cat = losses.bce_logits(self.disc_category.apply({"params": nets["disc_category"].params}, y), 1.0)
            adv_style = losses.bce_logits(self.disc_style.apply({"params": nets["disc_style"].params}, z), 1.0)
            total = cfg.recon_weight * rec + cfg.adv_weight * (adv_cat + adv_style)
            return total, (rec, adv_cat, adv_style)

        (ae_loss, (rec, adv_cat, adv_style)), (g_logits, g_z, dec_grads) = jax.value_and_grad(
            ae_loss_fn, argnums=(0, 1, 2), has_aux=True)(logits, z, dec.params)
        (enc_grads,) = enc_vjp((g_logits, g_z))
        metrics = {}
        if self.semi_supervised:
            xl = to_model(batch["labelled_image"])

            def sup_loss_fn(p):
                lg, _ = self.encoder.apply({"params": p}, xl)
                ce = optax.softmax_cross_entropy_with_integer_labels(lg, batch["labelled_label"]).mean()
                return cfg.supervised_weight * ce, (ce, jnp.mean(jnp.argmax(lg, -1) == batch["labelled_label"]))

            (_, (ce, acc)), sup_grads = jax.value_and_grad(sup_loss_fn, has_aux=True)(enc.params)
            enc_grads = jax.tree_util.tree_map(jnp.add, enc_grads, sup_grads)
            metrics.update(supervised_ce=ce, labelled_accuracy=acc)
        nets["encoder"] = enc.apply_gradients(self.txs["encoder"], enc_grads)
        nets["decoder"] = dec.apply_gradients(self.txs["decoder"], dec_grads)

        metrics.update(d_metrics, ae_loss=ae_loss, recon_mse=rec, adv_category_loss=adv_cat,
                       adv_style_loss=adv_style, mean_top_prob=jnp.mean(jnp.max(y, -1)),
                       lr_autoencoder=self.schedules["encoder"](state.step))
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ evaluation

    def prepare_eval(self, state: TrainState, images, key) -> TrainState:
        del images, key
        return state

    def classify(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> category logits [N, num_categories]."""
        logits, _ = self.encoder.apply(state.nets["encoder"].variables, to_model(x01))
        return logits

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> concat(softmax(y) [N, K], style [N, style_dim])."""
        logits, z = self.encoder.apply(state.nets["encoder"].variables, to_model(x01))
        return jnp.concatenate([jax.nn.softmax(logits), z], -1)

    def decode(self, state: TrainState, code: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """code [N, K + style_dim] -> [N, 28, 28, 1] in [0, 1]; `labels` [N], if given, replace
        the code's category part with one-hot categories."""
        if labels is not None:
            code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), code[:, self.num_categories:]], -1)
        return to_unit(self.decoder.apply(state.nets["decoder"].variables, code))

    def sample(self, state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        k_cat, k_z = jax.random.split(key)
        if labels is None:
            labels = jax.random.randint(k_cat, (n,), 0, self.num_categories)
        z = self.prior.sample(k_z, (n, self.style_dim))
        return self.decode(state, jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), z], -1))

    def reconstruct(self, state: TrainState, x01: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        del labels  # the encoder infers the category
        return self.decode(state, self.encode(state, x01))


def validate(config) -> None:
    if config.num_categories < 2 or config.style_dim < 1:
        raise ValueError(f"num_categories must be >= 2 and style_dim >= 1, got {config.num_categories}, "
                         f"{config.style_dim}")
    if config.num_labels < 0 or config.num_labels % config.num_classes:
        raise ValueError(f"num_labels must be a multiple of num_classes ({config.num_classes}), got "
                         f"{config.num_labels}")
    if config.num_labels and config.num_categories != config.num_classes:
        raise ValueError("semi-supervised (num_labels > 0) needs num_categories == num_classes")
    if min(config.recon_weight, config.adv_weight, config.supervised_weight) < 0:
        raise ValueError("loss weights must be >= 0")
    if config.prior_scale <= 0:
        raise ValueError(f"prior_scale must be > 0, got {config.prior_scale}")
