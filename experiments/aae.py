"""Adversarial autoencoder on MNIST: `python -m experiments.aae [--workdir=DIR] [--steps=N]`.

Variants: `seed` (default; the Keras reference) and `paper` (the AAE paper's Parzen set-up:
8-d Gaussian prior with std 5, 1200 hidden units): --config=experiments/aae.py:paper
"""

import ml_collections

from aaejax import configs


def get_config(variant: str = "seed") -> ml_collections.ConfigDict:
    c = configs.base("aae")
    c.variant = variant
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
    # Artifacts.
    c.log_every = 200
    c.sample_every = 1000
    c.checkpoint_every = 5000
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
