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
    c.max_to_keep = 3
    return c


# Fields added to a model's configs after runs were saved, with the value that reproduces what such
# a run did (the code reads them with the same default); a saved config lacking one gets it here.
ADDED_FIELDS = {
    "aae": {"phases": "joint", "balance_weight": 0.0, "input_noise": 0.0, "disc_noise": 0.0,
            "labelled_recon": False, "phase_optimizers": False,
            "labelled_shift": 0, "consistency_weight": 0.0, "consistency_shift": 2,
            "augment_rotation": 0.0, "augment_shear": 0.0, "augment_scale": 0.0,
            "ema_decay": 0.0},
}


def fill_defaults(values: dict) -> dict:
    """A saved config (config.json) with the fields it predates filled in by their defaults."""
    model = values.get("model", "")
    return {**base(model).to_dict(), **ADDED_FIELDS.get(model, {}), **values}
