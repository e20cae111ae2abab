"""Config fields every experiment shares (data, seeds, optimizer, artifacts, robustness, scale).

Each experiment module (`experiments/aae.py`, `experiments/bigan.py`) starts from `base()` and
adds its model's fields, so a field means the same thing in every model.
"""

from __future__ import annotations

import ml_collections


def base(model: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = model
    c.variant = ""
    c.dataset = "mnist"
    c.data_dir = ""  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data_mirror = ""  # base URL of the IDX .gz files; "" = $AAEJAX_DATA_MIRROR, else TFDS's registered URLs
    c.seed = 0
    c.num_steps = 10000
    c.batch_size = 32
    # Adam per network, with an optional schedule (see aaejax/state.py).
    c.lr = 2e-4
    c.b1 = 0.5
    c.b2 = 0.999
    c.weight_decay = 0.0
    c.lr_schedule = "constant"
    c.lr_final_fraction = 0.01
    c.lr_decay_start = 0.5
    c.lr_decay_every = 0  # hold_then_exponential: 0 = smooth decay, K = one notch every K steps
    c.adam = "optax"  # optax | dcgan (the official BiGAN code's Adam, see aaejax/state.py)
    # Data: "all" trains on the 60 000 training images; "official" on the official BiGAN code's
    # fixed random 50 000 of them (the other 10 000 held out, see data.official_split).
    c.data_split = "all"
    # Batch order: "epochs" = a fresh permutation per epoch, the remainder dropped; "stream" =
    # shuffled epochs read as one stream, so batches straddle epoch ends (the official BiGAN code).
    c.data_order = "epochs"
    # Non-finite updates: False = stop the run at the first NaN/Inf (naming step and metric);
    # True = skip such updates (optax.apply_if_finite), stopping only after
    # `max_consecutive_nonfinite` in a row or if the state itself turns non-finite.
    c.skip_nonfinite = False
    c.max_consecutive_nonfinite = 10
    # Scale: N independent models trained at once (vmapped), and how devices are used.
    c.num_seeds = 1
    c.shard = "auto"  # auto | batch | seeds | none (see aaejax/parallel.py)
    # Artifacts.
    c.log_every = 200
    c.sample_every = 1000
    c.checkpoint_every = 5000
    # A checkpoint_every boundary saves only this long after the last save (keep_steps, the end and
    # a stop always save): a fast device does not spend its run saving. 0 = every boundary.
    c.checkpoint_seconds = 60.0
    c.max_to_keep = 3
    c.keep_steps = ()  # checkpoints at these steps are saved and never deleted
    c.eval_every = 0  # steps between evaluations of the model's `curve` (metrics.jsonl eval_*); 0 = none
    return c


class ConfigError(ValueError):
    """A config (or flag) that makes no sense: reported as one line before any work."""


# Fields added to a model's configs after runs were saved, with the value that reproduces what such
# a run did (the code reads them with the same default); a saved config lacking one gets it here.
ADDED_FIELDS = {
    "aae": {"phases": "joint", "balance_weight": 0.0, "input_noise": 0.0, "labelled_recon": False,
            "labelled_shift": 0, "consistency_weight": 0.0, "consistency_shift": 2, "augment_rotation": 0.0,
            "init": "default", "d_update": "averaged", "init_std": 0.01, "lr_recon": 0.01, "lr_adv": 0.1,
            "lr_supervised": 0.1, "momentum_recon": 0.9, "momentum_adv": 0.1, "momentum_supervised": 0.9,
            "lr_drop_epochs": [50, 1000], "lr_drop_factor": 0.1},
    "bigan": {"output_bias": True, "bn_flavour": "flax", "z_input": "concat", "zero_output": False,
              "g_z_skip": False, "loss_scale": 1.0, "update_order": "d_first", "init": "default",
              "g_bn_first": True},
}
# Options removed (measured, not adopted: docs/results.md has their figures and the commit that had
# them), with the value that means "off"; a saved config holding that value loads without the field.
REMOVED_FIELDS = {
    "aae": {"disc_noise": 0.0, "augment_shear": 0.0, "augment_scale": 0.0, "phase_optimizers": False,
            "ema_decay": 0.0},
    "bigan": {"d_bn": "separate"},
}
REMOVED_IN = "86008c2"  # the last commit that had them
# Variants renamed so that a name says whether it is the paper's method (issue #34); a saved run
# of an old name reads as the new one.
RENAMED_VARIANTS = {"aae": {"paper": "parzen_keras", "semi_supervised": "semi_supervised_plus",
                            "clustering": "clustering_plus"}, "bigan": {}}


def fill_defaults(values: dict) -> dict:
    """A saved config (config.json) as today's code reads it: the fields it predates filled in by
    the values that reproduce it, the removed ones dropped, a renamed variant under its new name.
    ConfigError if it used a removed option."""
    model = values.get("model", "")
    out = {**base(model).to_dict(), **ADDED_FIELDS.get(model, {}), **values}
    out["variant"] = RENAMED_VARIANTS.get(model, {}).get(out["variant"], out["variant"])
    for field, off in REMOVED_FIELDS.get(model, {}).items():
        if field in out and out.pop(field) != off:
            raise ConfigError(f"this run used {field}={values[field]!r}, an option removed after commit "
                              f"{REMOVED_IN} (docs/results.md has its measurements); check out that commit to "
                              f"load or resume it")
    return out
