"""The AAE paper's categorical models: semi-supervised classification and unsupervised clustering.

The encoder q(y, z | x) has two heads: a categorical y (softmax over `num_categories`) and a
style z. The decoder sees concat(softmax(y), z). Two discriminators impose the priors: D_cat
learns one-hot samples of Cat(K) = real vs softmax(y) = fake, D_style learns N(0, s^2 I) = real
vs z = fake. Losses (weights in the config):
  reconstruction   recon_weight * MSE(decoder(y, z), x)                       encoder, decoder
  regularisation   BCE of both discriminators on prior vs encodings           D_cat, D_style
                   adv_weight * (BCE(D_cat(y), real) + BCE(D_style(z), real))
                   + balance_weight * KL(batch-mean y || uniform)              encoder
  supervised       supervised_weight * CE(y, label) on a labelled batch       encoder
`phases="sequential"` (the paper's procedure) makes these three updates one after another in
each step, each on the parameters the previous one left; with `phase_optimizers` each phase has
its own Adam state for the encoder (and the decoder), as separate optimizers per phase would, so
the small adversarial gradients are not scaled by the reconstruction's second moments (state
entries `encoder_adv`, `encoder_sup`, `decoder_sup`: optimizer states only, `params` empty).
`phases="joint"` updates the discriminators, then encoder and decoder once on the weighted sum
(two forward passes fewer).
`input_noise` > 0 trains a denoising encoder (it sees x + noise, the decoder rebuilds x).
`disc_noise` > 0 adds Gaussian instance noise to both discriminators' inputs, real and fake, in
their update and in the encoder's. `labelled_recon` (semi-supervised) adds to the supervised
phase recon_weight * MSE(decoder(one_hot(label), z), x) on the labelled batch (encoder, decoder),
which ties each category to its class in the decoder as well. `labelled_shift` > 0 translates
each labelled image by up to that many pixels (a fresh draw every step) before both;
`augment_rotation` > 0 also rotates the labelled images and the consistency view (below) by up to
that many degrees, `augment_shear` > 0 slants them (horizontal shear up to that factor) and
`augment_scale` > 0 zooms them (by a factor within 1 +- augment_scale).
`consistency_weight` > 0 (not in the paper) adds to the encoder's regularisation
consistency_weight * KL(y(x) || y(x shifted by up to `consistency_shift` pixels)) on the unlabelled
batch: the category must not depend on where the digit sits.
With `num_labels` = 0 it is the clustering model (K = 16 in the paper's set-up); with
`num_labels` > 0 the trainer supplies a labelled batch from a class-balanced subset chosen by the
seed (`batch['labelled_image']`, `batch['labelled_label']`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from aaejax import data, losses
from aaejax.aae import AAE, to_model, to_unit
from aaejax.models import AAEDecoder, CategoricalEncoder, LatentDiscriminator
from aaejax.priors import Gaussian
from aaejax.state import NetState, TrainState, make_optimizers

NETS = ("encoder", "decoder", "disc_category", "disc_style")
# Optimizer-only state entries of phases="sequential" with phase_optimizers: name -> the network
# whose parameters that phase's optimizer updates (the supervised ones in semi-supervised runs).
PHASE_OPTIMIZERS = {"encoder_adv": "encoder", "encoder_sup": "encoder", "decoder_sup": "decoder"}
# Parameter-only state entries of ema_decay > 0: name -> the network whose weights it averages.
EMA_NETS = {"encoder_ema": "encoder", "decoder_ema": "decoder"}


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
        phase_optimizers = config.phases == "sequential" and bool(config.phase_optimizers)
        used = {"encoder_adv", *(("encoder_sup",) if self.semi_supervised else ()),
                *(("decoder_sup",) if self.semi_supervised and config.labelled_recon else ())}
        # The phase optimizers this run has (none without phase_optimizers): entry -> its network.
        self.phase_nets = {n: t for n, t in PHASE_OPTIMIZERS.items() if phase_optimizers and n in used}
        self.txs, self.schedules = make_optimizers(config, NETS + tuple(self.phase_nets))
        # Exponential moving averages of the encoder's and decoder's weights, which evaluation,
        # `aaejax.load` and the samples then use: the raw weights wander from step to step.
        self.ema_decay = float(config.ema_decay)
        self.ema_nets = EMA_NETS if self.ema_decay else {}

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
        for n, target in self.phase_nets.items():
            nets[n] = NetState(params={}, opt_state=self.txs[n].init(nets[target].params), batch_stats={})
        for n, target in self.ema_nets.items():  # a copy: the state's buffers are donated
            nets[n] = NetState(params=jax.tree_util.tree_map(jnp.copy, nets[target].params), opt_state={},
                               batch_stats={})
        return TrainState.create(keys[4], nets)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image'] uint8 [B, 28, 28, 1]; semi-supervised also batch['labelled_image'] [L, ...]
        and batch['labelled_label'] int32 [L]. batch['label'] is never used (unsupervised data)."""
        cfg = self.config
        x = to_model(batch["image"])
        batch_size = x.shape[0]
        # Every config carries these fields: experiments/aae.py sets them, and a saved config that
        # predates one gets the value that reproduces it (configs.ADDED_FIELDS).
        k_cat, k_style, k_noise, k_noise_l = jax.random.split(state.step_key(), 4)
        # Keys for the options added later come from fold_in, so the older options' draws stay as they were.
        k_dnoise_d, k_dnoise_e = jax.random.split(jax.random.fold_in(state.step_key(), 1))
        k_shift = jax.random.fold_in(state.step_key(), 2)
        k_consist = jax.random.fold_in(state.step_key(), 3)
        consistency_weight = float(cfg.consistency_weight)
        noise = float(cfg.input_noise)
        disc_noise = float(cfg.disc_noise)
        balance_weight = float(cfg.balance_weight)
        labelled_recon = self.semi_supervised and bool(cfg.labelled_recon)
        # A denoising encoder: it sees x + N(0, noise^2) (model scale [-1, 1]); the decoder still
        # reconstructs the clean x. With few labels the noise guards the classifier against overfitting.
        x_in = x + noise * jax.random.normal(k_noise, x.shape) if noise else x
        y_real = jax.nn.one_hot(jax.random.randint(k_cat, (batch_size,), 0, self.num_categories), self.num_categories)
        z_real = self.prior.sample(k_style, (batch_size, self.style_dim))
        nets = dict(state.nets)
        metrics = {}

        def update(target, grads, phase=None):
            """Applies `grads` to network `target` with the optimizer state of `phase` (its own by
            default, or a phase's own with phase_optimizers)."""
            opt = phase if phase in self.phase_nets else target
            updates, opt_state = self.txs[opt].update(grads, nets[opt].opt_state, nets[target].params)
            nets[opt] = nets[opt].replace(opt_state=opt_state)
            nets[target] = nets[target].replace(params=optax.apply_updates(nets[target].params, updates))
        encode = lambda p: self.encoder.apply({"params": p}, x_in)
        add_trees = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)  # gradients of two losses, summed

        def augment(key, images, max_shift):
            """uint8 images rotated by up to `augment_rotation` degrees, slanted by up to
            `augment_shear` and zoomed by up to `augment_scale` (one resampling), then shifted by up
            to `max_shift` pixels; the shift keeps `key` itself, so runs without warps draw as before."""
            warped = data.random_affine(jax.random.fold_in(key, 1), images, float(cfg.augment_rotation),
                                        float(cfg.augment_shear), float(cfg.augment_scale))
            return data.random_shift(key, warped, max_shift)

        def instance_noise(key, *codes):
            """Gaussian noise on the discriminators' inputs (real and fake alike): a one-hot prior
            sample and a softmax are otherwise told apart by their exactness alone."""
            if not disc_noise:
                return codes
            keys = jax.random.split(key, len(codes))
            return tuple(c + disc_noise * jax.random.normal(k, c.shape) for k, c in zip(keys, codes))

        def update_discriminators(logits, z):
            """Both discriminators, each on real and fake in one batched call."""
            pairs = (("disc_category", y_real, jax.nn.softmax(logits)), ("disc_style", z_real, z))
            for (name, real, fake), key in zip(pairs, jax.random.split(k_dnoise_d)):
                net, module = nets[name], getattr(self, name)
                (d_in,) = instance_noise(key, jnp.concatenate([real, jax.lax.stop_gradient(fake)]))

                def d_loss_fn(p, d_in=d_in, module=module):
                    out = module.apply({"params": p}, d_in)
                    r, f = jnp.split(out, 2)
                    return 0.5 * (losses.bce_logits(r, 1.0) + losses.bce_logits(f, 0.0)), (r, f)

                (d_loss, (r, f)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(net.params)
                nets[name] = net.apply_gradients(self.txs[name], grads)
                short = name.removeprefix("disc_")
                metrics[f"d_{short}_loss"] = d_loss
                metrics[f"d_{short}_accuracy"] = losses.accuracy_logits(r, f)

        def recon_loss(logits, z, dec_params):
            recon = self.decoder.apply({"params": dec_params}, jnp.concatenate([jax.nn.softmax(logits), z], -1))
            return losses.mse(recon, x)

        def adv_losses(logits, z):
            """(adv_cat, adv_style, balance): the encoder's GAN losses, and KL(batch-mean y || uniform)."""
            y = jax.nn.softmax(logits)
            y_in, z_in = instance_noise(k_dnoise_e, y, z)
            adv_cat = losses.bce_logits(self.disc_category.apply({"params": nets["disc_category"].params}, y_in), 1.0)
            adv_style = losses.bce_logits(self.disc_style.apply({"params": nets["disc_style"].params}, z_in), 1.0)
            mean_y = jnp.mean(y, 0)
            balance = jnp.log(self.num_categories) + jnp.sum(mean_y * jnp.log(mean_y + 1e-12))
            return adv_cat, adv_style, balance

        def supervised_grads(enc_params, dec_params):
            """(encoder grads, decoder grads or None) of the supervised phase: the cross-entropy, and
            with `labelled_recon` the labelled images rebuilt from their true one-hot label and style."""
            # Random translations (and warps) of the few labelled images: more than 10 per class.
            xl_clean = to_model(augment(k_shift, batch["labelled_image"], int(cfg.labelled_shift)))
            xl = xl_clean + noise * jax.random.normal(k_noise_l, xl_clean.shape) if noise else xl_clean
            labels = batch["labelled_label"]

            def sup_loss_fn(p, dec_p):
                lg, zl = self.encoder.apply({"params": p}, xl)
                ce = optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean()
                loss = cfg.supervised_weight * ce
                if labelled_recon:
                    code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), zl], -1)
                    loss += cfg.recon_weight * losses.mse(self.decoder.apply({"params": dec_p}, code), xl_clean)
                return loss, (ce, jnp.mean(jnp.argmax(lg, -1) == labels))

            (_, (ce, acc)), (enc_g, dec_g) = jax.value_and_grad(sup_loss_fn, argnums=(0, 1), has_aux=True)(
                enc_params, dec_params)
            metrics.update(supervised_ce=ce, labelled_accuracy=acc)
            return enc_g, (dec_g if labelled_recon else None)

        def consistency_grads(enc_params, logits):
            """Encoder grads of consistency_weight * KL(y(x) || y(view(x))) on the unlabelled batch, the
            view shifted (and warped by augment_rotation, _shear, _scale): the category may not change
            when the digit moves, turns or slants a little. y(x) (`logits`) is the fixed target; the gradient flows
            through the view only."""
            target = jax.nn.softmax(jax.lax.stop_gradient(logits))
            view = to_model(augment(k_consist, batch["image"], int(cfg.consistency_shift)))

            def kl_fn(p):
                log_q = jax.nn.log_softmax(self.encoder.apply({"params": p}, view)[0])
                kl = jnp.mean(jnp.sum(target * (jnp.log(target + 1e-12) - log_q), -1))
                return consistency_weight * kl, kl

            (_, metrics["consistency_kl"]), grads = jax.value_and_grad(kl_fn, has_aux=True)(enc_params)
            return grads

        if cfg.phases == "sequential":
            # The paper's three phases, each its own update: (a) reconstruction (encoder, decoder);
            # (b) regularisation: the discriminators on the updated encoder's codes, then the
            # encoder against them; (c) the supervised cross-entropy (encoder).
            def rec_fn(enc_params, dec_params):
                logits, z = encode(enc_params)
                rec = recon_loss(logits, z, dec_params)
                return cfg.recon_weight * rec, (rec, jnp.max(jax.nn.softmax(logits), -1).mean())

            (_, (rec, top)), (enc_g, dec_g) = jax.value_and_grad(rec_fn, argnums=(0, 1), has_aux=True)(
                nets["encoder"].params, nets["decoder"].params)
            nets["encoder"] = nets["encoder"].apply_gradients(self.txs["encoder"], enc_g)
            nets["decoder"] = nets["decoder"].apply_gradients(self.txs["decoder"], dec_g)
            # One encoder forward pass serves both the discriminators and the encoder's update.
            (logits, z), enc_vjp = jax.vjp(encode, nets["encoder"].params)
            update_discriminators(logits, z)

            def gen_fn(logits, z):
                adv_cat, adv_style, balance = adv_losses(logits, z)
                return cfg.adv_weight * (adv_cat + adv_style) + balance_weight * balance, (adv_cat, adv_style, balance)

            (_, (adv_cat, adv_style, balance)), code_grads = jax.value_and_grad(
                gen_fn, argnums=(0, 1), has_aux=True)(logits, z)
            (enc_g,) = enc_vjp(code_grads)
            if consistency_weight:
                enc_g = add_trees(enc_g, consistency_grads(nets["encoder"].params, logits))
            update("encoder", enc_g, "encoder_adv")
            if self.semi_supervised:
                enc_g, dec_g = supervised_grads(nets["encoder"].params, nets["decoder"].params)
                update("encoder", enc_g, "encoder_sup")
                if dec_g is not None:
                    update("decoder", dec_g, "decoder_sup")
            ae_loss = cfg.recon_weight * rec + cfg.adv_weight * (adv_cat + adv_style) + balance_weight * balance
        else:
            # One weighted update of encoder and decoder against the just-updated discriminators.
            enc, dec = nets["encoder"], nets["decoder"]
            (logits, z), enc_vjp = jax.vjp(encode, enc.params)
            update_discriminators(logits, z)

            def ae_loss_fn(logits, z, dec_params):
                rec = recon_loss(logits, z, dec_params)
                adv_cat, adv_style, balance = adv_losses(logits, z)
                total = cfg.recon_weight * rec + cfg.adv_weight * (adv_cat + adv_style) + balance_weight * balance
                return total, (rec, adv_cat, adv_style, balance)

            (ae_loss, (rec, adv_cat, adv_style, balance)), (g_logits, g_z, dec_grads) = jax.value_and_grad(
                ae_loss_fn, argnums=(0, 1, 2), has_aux=True)(logits, z, dec.params)
            (enc_grads,) = enc_vjp((g_logits, g_z))
            if consistency_weight:
                enc_grads = add_trees(enc_grads, consistency_grads(enc.params, logits))
            if self.semi_supervised:
                sup_enc, sup_dec = supervised_grads(enc.params, dec.params)
                enc_grads = add_trees(enc_grads, sup_enc)
                if sup_dec is not None:
                    dec_grads = add_trees(dec_grads, sup_dec)
            nets["encoder"] = enc.apply_gradients(self.txs["encoder"], enc_grads)
            nets["decoder"] = dec.apply_gradients(self.txs["decoder"], dec_grads)
            top = jnp.mean(jnp.max(jax.nn.softmax(logits), -1))

        metrics.update(ae_loss=ae_loss, recon_mse=rec, adv_category_loss=adv_cat, adv_style_loss=adv_style,
                       category_balance_kl=balance, mean_top_prob=top, lr_autoencoder=self.schedules["encoder"](state.step))
        d = self.ema_decay
        for n, target in self.ema_nets.items():
            nets[n] = nets[n].replace(params=jax.tree_util.tree_map(
                lambda e, p: d * e + (1 - d) * p, nets[n].params, nets[target].params))
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ evaluation

    prepare_eval = AAE.prepare_eval  # no BatchNorm: nothing to recompute

    def eval_variables(self, state: TrainState, name: str) -> dict:
        """The variables evaluation uses for network `name`: its moving average with ema_decay > 0."""
        return state.nets.get(f"{name}_ema", state.nets[name]).variables

    def classify(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> category logits [N, num_categories]."""
        logits, _ = self.encoder.apply(self.eval_variables(state, "encoder"), to_model(x01))
        return logits

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> concat(softmax(y) [N, K], style [N, style_dim])."""
        logits, z = self.encoder.apply(self.eval_variables(state, "encoder"), to_model(x01))
        return jnp.concatenate([jax.nn.softmax(logits), z], -1)

    def decode(self, state: TrainState, code: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """code [N, K + style_dim] -> [N, 28, 28, 1] in [0, 1]; `labels` [N], if given, replace
        the code's category part with one-hot categories."""
        if labels is not None:
            code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), code[:, self.num_categories:]], -1)
        return to_unit(self.decoder.apply(self.eval_variables(state, "decoder"), code))

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
    if config.phases not in ("joint", "sequential"):
        raise ValueError(f"phases must be 'joint' or 'sequential', got {config.phases!r}")
    if config.phases == "sequential" and not config.phase_optimizers and config.lr_schedule != "constant":
        # Each phase steps the encoder's one optimizer, so its schedule would run 2-3x ahead.
        raise ValueError(f"phases='sequential' updates the encoder several times a step and needs "
                         f"lr_schedule='constant', got {config.lr_schedule!r}")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1) (0: no moving average), got {config.ema_decay}")
    if config.balance_weight < 0:
        raise ValueError(f"balance_weight must be >= 0, got {config.balance_weight}")
    if config.disc_noise < 0:
        raise ValueError(f"disc_noise must be >= 0, got {config.disc_noise}")
    if config.labelled_shift < 0 or config.labelled_shift > 14:
        raise ValueError(f"labelled_shift must be in [0, 14] pixels, got {config.labelled_shift}")
    if config.consistency_weight < 0:
        raise ValueError(f"consistency_weight must be >= 0, got {config.consistency_weight}")
    if config.consistency_weight and not 1 <= config.consistency_shift <= 14:
        raise ValueError(f"consistency_shift must be in [1, 14] pixels, got {config.consistency_shift}")
    if not 0 <= config.augment_rotation <= 180:
        raise ValueError(f"augment_rotation must be in [0, 180] degrees, got {config.augment_rotation}")
    if not 0 <= config.augment_shear <= 1:
        raise ValueError(f"augment_shear must be in [0, 1], got {config.augment_shear}")
    if not 0 <= config.augment_scale < 0.5:
        raise ValueError(f"augment_scale must be in [0, 0.5), got {config.augment_scale}")
    if config.input_noise < 0:
        raise ValueError(f"input_noise must be >= 0, got {config.input_noise}")
    if config.prior_scale <= 0:
        raise ValueError(f"prior_scale must be > 0, got {config.prior_scale}")
