"""BiGAN on MNIST: `python -m experiments.bigan [--workdir=DIR] [--steps=N]`.

Variants (--config=experiments/bigan.py:<variant>):
- `paper` (default): the official MNIST code's choices: z ~ U[-1, 1]^50, hidden layers without
  bias, BatchNorm without scale/offset, weights N(0, 0.02), non-saturating G/E loss, L2 2.5e-5
  added to the gradient before Adam, 400 epochs with the learning rate held for 200 and then
  decayed exponentially to 1 %.
- `seed`: the plain version: z ~ U[0, 1)^50, biases and affine BatchNorm, default init, no weight
  decay, exponential learning-rate decay over the run.
"""

import ml_collections

from aaejax import configs

STEPS_PER_EPOCH = 60000 // 128


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
    c = configs.base("bigan")
    c.variant = variant
    c.batch_size = 128
    c.latent_dim = 50
    c.g_hidden = (1024, 1024)
    c.e_hidden = (1024, 1024)
    c.d_hidden = (1024, 1024)
    c.hidden_bias = True
    c.bn_affine = True
    c.init_std = 0.0  # 0 = Flax's default (LeCun normal); else N(0, init_std)
    c.prior = "uniform"
    c.prior_low = 0.0
    c.prior_high = 1.0
    c.d_bn = "separate"  # real and fake batches normalised separately (see aaejax/bigan.py)
    c.ge_loss = "flipped"  # G/E "fool" D: BCE with swapped labels
    c.lr_schedule = "exponential"
    c.lr_final_fraction = 0.1
    c.lr_decay_start = 0.5
    c.num_steps = 100 * STEPS_PER_EPOCH
    c.bn_eval_batches = 50  # batches over which BatchNorm statistics are recomputed for eval
    c.log_every = STEPS_PER_EPOCH // 4
    c.sample_every = STEPS_PER_EPOCH * 5
    c.checkpoint_every = STEPS_PER_EPOCH * 10
    if variant == "paper":
        c.prior_low, c.prior_high = -1.0, 1.0
        c.hidden_bias = False
        c.bn_affine = False
        c.init_std = 0.02
        c.weight_decay = 2.5e-5
        c.lr_schedule = "hold_then_exponential"
        c.lr_final_fraction = 0.01
        c.lr_decay_start = 0.5
        c.num_steps = 400 * STEPS_PER_EPOCH
    elif variant != "seed":
        raise ValueError(f"unknown bigan variant {variant!r}; choose paper or seed")
    return c


if __name__ == "__main__":
    from aaejax import cli

    cli.run(__file__, "bigan")
