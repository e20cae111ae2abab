"""Optimizers and learning-rate schedules: one Adam (and schedule) per network.

Adam flavours (config.adam): "optax" (optax.scale_by_adam), "dcgan" (the official BiGAN code's,
scale_by_dcgan_adam) and "keras" (Keras 2's, with the iteration counter one optimizer instance
shares between the models it trains: scale_by_keras_adam). An L2 term weight_decay * w is added to the gradient before Adam
when config.weight_decay > 0, as the official BiGAN code (and PyTorch's Adam) do -- not AdamW.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from aaejax.configs import SCHEDULES




def steps_per_epoch(config) -> int:
    """Steps per pass over the examples a run trains on (data_split "all": 60 000; "official": 50 000)."""
    from aaejax.data.datasets import SPLIT_SIZES

    n = SPLIT_SIZES["train"]
    return (n - n // 6 if config.data_split == "official" else n) // int(config.batch_size)


def make_schedule(config, lr: float | None = None) -> optax.Schedule:
    """Learning-rate schedule from the config, starting at `lr` (default config.lr).

    constant: lr. exponential: lr decays smoothly to lr * lr_final_fraction at num_steps.
    hold_then_exponential: lr until lr_decay_start * num_steps, then exponential decay to
    lr * lr_final_fraction at num_steps; with lr_decay_every = K > 0 the rate drops in notches
    every K steps, the first one at the decay start (the official BiGAN code sets its rate once
    an epoch that way), else smoothly every step. epoch_drops: lr times lr_drop_factor once at
    each epoch of lr_drop_epochs (the AAE paper's "after 50 epochs reduce it ...").
    """
    lr, total = float(config.lr if lr is None else lr), max(int(config.num_steps), 1)
    name = config.lr_schedule
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "exponential":
        return optax.exponential_decay(lr, transition_steps=total, decay_rate=config.lr_final_fraction)
    if name == "hold_then_exponential":
        begin = int(round(config.lr_decay_start * total))
        every = int(config.lr_decay_every)
        if not every:
            return optax.exponential_decay(lr, transition_steps=max(total - begin, 1),
                                           decay_rate=config.lr_final_fraction, transition_begin=begin)
        notches = max(-(-(total - begin) // every), 1)  # ceil

        def staircase(count):
            done = jnp.clip((count - begin) // every + 1, 0, notches)
            return lr * jnp.asarray(config.lr_final_fraction, jnp.float32) ** (done / notches)

        return staircase
    if name == "epoch_drops":
        per_epoch = steps_per_epoch(config)
        drops = {int(e) * per_epoch: float(config.lr_drop_factor) for e in config.lr_drop_epochs}
        return optax.piecewise_constant_schedule(lr, drops)
    raise ValueError(f"unknown lr_schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def scale_by_dcgan_adam(b1: float = 0.5, b2: float = 0.999, eps: float = 1e-8,
                        b1_decay: float = 1 - 1e-8) -> optax.GradientTransformation:
    """Adam as the official BiGAN code has it (its lib/updates.py, from the DCGAN code): the first
    moment's coefficient decays as b1 * b1_decay**t, while the bias correction uses b1 itself;
    eps is added to sqrt of the corrected second moment. Same state as optax's Adam."""

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros,
                                      nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        t = state.count.astype(jnp.float32)
        b1_t = b1 * b1_decay**t
        mu = jax.tree_util.tree_map(lambda m, g: b1_t * m + (1 - b1_t) * g, state.mu, updates)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        out = jax.tree_util.tree_map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config, counts: tuple[int, int, int] = (1, 1, 1),
                   updates_per_step: int = 1) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam(lr schedule, b1, b2) of config.adam, after the L2 term (see the module docstring);
    `counts`: the "keras" Adam's place on its shared iteration counter (scale_by_keras_adam).
    `updates_per_step`: how many updates the network gets a training step; its schedule advances
    once a step all the same (the returned schedule is of the training step).

    With config.skip_nonfinite, an update whose gradient holds a NaN/Inf is dropped (params and
    Adam moments unchanged), up to config.max_consecutive_nonfinite in a row.
    """
    schedule = make_schedule(config)
    parts = []
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.adam == "dcgan":
        parts.append(scale_by_dcgan_adam(b1=config.b1, b2=config.b2))
    elif config.adam == "keras":
        parts.append(scale_by_keras_adam(b1=config.b1, b2=config.b2, counts=counts))
    else:
        parts.append(optax.scale_by_adam(b1=config.b1, b2=config.b2))
    per_update = schedule if updates_per_step == 1 else (lambda count: schedule(count // updates_per_step))
    parts.append(optax.scale_by_learning_rate(per_update))
    tx = optax.chain(*parts)
    if config.skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=int(config.max_consecutive_nonfinite))
    return tx, schedule


def make_optimizers(config, names, counts: dict | None = None,
                    updates_per_step: dict | None = None) -> tuple[dict, dict]:
    """One optimizer (and schedule) per network: {name: tx}, {name: schedule}. `counts`: per
    network, its place on the "keras" Adam's shared counter; `updates_per_step`: per network, its
    updates a training step (default 1)."""
    built = {n: make_optimizer(config, (counts or {}).get(n, (1, 1, 1)), (updates_per_step or {}).get(n, 1))
             for n in names}
    return {n: tx for n, (tx, _) in built.items()}, {n: sched for n, (_, sched) in built.items()}


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7,
                        counts: tuple[int, int, int] = (1, 1, 1)) -> optax.GradientTransformation:
    """Adam as Keras 2 has it (keras/optimizers.py): eps is added to sqrt(v), and the bias
    correction sits in the step size, lr * sqrt(1 - b2^t) / (1 - b1^t). One optimizer instance
    shared by several models shares its `iterations` counter t, as the Keras-GAN AAE's is: with
    counts = (period, first, per_period), this optimizer's n-th update (from 0) runs at
    t = period * (n // per_period) + first + n % per_period (D's two updates and the
    autoencoder's one in each iteration: D (3, 1, 2), autoencoder (3, 3, 1))."""
    period, first, per_period = counts

    def init_fn(params):
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

    def update_fn(updates, state, params=None):
        del params
        n = state.count
        t = (period * (n // per_period) + first + n % per_period).astype(jnp.float32)
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
        step = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        out = jax.tree_util.tree_map(lambda m, v: step * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=n + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# The AAE paper's phases and the rate / momentum fields of each (aaejax/models/aae_paper.py).
PHASES = {"recon": ("lr_recon", "momentum_recon"), "adv": ("lr_adv", "momentum_adv"),
          "supervised": ("lr_supervised", "momentum_supervised")}


def make_phase_optimizers(config) -> tuple[dict, dict]:
    """The AAE paper's optimizers: SGD with momentum, one per phase (each cost its own rate and
    momentum, on config.lr_schedule): {phase: tx}, {phase: schedule}."""
    txs, schedules = {}, {}
    for phase, (lr_field, momentum_field) in PHASES.items():
        schedules[phase] = make_schedule(config, float(config[lr_field]))
        txs[phase] = optax.sgd(schedules[phase], momentum=float(config[momentum_field]))
    return txs, schedules
