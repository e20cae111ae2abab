"""BiGAN (Donahue et al., "Adversarial Feature Learning") on the shared trainer.

One step: D learns (x, E(x)) = real vs (G(z), z) = fake, and G and E learn to make D call the
pairs the other way round: either D first and G/E against the updated D (`update_order="d_first"`)
or all three from the same state (`"simultaneous"`, the official code). G and E run forward once:
their vjps carry the G/E gradients.

BatchNorm, explicitly:
- training always uses batch statistics (`train=True`);
- D's real and fake batches are normalised *separately* (one batched call, vmapped over a group
  axis of 2), as in the official code: joint statistics would let D tell real from fake by batch
  composition alone;
- each net's running averages are kept for inspection, but evaluation uses population
  statistics recomputed over `bn_eval_batches` training batches (`prepare_eval`, the official
  code's "deploy" step), which the trainer runs before every checkpoint and sample grid. So a
  loaded model's outputs do not depend on the batch they are computed with.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from aaejax.data import batching, images
from aaejax.models import losses
from aaejax.models.nets import IMAGE_SHAPE, BiGANEncoder, BiGANGenerator, JointDiscriminator
from aaejax.models.optim import make_optimizers
from aaejax.models.priors import make_prior
from aaejax.models.schemas import SCHEMAS
from aaejax.models.protocol import ConfigEquality
from aaejax.models.state import NetState, TrainState, all_finite

NETS = ("generator", "encoder", "discriminator")


def _forward(module, net: NetState, params, inputs):
    """A BatchNorm net in training mode: (its output, its updated batch statistics)."""
    out, upd = module.apply({"params": params, "batch_stats": net.batch_stats}, inputs, train=True,
                            mutable=["batch_stats"])
    return out, upd["batch_stats"]


class BiGAN(ConfigEquality):
    """The trainer's model protocol (aaejax/models/protocol.py) for the BiGAN."""

    name = "bigan"
    SCHEMA = SCHEMAS["bigan"]
    needs_labels = False

    def __init__(self, config):
        self.config = config = config.copy_and_resolve_references()  # its own: see ConfigEquality
        self.latent_dim = int(config.latent_dim)
        common = dict(hidden_bias=config.hidden_bias, output_bias=config.output_bias, bn_affine=config.bn_affine,
                      bn_flavour=config.bn_flavour, init_std=config.init_std or None, init_kind=config.init)
        self.generator = BiGANGenerator(tuple(config.g_hidden), z_skip=config.g_z_skip, bn_first=config.g_bn_first,
                                        **common)
        self.encoder = BiGANEncoder(self.latent_dim, tuple(config.e_hidden), out_low=config.prior_low,
                                    out_high=config.prior_high, **common)
        self.discriminator = JointDiscriminator(tuple(config.d_hidden), z_input=config.z_input,
                                                zero_output=config.zero_output, **common)
        self.prior = make_prior(config)
        # One optimizer (and schedule) per network: separate trees, separate Adam states.
        self.txs, self.schedules = make_optimizers(config, NETS)

    # ------------------------------------------------------------------ init / step

    def labelled_streams(self, train_labels, seed: int) -> dict:
        """Unsupervised: no labelled batches."""
        return {}

    def init(self, rng: jax.Array) -> TrainState:
        k_g, k_e, k_d, k_state = jax.random.split(rng, 4)
        x = jnp.zeros((2, 28, 28, 1), jnp.float32)
        z = jnp.zeros((2, self.latent_dim), jnp.float32)
        variables = {
            "generator": self.generator.init(k_g, z, train=False),
            "encoder": self.encoder.init(k_e, x, train=False),
            "discriminator": self.discriminator.init(k_d, x, z, train=False),
        }
        variables = {n: {k: v for k, v in var.items() if k != "intermediates"} for n, var in variables.items()}
        return TrainState.create(k_state, {n: NetState.create(v, self.txs[n]) for n, v in variables.items()})

    def _stats_after(self, old, new, grads):
        """The BatchNorm statistics to keep after an update: `new`, unless config.skip_nonfinite
        and this update is skipped (non-finite gradients or statistics), when the optimizer keeps
        the parameters and the statistics must stay with them."""
        if not self.config.skip_nonfinite:
            return new
        finite = all_finite((new, grads))
        return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

    def _d_logits(self, d: NetState, params, x_real, z_real, x_fake, z_fake):
        """Logits of the real and fake pairs, [B] each, and D's updated batch statistics."""
        variables = {"params": params, "batch_stats": d.batch_stats}
        apply = lambda x, z: self.discriminator.apply(variables, x, z, train=True, mutable=["batch_stats"])
        # One batched call, statistics per group: vmap over a leading axis of 2.
        logits, upd = jax.vmap(apply)(jnp.stack([x_real, x_fake]), jnp.stack([z_real, z_fake]))
        stats = jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0), upd["batch_stats"])
        return logits[0], logits[1], stats

    def _d_loss(self, real, fake):
        return losses.joint_discriminator_loss(real, fake, self.config.loss_scale)

    def _ge_loss(self, real, fake):
        return losses.encoder_generator_loss(real, fake, self.config.loss_scale, self.config.ge_loss)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image']: uint8 [B, 28, 28, 1]. Pure; jitted (inside a scan) by the trainer."""
        chex.assert_shape(batch["image"], (None, *IMAGE_SHAPE))
        x_real = images.unit(batch["image"])
        g, e, d = (state.nets[n] for n in NETS)
        z_fake = self.prior.sample(state.step_key(), (x_real.shape[0], self.latent_dim))
        # G and E run forward once: their vjps carry D's input gradients back to their parameters.
        x_fake, g_vjp, g_stats = jax.vjp(lambda p: _forward(self.generator, g, p, z_fake), g.params, has_aux=True)
        z_real, e_vjp, e_stats = jax.vjp(lambda p: _forward(self.encoder, e, p, x_real), e.params, has_aux=True)
        update_d = self._simultaneous if self.config.update_order == "simultaneous" else self._d_first
        d, (gx, gz), scores = update_d(d, x_real, z_real, x_fake, z_fake)
        nets = {"generator": self._updated("generator", g, g_vjp(gx)[0], g_stats),
                "encoder": self._updated("encoder", e, e_vjp(gz)[0], e_stats),
                "discriminator": d}
        return state.replace(step=state.step + 1, nets=nets), self._metrics(state.step, *scores)

    def _simultaneous(self, d: NetState, x_real, z_real, x_fake, z_fake):
        """All three nets from the same state (the official code's k = 1 path): one forward pass of
        D, pulled back once with D's loss (to its parameters) and once with G/E's (to its inputs).
        Returns (updated D, (dL_GE/dx_fake, dL_GE/dz_real), (d_loss, ge_loss, real, fake logits))."""

        def d_fwd(p, x_fake, z_real):
            real, fake, stats = self._d_logits(d, p, x_real, z_real, x_fake, z_fake)
            return (real, fake), stats

        (real, fake), d_vjp, d_stats = jax.vjp(d_fwd, d.params, x_fake, z_real, has_aux=True)
        d_loss, d_cot = jax.value_and_grad(self._d_loss, argnums=(0, 1))(real, fake)
        ge_loss, ge_cot = jax.value_and_grad(self._ge_loss, argnums=(0, 1))(real, fake)
        d_grads = d_vjp(d_cot)[0]
        _, gx, gz = d_vjp(ge_cot)
        return self._updated("discriminator", d, d_grads, d_stats), (gx, gz), (d_loss, ge_loss, real, fake)

    def _d_first(self, d: NetState, x_real, z_real, x_fake, z_fake):
        """(1) D on (x, E(x)) = real, (G(z), z) = fake; (2) G/E's input gradients against the
        updated D. Returns what `_simultaneous` returns."""

        def d_loss_fn(p):
            real, fake, stats = self._d_logits(d, p, x_real, jax.lax.stop_gradient(z_real),
                                               jax.lax.stop_gradient(x_fake), z_fake)
            return self._d_loss(real, fake), (real, fake, stats)

        (d_loss, (real, fake, d_stats)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        d = self._updated("discriminator", d, d_grads, d_stats)

        def ge_loss_fn(x_fake, z_real):
            return self._ge_loss(*self._d_logits(d, d.params, x_real, z_real, x_fake, z_fake)[:2])

        ge_loss, (gx, gz) = jax.value_and_grad(ge_loss_fn, argnums=(0, 1))(x_fake, z_real)
        return d, (gx, gz), (d_loss, ge_loss, real, fake)

    def _updated(self, name: str, net: NetState, grads, stats) -> NetState:
        """`net` after one step of its own optimizer, with the batch statistics that go with it."""
        return net.apply_gradients(self.txs[name], grads).replace(
            batch_stats=self._stats_after(net.batch_stats, stats, grads))

    def _metrics(self, step, d_loss, ge_loss, real_logits, fake_logits) -> dict:
        return {
            "d_loss": d_loss,
            "d_accuracy": losses.accuracy_logits(real_logits, fake_logits),
            "ge_loss": ge_loss,
            "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
            "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
            **{f"lr_{n}": self.schedules[n](step) for n in ("discriminator", "generator", "encoder")},
        }

    # ------------------------------------------------------------------ evaluation

    def prepare_eval(self, state: TrainState, train_images: jax.Array, key: jax.Array) -> TrainState:
        """Recomputes G's and E's BatchNorm population statistics over `bn_eval_batches` batches.

        train_images: uint8 [N, 28, 28, 1] training images on the device. The population mean is the
        average of the batch means, its variance the average of the batch variances (a BatchNorm
        with momentum 0 returns the batch's own statistics) -- each made unbiased (x n / (n - 1))
        for the "official" and "torch" BatchNorm flavours, as the official code's deploy step and
        PyTorch's running variance do.
        """
        cfg = self.config
        n_batches, bs = int(cfg.bn_eval_batches), int(cfg.batch_size)
        k_perm, k_z = jax.random.split(key)
        # Batches walk the training images epoch by epoch, each epoch in a fresh order.
        per_epoch = train_images.shape[0] // bs
        perms = jnp.stack([jax.random.permutation(jax.random.fold_in(k_perm, ep) if ep else k_perm, train_images.shape[0])
                           for ep in range(-(-n_batches // per_epoch))])
        g, e = state.nets["generator"], state.nets["encoder"]
        g0 = self.generator.clone(bn_momentum=0.0)
        e0 = self.encoder.clone(bn_momentum=0.0)

        def batch_stats(i):
            x = train_images[batching.batch_indices(perms[i // per_epoch], i % per_epoch, bs)]
            z = self.prior.sample(jax.random.fold_in(k_z, i), (bs, self.latent_dim))
            _, eu = e0.apply(e.variables, images.unit(x), train=True, mutable=["batch_stats"])
            _, gu = g0.apply(g.variables, z, train=True, mutable=["batch_stats"])
            return gu["batch_stats"], eu["batch_stats"]

        g_stats, e_stats = jax.lax.map(batch_stats, jnp.arange(n_batches))
        unbiased = bs / (bs - 1) if cfg.bn_flavour in ("official", "torch") and bs > 1 else 1.0

        def population(stats):
            mean = jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0), stats)
            return {layer: {"mean": s["mean"], "var": s["var"] * unbiased} for layer, s in mean.items()}

        nets = dict(state.nets, generator=g.replace(batch_stats=population(g_stats)),
                    encoder=e.replace(batch_stats=population(e_stats)))
        return state.replace(nets=nets)

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> E(x) [N, latent_dim], population BatchNorm statistics."""
        chex.assert_shape(x01, (None, *IMAGE_SHAPE))
        return self.encoder.apply(state.nets["encoder"].variables, images.unit(x01), train=False)

    def features(self, state: TrainState, x01: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[N, 28, 28, 1] in [0, 1] -> (E's pre-sigmoid output [N, latent_dim], E's last hidden
        layer [N, e_hidden[-1]], after its BatchNorm (population statistics) and LeakyReLU): the
        official code's NNC_e and NNC_e- features (its `l2distable` of E's linear output, and
        `enc_feats`)."""
        _, inter = self.encoder.apply(state.nets["encoder"].variables, images.unit(x01), train=False,
                                      mutable=["intermediates"])
        return inter["intermediates"]["logits"][0], inter["intermediates"]["features"][0]

    def decode(self, state: TrainState, z: jax.Array, labels=None) -> jax.Array:
        """[N, latent_dim] -> G(z) [N, 28, 28, 1] in [0, 1]. (Unconditional: `labels` unused.)"""
        chex.assert_shape(z, (None, self.latent_dim))
        return self.generator.apply(state.nets["generator"].variables, z, train=False)

    def sample(self, state: TrainState, key: jax.Array, n: int, labels=None) -> jax.Array:
        return self.decode(state, self.prior.sample(key, (n, self.latent_dim)))

    def reconstruct(self, state: TrainState, x01: jax.Array, labels=None) -> jax.Array:
        return self.decode(state, self.encode(state, x01))

    def style_grid(self, state: TrainState, key: jax.Array, rows: int) -> None:
        """No classes in the code: no style-by-class grid."""
        return None

    def report(self, state: TrainState, dataset) -> dict:
        """The official code's feature scores (eval.metrics.official_bigan_protocol)."""
        from aaejax.eval import metrics as ev

        features = jax.jit(self.features)
        return ev.official_bigan_protocol(lambda x: features(state, images.unit(x)), dataset)

    # ------------------------------------------------------------------ config

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError for BiGAN settings that make no sense together (configs.check has
        checked each field on its own)."""
        if not config.prior_low < config.prior_high:
            raise ValueError(f"prior_low must be < prior_high (E's output range), got {config.prior_low}, "
                             f"{config.prior_high}")
        if config.z_input == "hidden" and len(config.d_hidden) < 2:
            raise ValueError("z_input='hidden' adds z at D's second layer: d_hidden needs at least 2 layers")
