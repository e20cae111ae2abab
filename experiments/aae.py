"""Adversarial autoencoder on MNIST: `python -m experiments.aae [--workdir=DIR] [--steps=N]`.

Variants: `seed` (default; the Keras reference) and `paper` (the AAE paper's Parzen set-up:
8-d Gaussian prior with std 5, 1200 hidden units): --config=experiments/aae.py:paper
"""

import ml_collections


def get_config(variant: str = "seed") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "aae"
    c.variant = variant
    c.dataset = "mnist"
    c.data_dir = ""  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.seed = 0
    c.num_steps = 20000
    c.batch_size = 32
    # Networks.
    c.latent_dim = 10
    c.hidden = (512, 512)
    c.disc_hidden = (512, 256)
    # Prior p(z).
    c.prior = "gaussian"
    c.prior_scale = 1.0
    c.prior_low = 0.0
    c.prior_high = 1.0
    # Losses: w_rec * MSE([-1,1] pixels) + w_adv * BCE(D(E(x)), real).
    c.recon_weight = 0.999
    c.adv_weight = 0.001
    # Adam per network, with an optional schedule.
    c.lr = 2e-4
    c.b1 = 0.5
    c.b2 = 0.999
    c.weight_decay = 0.0
    c.lr_schedule = "constant"
    c.lr_final_fraction = 0.01
    c.lr_decay_start = 0.5
    # Artifacts.
    c.log_every = 200
    c.sample_every = 1000
    c.checkpoint_every = 5000
    c.max_to_keep = 3
    if variant == "paper":
        c.latent_dim = 8
        c.prior_scale = 5.0
        c.hidden = (1200, 1200)
        c.disc_hidden = (1200, 1200)
    elif variant != "seed":
        raise ValueError(f"unknown aae variant {variant!r}; choose seed or paper")
    return c


if __name__ == "__main__":
    from aaejax import cli

    cli.run(__file__, "aae")
