"""Config fields, each declared once: name, default, allowed values or range, one-line meaning.

The fields every model shares are declared here (data, run, logging, scale; the schedule, Adam,
the prior, the initialisers), each model's own in models/schemas.py, which also holds each
model's SCHEMA: the fields it has, some narrowed (`Field.restrict`). From a SCHEMA alone come the
model's `ml_collections` config (`new_config`), the checks of every value (`check`), `--help`,
docs/options.md and the reading of configs saved by earlier code (`migrate`). A model's
`validate` keeps only the rules that tie fields together. No JAX is imported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config (or flag) that makes no sense: reported as one line before any work."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field. Its type is its default's (bool, int, float, str, or a tuple of ints);
    `choices` lists a str field's allowed values; `low`/`high` bound a number (or each element of
    a tuple) inclusively, `above`/`below` exclusively."""

    name: str
    default: Any
    doc: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def error(self, value) -> str:
        """'' when `value` is allowed, else why not (one line)."""
        kind = type(self.default)
        if kind is tuple:
            if not isinstance(value, (tuple, list)):
                return f"{self.name} must be a tuple of integers, e.g. {self.default}, got {value!r}"
            bad = [v for v in value if not _is_int(v) or self._range(v)]
            return f"{self.name} must be a tuple of integers {self._bounds()}, got {tuple(value)}" if bad else ""
        if kind is bool:
            return "" if isinstance(value, bool) else f"{self.name} must be True or False, got {value!r}"
        if kind is int and not _is_int(value) or kind is float and not (_is_int(value) or isinstance(value, float)):
            return f"{self.name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        if kind is str and not isinstance(value, str):
            return f"{self.name} must be a string, got {value!r}"
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown {self.name} {value!r}{hint}; choose one of {', '.join(self.choices)}"
        if kind is float and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value!r}"
        if kind in (int, float) and self._range(value):
            return f"{self.name} must be {self._bounds()}, got {value!r}"
        return ""

    def _range(self, v) -> bool:
        return ((self.low is not None and v < self.low) or (self.high is not None and v > self.high)
                or (self.above is not None and v <= self.above) or (self.below is not None and v >= self.below))

    def _bounds(self) -> str:
        parts = [f">= {self.low:g}" if self.low is not None else "", f"> {self.above:g}" if self.above is not None else "",
                 f"<= {self.high:g}" if self.high is not None else "", f"< {self.below:g}" if self.below is not None else ""]
        return " and ".join(p for p in parts if p)

    def restrict(self, **changes) -> "Field":
        """This field as one model has it: a narrower range or fewer choices, its own default or
        wording (`dataclasses.replace`). Still one declaration: the name and type are this one's."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The meaning with the allowed values, for --help and docs/options.md."""
        if self.choices and all(c in self.doc for c in self.choices):
            return self.doc
        allowed = " | ".join(self.choices) if self.choices else self._bounds()
        return f"{self.doc} [{allowed}]" if allowed else self.doc


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def group(*declared: Field) -> dict[str, Field]:
    """{name: Field}, in the declared order."""
    return {f.name: f for f in declared}


def pick(declared: dict[str, Field], names: str) -> dict[str, Field]:
    """The fields of `declared` named in the space-separated `names`, in that order."""
    return {n: declared[n] for n in names.split()}


def new_config(schema: dict[str, Field], **values) -> ml_collections.ConfigDict:
    """A config holding exactly the schema's fields, at their defaults (then `values`)."""
    c = ml_collections.ConfigDict({name: f.default for name, f in schema.items()})
    c.update(values)
    return c


def check(values, schema: dict[str, Field], model: str) -> None:
    """ConfigError (one line) on the first field that `schema` does not have, lacks, or whose
    value it does not allow."""
    for name in values.keys():
        if name not in schema:
            close = difflib.get_close_matches(name, list(schema), n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config field {name!r} for {model}{hint} (--help lists the fields)")
    for name, f in schema.items():
        if name not in values:
            raise ConfigError(f"the config lacks field {name!r} of {model}")
        message = f.error(values[name])
        if message:
            raise ConfigError(message)


# What every model has: the data, the run's length and seeds, artifacts, robustness, scale.
DATASETS = ("mnist", "fashion_mnist")
DATA_ORDERS = ("epochs", "stream", "random_subsets", "with_replacement")
SHARD_MODES = ("auto", "seeds", "batch", "none")
COMMON = group(
    Field("model", "", "which model: aae | bigan (set by the experiment module, not a flag)"),
    Field("variant", "", "the named config: set by --config=experiments/<model>.py:VARIANT, never on its own"),
    Field("dataset", "mnist", "the images", choices=DATASETS),
    Field("data_dir", "", "a prepared TFDS data dir to read first ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)"),
    Field("data_mirror", "", "base URL to download the IDX .gz files from ('' = $AAEJAX_DATA_MIRROR, else "
          "TFDS's registered URLs)"),
    Field("seed", 0, "random seed of the init, the data order, the samples (model i of num_seeds uses seed + i)",
          low=0),
    Field("num_steps", 10000, "training steps (also --steps)", low=0),
    Field("batch_size", 32, "examples per step", low=1, high=60000),
    Field("data_split", "all", "all = train on the 60 000 training images | official = the official BiGAN "
          "code's fixed random 50 000 (the other 10 000 held out, data.datasets.official_split)", choices=("all", "official")),
    Field("data_order", "epochs", "epochs = a fresh permutation per epoch, remainder dropped | stream = shuffled "
          "epochs read as one stream (the official BiGAN code) | random_subsets = each batch drawn on its own "
          "without replacement | with_replacement = each index drawn on its own",
          choices=DATA_ORDERS),
    Field("skip_nonfinite", False, "False = stop at the first NaN/Inf, naming step and metric | True = skip such "
          "updates (optax.apply_if_finite)"),
    Field("max_consecutive_nonfinite", 10, "skip_nonfinite: stop after this many skipped updates in a row", low=1),
    Field("num_seeds", 1, "independent models trained at once, vmapped (seeds seed .. seed + num_seeds - 1)",
          low=1),
    Field("shard", "auto", "how devices are used (aaejax/run/parallel.py)", choices=SHARD_MODES),
    Field("log_every", 200, "steps per metrics.jsonl line", low=1),
    Field("sample_every", 1000, "steps between sample grids (samples/*.png)", low=1),
    Field("checkpoint_every", 5000, "steps between checkpoints (see checkpoint_seconds)", low=1),
    Field("checkpoint_seconds", 60.0, "a checkpoint_every boundary saves only when this many seconds passed "
          "since the last save, so a fast device does not spend its run saving; keep_steps, the end and a stop "
          "always save; 0 = every boundary", low=0),
    Field("max_to_keep", 3, "newest checkpoints kept", low=1),
    Field("keep_steps", (), "steps whose checkpoints are saved and never deleted, e.g. (391, 9775)", low=1),
    Field("eval_every", 0, "steps between evaluations of the model's paper metric (metrics.jsonl eval_* keys); "
          "0 = none", low=0),
)


# What the models share. The learning-rate schedule (models/optim.make_schedule), every model.
SCHEDULES = ("constant", "exponential", "hold_then_exponential", "epoch_drops")
# Schedules laid out in epochs, not over num_steps: a run under one may be extended (--steps).
STEP_FREE_SCHEDULES = ("constant", "epoch_drops")
SCHEDULE_FIELDS = group(
    Field("lr_schedule", "constant", "constant | exponential (to the rate times lr_final_fraction at num_steps) | "
          "hold_then_exponential | epoch_drops (times lr_drop_factor after each of lr_drop_epochs)",
          choices=SCHEDULES),
    Field("lr_final_fraction", 0.01, "the schedule's final rate as a fraction of the first", above=0),
    Field("lr_decay_start", 0.5, "hold_then_exponential: fraction of num_steps at which the decay starts",
          low=0, high=1),
    Field("lr_decay_every", 0, "hold_then_exponential: 0 = smooth decay; K = one notch every K steps (the "
          "official BiGAN code: an epoch)", low=0),
    Field("lr_drop_epochs", (50, 1000), "epoch_drops: the epochs after which every rate is multiplied by "
          "lr_drop_factor", low=1),
    Field("lr_drop_factor", 0.1, "epoch_drops: the factor of each drop", above=0, high=1),
)
# Adam per network (models/optim.make_optimizer), the models trained with Adam.
ADAMS = ("optax", "dcgan", "keras")
ADAM_FIELDS = group(
    Field("lr", 2e-4, "Adam's learning rate (its first value under a schedule)", above=0),
    Field("b1", 0.5, "Adam's first-moment decay", low=0, below=1),
    Field("b2", 0.999, "Adam's second-moment decay", low=0, below=1),
    Field("adam", "optax", "optax = optax's Adam | dcgan = the official BiGAN code's (b1 decays by 1 - 1e-8 a "
          "step) | keras = Keras 2's (eps 1e-7 on sqrt(v); the basic AAE's networks share one iteration counter, "
          "as Keras-GAN's do; other models count each network's own)",
          choices=ADAMS),
    Field("weight_decay", 0.0, "L2 coefficient added to the gradient before Adam (not AdamW); 0 = none", low=0),
)
# The code and its prior (models/priors.make_prior); each model picks the ones it reads.
PRIORS = ("gaussian", "uniform", "mixture2d", "swiss_roll")
PRIORS_2D = ("mixture2d", "swiss_roll")
PRIOR_FIELDS = group(
    Field("latent_dim", 10, "size of the code z", low=1),
    Field("prior", "gaussian", "the code's prior", choices=PRIORS),
    Field("prior_scale", 1.0, "gaussian: standard deviation; 2-D priors: their scale", above=0),
    Field("prior_low", 0.0, "uniform prior: lower end"),
    Field("prior_high", 1.0, "uniform prior: upper end"),
    Field("prior_radius", 2.0, "mixture2d: the components' distance from the origin", above=0),
)
# The Dense layers' initialisers (models/nets.dense).
INITS = ("default", "glorot", "torch")
INIT_FIELDS = group(
    Field("init", "default", "Dense initialisers: default (Flax's LeCun normal; see init_std) | glorot "
          "(Keras) | torch (nn.Linear's)", choices=INITS),
    Field("init_std", 0.0, "weights ~ N(0, init_std), biases 0, in place of init's default; 0 = that default",
          low=0),
)


# History. A saved config lacking a field takes the field's default (so a default changes only
# with an entry here). Options removed (measured, not adopted: docs/results.md has their figures
# and the commit that had them), with the value that means "off"; a saved config holding that
# value loads without the field.
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


def _json(value):
    """A default as config.json holds it (tuples are lists there)."""
    return list(value) if isinstance(value, tuple) else value


def migrate(values: dict, schema: dict[str, Field]) -> dict:
    """A saved config (config.json) as today's `schema` reads it: the fields it predates at their
    defaults, a renamed variant under its new name, the fields the model does not have dropped
    (configs saved before each model had its own schema held every model's fields). ConfigError
    if it used a removed option."""
    model = values.get("model", "")
    for name, off in REMOVED_FIELDS.get(model, {}).items():
        if name in values and values[name] != off:
            raise ConfigError(f"this run used {name}={values[name]!r}, an option removed after commit "
                              f"{REMOVED_IN} (docs/results.md has its measurements); check out that commit to "
                              f"load or resume it")
    out = {name: values[name] if name in values else _json(f.default) for name, f in schema.items()}
    out["variant"] = RENAMED_VARIANTS.get(model, {}).get(out["variant"], out["variant"])
    return out
