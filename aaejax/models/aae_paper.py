"""The AAE paper's own method (Makhzani et al., Appendix A) for its Tables 1-3, and nothing else.

Networks (models.PaperEncoder / PaperDecoder / PaperDiscriminator): ReLU layers, kernels
N(0, init_std^2) with zero biases, a deterministic encoder whose z head is linear and whose
q(y|x) (num_categories > 0) is a softmax; the decoder sees concat(q(y|x), z) and ends in a
sigmoid on [0, 1] pixels. Priors: z ~ N(0, prior_scale^2 I); y ~ Cat(num_categories) one-hot.
Each step runs the paper's phases in turn, each on what the previous one left, each cost with its
own SGD-with-momentum state (optim.make_phase_optimizers):
  (a) reconstruction: encoder + decoder on half the summed squared error (losses.half_sse);
  (b) regularisation: the discriminator(s) on prior = real vs codes = fake (the GAN paper's cost),
      then the encoder, as generator, to fool them (-log D(code));
  (c) semi-supervised (num_labels != 0): the encoder's q(y|x) on the cross-entropy of a labelled batch.
Gaussian noise of std input_noise is added to the input layer in training only.
Table 1: num_categories = 0 (the code is z alone). Table 2: num_labels > 0 (class-balanced, by
seed) or -1 (every training label). Table 3: num_labels = 0, the categories are clusters.

The paper's evaluation protocols are `curve` (jitted, run during training at eval_every) and
`report` (evaluate): see their docstrings.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aaejax.data import batching, images
from aaejax.models import losses
from aaejax.models.nets import IMAGE_SHAPE, PaperDecoder, PaperDiscriminator, PaperEncoder
from aaejax.models.optim import make_phase_optimizers
from aaejax.models.priors import Gaussian
from aaejax.models.schemas import SCHEMAS
from aaejax.models.protocol import ConfigEquality
from aaejax.models.state import NetState, TrainState

# The sigmas tried by the Parzen estimate; the GAN paper's code tried logspace(-1, 0, 10).
PARZEN_SIGMAS = np.logspace(-1.3, -0.4, 19).astype(np.float32)


class PaperAAE(ConfigEquality):
    """The trainer's model protocol (aaejax/models/protocol.py) for the AAE paper's own method."""

    name = "aae"
    SCHEMA = SCHEMAS["aae"]["paper"]
    needs_labels = False

    def __init__(self, config):
        self.config = config = config.copy_and_resolve_references()  # its own: see ConfigEquality
        self.num_categories, self.z_dim = int(config.num_categories), int(config.latent_dim)
        self.latent_dim = self.num_categories + self.z_dim  # the code: concat(q(y|x), z)
        self.num_labels = int(config.num_labels)
        hidden, std = tuple(config.hidden), float(config.init_std)
        self.encoder = PaperEncoder(self.num_categories, self.z_dim, hidden, std)
        self.decoder = PaperDecoder(hidden, std)
        self.disc_z = PaperDiscriminator(tuple(config.disc_hidden), std)
        self.disc_category = PaperDiscriminator(tuple(config.disc_hidden), std) if self.num_categories else None
        self.prior = Gaussian(float(config.prior_scale))
        self.txs, self.schedules = make_phase_optimizers(config)

    @property
    def discriminators(self) -> tuple[str, ...]:
        return ("disc_z", "disc_category") if self.num_categories else ("disc_z",)

    def phases_of(self, net: str) -> tuple[str, ...]:
        """The costs that update `net`, each with its own optimizer state."""
        if net == "encoder":
            return ("recon", "adv", "supervised") if self.num_labels else ("recon", "adv")
        return ("recon",) if net == "decoder" else ("adv",)

    # ------------------------------------------------------------------ init / batches

    def init(self, rng: jax.Array) -> TrainState:
        k_enc, k_dec, k_dz, k_dc, k_state = jax.random.split(rng, 5)
        variables = {"encoder": self.encoder.init(k_enc, jnp.zeros((1, *IMAGE_SHAPE))),
                     "decoder": self.decoder.init(k_dec, jnp.zeros((1, self.latent_dim))),
                     "disc_z": self.disc_z.init(k_dz, jnp.zeros((1, self.z_dim)))}
        if self.num_categories:
            variables["disc_category"] = self.disc_category.init(k_dc, jnp.zeros((1, self.num_categories)))
        nets = {n: NetState.create_phased(v, {p: self.txs[p] for p in self.phases_of(n)}) for n, v in variables.items()}
        return TrainState.create(k_state, nets)

    def labelled_streams(self, train_labels: np.ndarray, seed: int) -> dict:
        """Table 2: {"labelled": (indices, batch_size)}: num_labels examples, the same number of
        each class, chosen by `seed` (batching.labelled_subset); -1: every training example."""
        if not self.num_labels:
            return {}
        if self.num_labels < 0:
            subset = np.arange(len(train_labels), dtype=np.int32)
        else:
            subset = batching.labelled_subset(train_labels, self.num_labels, int(self.config.num_classes), seed)
        return {"labelled": (subset, int(self.config.batch_size))}

    # ------------------------------------------------------------------ the phases

    def _code(self, logits, z):
        return z if logits is None else jnp.concatenate([jax.nn.softmax(logits), z], -1)

    def _noisy(self, key, x):
        noise = float(self.config.input_noise)
        return x + noise * jax.random.normal(key, x.shape) if noise else x

    def _reconstruction(self, nets, x_in, x):
        """(a): encoder and decoder on half_sse(decoder(code(x_in)), x)."""
        def rec_fn(enc_p, dec_p):
            logits, z = self.encoder.apply({"params": enc_p}, x_in)
            return losses.half_sse(self.decoder.apply({"params": dec_p}, self._code(logits, z)), x)

        rec, (g_enc, g_dec) = jax.value_and_grad(rec_fn, argnums=(0, 1))(nets["encoder"].params, nets["decoder"].params)
        nets = dict(nets, encoder=nets["encoder"].apply_phase("recon", self.txs["recon"], g_enc),
                    decoder=nets["decoder"].apply_phase("recon", self.txs["recon"], g_dec))
        return nets, {"recon_half_sse": rec}

    def _regularisation(self, nets, x_in, key):
        """(b): each discriminator on prior samples = real vs the codes = fake, then the encoder
        against the updated discriminators."""
        (logits, z), enc_vjp = jax.vjp(lambda p: self.encoder.apply({"params": p}, x_in), nets["encoder"].params)
        k_z, k_cat = jax.random.split(key)
        real = {"disc_z": self.prior.sample(k_z, z.shape)}
        fake = {"disc_z": z}
        if self.num_categories:
            real["disc_category"] = jax.nn.one_hot(
                jax.random.randint(k_cat, z.shape[:1], 0, self.num_categories), self.num_categories)
            fake["disc_category"] = jax.nn.softmax(logits)
        nets, metrics = dict(nets), {}
        for name in self.discriminators:
            module, d_in = getattr(self, name), jnp.concatenate([real[name], jax.lax.stop_gradient(fake[name])])

            def d_loss_fn(p, module=module, d_in=d_in):
                r, f = jnp.split(module.apply({"params": p}, d_in), 2)
                return losses.gan_discriminator_loss(r, f), (r, f)

            (d_loss, (r, f)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(nets[name].params)
            nets[name] = nets[name].apply_phase("adv", self.txs["adv"], grads)
            short = name.removeprefix("disc_")
            metrics.update({f"d_{short}_loss": d_loss, f"d_{short}_accuracy": losses.accuracy_logits(r, f)})

        def gen_fn(logits, z):
            codes = {"disc_z": z, "disc_category": None if logits is None else jax.nn.softmax(logits)}
            return sum(losses.fooling_loss(getattr(self, n).apply({"params": nets[n].params}, codes[n]))
                       for n in self.discriminators)

        gen_loss, code_grads = jax.value_and_grad(gen_fn, argnums=(0, 1))(logits, z)
        (g_enc,) = enc_vjp(code_grads)
        nets["encoder"] = nets["encoder"].apply_phase("adv", self.txs["adv"], g_enc)
        metrics["gen_loss"] = gen_loss
        if self.num_categories:
            metrics["mean_top_prob"] = jnp.mean(jnp.max(jax.nn.softmax(logits), -1))
        return nets, metrics

    def _semi_supervised(self, nets, x_in, labels):
        """(c): the encoder's q(y|x) on the cross-entropy of the labelled batch."""
        def ce_fn(p):
            logits, _ = self.encoder.apply({"params": p}, x_in)
            return losses.supervised_ce(logits, labels), jnp.mean(jnp.argmax(logits, -1) == labels)

        (ce, acc), grads = jax.value_and_grad(ce_fn, has_aux=True)(nets["encoder"].params)
        nets = dict(nets, encoder=nets["encoder"].apply_phase("supervised", self.txs["supervised"], grads))
        return nets, {"supervised_ce": ce, "labelled_accuracy": acc}

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """batch['image'] uint8 [B, 28, 28, 1]; Table 2 also batch['labelled_image'] [L, ...] and
        batch['labelled_label'] int32 [L]. batch['label'] is never read."""
        chex.assert_shape(batch["image"], (None, *IMAGE_SHAPE))
        k_noise, k_prior, k_noise_l = jax.random.split(state.step_key(), 3)
        x = images.unit(batch["image"])
        x_in = self._noisy(k_noise, x)
        nets, metrics = self._reconstruction(state.nets, x_in, x)
        nets, reg_metrics = self._regularisation(nets, x_in, k_prior)
        metrics.update(reg_metrics)
        if self.num_labels:
            chex.assert_shape(batch["labelled_label"], batch["labelled_image"].shape[:1])
            x_l = self._noisy(k_noise_l, images.unit(batch["labelled_image"]))
            nets, sup_metrics = self._semi_supervised(nets, x_l, batch["labelled_label"])
            metrics.update(sup_metrics)
        metrics["recon_mse"] = 2 * metrics["recon_half_sse"] / np.prod(IMAGE_SHAPE)  # per pixel, [0, 1]
        metrics.update({f"lr_{p}": self.schedules[p](state.step) for p in ("recon", "adv")})
        return state.replace(step=state.step + 1, nets=nets), metrics

    # ------------------------------------------------------------------ the protocol's images

    def prepare_eval(self, state: TrainState, images_, key) -> TrainState:
        """No BatchNorm: nothing to recompute."""
        del images_, key
        return state

    def _encode(self, state, x01):
        return self.encoder.apply(state.nets["encoder"].variables, images.unit(x01))

    def encode(self, state: TrainState, x01: jax.Array) -> jax.Array:
        """[N, 28, 28, 1] in [0, 1] -> concat(q(y|x) [N, K], z [N, latent_dim]) (z alone when K = 0)."""
        chex.assert_shape(x01, (None, *IMAGE_SHAPE))
        return self._code(*self._encode(state, x01))

    def decode(self, state: TrainState, code: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """code [N, K + latent_dim] -> [N, 28, 28, 1] in [0, 1]; `labels` [N], if given, replace
        the code's category part with one-hot categories."""
        chex.assert_shape(code, (None, self.latent_dim))
        if labels is not None and self.num_categories:
            chex.assert_shape(labels, code.shape[:1])
            code = jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), code[:, self.num_categories:]], -1)
        return self.decoder.apply(state.nets["decoder"].variables, code)

    def sample(self, state: TrainState, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        k_cat, k_z = jax.random.split(key)
        z = self.prior.sample(k_z, (n, self.z_dim))
        if not self.num_categories:
            return self.decode(state, z)
        if labels is None:
            labels = jax.random.randint(k_cat, (n,), 0, self.num_categories)
        return self.decode(state, jnp.concatenate([jax.nn.one_hot(labels, self.num_categories), z], -1))

    def reconstruct(self, state: TrainState, x01: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        del labels  # the encoder infers the category
        return self.decode(state, self.encode(state, x01))

    def style_grid(self, state: TrainState, key: jax.Array, rows: int) -> jax.Array | None:
        """[rows * K, 28, 28, 1]: each row one z from the prior, each column a category (the
        paper's Figures 8 and 9); None without categories."""
        if not self.num_categories:
            return None
        z = self.prior.sample(key, (rows, self.z_dim))
        codes = jnp.repeat(jnp.concatenate([jnp.zeros((rows, self.num_categories)), z], -1), self.num_categories, 0)
        return self.decode(state, codes, jnp.tile(jnp.arange(self.num_categories), rows))

    # ------------------------------------------------------------------ the paper's protocols

    def curve(self, state: TrainState, data: dict, key: jax.Array) -> dict:
        """The table's number, jitted (the trainer runs it every eval_every steps). `data`: uint8
        test_images [10 000, ...] / int32 test_labels, and val_images / val_labels: the examples
        held out of training (data_split "official": the other 10 000 training images).
        - Table 1 (no categories): Parzen log-likelihood of the test images (nats), a Gaussian
          window on 10 000 samples with sigma chosen on the validation images (the GAN paper's
          protocol): parzen_ll, parzen_ll_se (standard error over the test images), parzen_sigma.
        - Table 2 (labels): test_error of argmax q(y|x) over the test images.
        - Table 3 (no labels): cluster_error_paper: each cluster i takes the label of the
          validation example that maximises q(y_i|x) ("for each cluster i, we found the validation
          example x_n that maximizes q(y_i|x_n) and assigned the label of x_n to all points in
          cluster i"); cluster_error_majority: each takes its validation members' majority label.
        """
        from aaejax.eval import metrics as ev

        if not self.num_categories:
            samples = self.sample(state, key, 10000)
            return ev.parzen_jax(samples, images.unit(data["val_images"]), images.unit(data["test_images"]),
                                 jnp.asarray(PARZEN_SIGMAS))
        probs_test = jax.nn.softmax(jax.lax.map(lambda x: self._encode(state, x)[0], ev.pieces(data["test_images"])))
        y_test = jnp.argmax(probs_test.reshape(-1, self.num_categories), -1)
        if self.num_labels:
            return {"test_error": jnp.mean(y_test != data["test_labels"])}
        probs_val = jax.nn.softmax(jax.lax.map(lambda x: self._encode(state, x)[0], ev.pieces(data["val_images"])))
        return ev.cluster_errors_jax(probs_val.reshape(-1, self.num_categories), data["val_labels"], y_test,
                                     data["test_labels"], int(self.config.num_classes))

    def report(self, state: TrainState, dataset) -> dict:
        """`curve` on the run's held-out data, plus (categories) the Hungarian matching's error."""
        from aaejax.eval import metrics as ev

        data = ev.heldout_data(dataset, self.config)
        out = {k: float(v) for k, v in jax.jit(self.curve)(state, data, jax.random.PRNGKey(0)).items()}
        if self.num_categories and not self.num_labels:
            classify = jax.jit(lambda x: jnp.argmax(self._encode(state, x)[0], -1))
            y_val, y_test = (np.asarray(ev.batched(classify, data[k])) for k in ("val_images", "test_images"))
            out["cluster_error_hungarian"] = ev.cluster_errors(
                y_val, np.asarray(data["val_labels"]), y_test, np.asarray(data["test_labels"]),
                self.num_categories)["cluster_error_hungarian"]
        return out

    # ------------------------------------------------------------------ config

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError for settings of the paper's method that make no sense together
        (configs.check has checked each field on its own)."""
        if config.num_categories == 1:
            raise ValueError("num_categories must be 0 (no categorical code) or >= 2, got 1")
        if config.num_labels > 0 and config.num_labels % config.num_classes:
            raise ValueError(f"num_labels must be -1 (all), 0 or a multiple of num_classes ({config.num_classes}), "
                             f"got {config.num_labels}")
        if config.num_labels and config.num_categories != config.num_classes:
            raise ValueError("semi-supervised (num_labels != 0) needs num_categories == num_classes")
        if not config.num_categories and config.data_split != "official":
            raise ValueError("the Parzen protocol chooses sigma on held-out images: set data_split='official'")
        if config.num_categories and not config.num_labels and config.data_split != "official":
            raise ValueError("the clustering protocol labels clusters from held-out images: set data_split='official'")
        if config.skip_nonfinite:
            raise ValueError("the paper's method has no skipping of non-finite updates (its SGD is not wrapped "
                             "in apply_if_finite): set skip_nonfinite=False")
