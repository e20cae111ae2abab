"""BiGAN on MNIST: `python -m experiments.bigan [--workdir=DIR] [--steps=N]`.

Variants (--config=experiments/bigan.py:<variant>):
- `official` (default): the official Theano code (github.com/jeffdonahue/bigan, `train_mnist.sh`,
  the permutation-invariant BiGAN, u-50) line by line: the comments below give every choice,
  docs/reproductions.md (Remaining differences) the differences that remain.
- `seed`: the PyTorch program of Papers-in-100-Lines-of-Code (tests/references/torch_bigan.py) as it
  runs: z ~ U[0, 1)^50, biases everywhere, BatchNorm without scale/offset (none after G's first
  layer), PyTorch's init, one minimax objective, simultaneous updates, Adam with L2 2.5e-5,
  187 500 steps of independently drawn batches, the rate lowered every step of the second half
  to 1 %; docs/reproductions.md (Remaining differences) lists what stays different and why.
"""

if __name__ == "__main__":  # before the imports: a Ctrl-C from the first instant is one line, exit 130
    from aaejax.run.console import exit_on_signal

    exit_on_signal()


import ml_collections

from aaejax.models import registry

VARIANTS = ("official", "seed")
STEPS_PER_EPOCH = 60000 // 128  # seed: 468 batches of 128 make an "epoch" of the 60 000 images
# official: 50 000 images read as a stream, ceil(50000 / 128) = 391 batches an epoch (train_gan.py)
OFFICIAL_STEPS_PER_EPOCH = -(-50000 // 128)


def get_config(variant: str = "official") -> ml_collections.ConfigDict:
    """The named variant: BiGAN's fields (aaejax/models/schemas.py declares each and its default) set
    as it needs."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown bigan variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    c = registry.new_config("bigan", variant=variant, batch_size=128, latent_dim=50)
    c.lr_schedule = "exponential"
    c.lr_final_fraction = 0.1
    c.lr_decay_start = 0.5
    c.num_steps = 100 * STEPS_PER_EPOCH
    c.log_every = STEPS_PER_EPOCH // 4
    c.sample_every = STEPS_PER_EPOCH * 5
    c.checkpoint_every = STEPS_PER_EPOCH * 10
    if variant == "official":
        epoch = OFFICIAL_STEPS_PER_EPOCH
        c.data_split, c.data_order = "official", "stream"
        c.prior_low, c.prior_high = -1.0, 1.0  # u-50: U[-1, 1]; E's output is 2 sigmoid - 1
        c.hidden_bias = c.output_bias = False  # --nobias: no bias in any layer
        c.bn_affine = False  # --nogain --nobias: BatchNorm without scale or offset
        c.bn_flavour = "official"  # epsilon 1e-8; deploy variance unbiased
        c.init_std = 0.02  # every weight N(0, 0.02) ...
        c.zero_output = True  # ... but D's output weights, which start at zero
        c.z_input = "hidden"
        c.g_z_skip = True
        c.loss_scale = 0.5  # each loss the mean of its real and fake terms (gan.py)
        c.update_order = "simultaneous"  # k = 1: one update of all three from the same state
        c.weight_decay = 2.5e-5  # L2 added to every gradient before Adam
        c.adam = "dcgan"
        c.lr_schedule = "hold_then_exponential"  # --epochs 200 --decay_epochs 200, to 1 %
        c.lr_final_fraction = 0.01
        c.lr_decay_start = 0.5
        c.lr_decay_every = epoch  # the rate is set once an epoch
        c.num_steps = 400 * epoch
        c.bn_eval_batches = 1000  # --deploy_iters 1000
        c.log_every = epoch
        c.sample_every = 25 * epoch  # --disp_interval 25
        c.checkpoint_every = 5 * epoch
        c.keep_steps = tuple(e * epoch for e in (1, 25, 100, 200, 300, 400))  # the log's rows, and more
    elif variant == "seed":
        # adversarial_feature_learning.py: G Linear-ReLU, Linear-BN-ReLU, Linear-Sigmoid; E and D
        # Linear-LReLU, Linear-BN-LReLU, Linear(-Sigmoid); BatchNorm1d(affine=False); nn.Linear's
        # init; BCE(D(G(z), z), 1) + BCE(D(x, E(x)), 0), minimised by D and maximised by G and E
        # (maximize=True) after one backward pass; Adam(2e-4, (0.5, 0.999), weight_decay 2.5e-5);
        # ExponentialLR(0.9999508793911394) stepped after every iteration past nb_epochs / 2.
        steps, gamma = 187500, 0.9999508793911394
        begin = 93751  # the first scheduler.step() follows iteration 93 751 (`epoch > nb_epochs / 2`)
        c.hidden_bias = c.output_bias = True
        c.bn_affine = False
        c.bn_flavour = "torch"
        c.init = "torch"
        c.g_bn_first = False
        c.ge_loss = "minimax"
        c.loss_scale = 1.0
        c.update_order = "simultaneous"
        c.weight_decay = 2.5e-5
        c.lr_schedule = "hold_then_exponential"  # lr * gamma ** (step - begin) from `begin` on:
        c.lr_decay_start = begin / steps
        c.lr_final_fraction = gamma ** (steps - begin)
        c.num_steps = steps
        c.data_order = "random_subsets"  # randperm(60000)[:128] every iteration
        c.keep_steps = (100 * STEPS_PER_EPOCH,)  # 100 epochs' worth, kept for evaluation
    return c


if __name__ == "__main__":
    from aaejax.run import cli

    cli.run(cli.Experiment("bigan", __file__, get_config, VARIANTS, __doc__))
