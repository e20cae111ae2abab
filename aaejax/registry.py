"""The models, found by config.model (and, for the AAE, config.aae_kind), and the validation of
a whole config: the fields every model shares here, the model's own in its `validate`."""

from __future__ import annotations

from aaejax import batching, data, parallel
from aaejax.aae import AAE
from aaejax.aae_categorical import CategoricalAAE
from aaejax.aae_paper import PaperAAE
from aaejax.bigan import BiGAN
from aaejax.configs import ConfigError
from aaejax.optim import ADAMS, SCHEDULES
from aaejax.protocol import Model

AAE_KINDS = {"basic": AAE, "categorical": CategoricalAAE, "paper": PaperAAE}
MODELS = {
    "aae": lambda config: AAE_KINDS.get(config.aae_kind),
    "bigan": lambda config: BiGAN,
}
DATA_SPLITS = ("all", "official")
WIDTH_FIELDS = ("hidden", "disc_hidden", "g_hidden", "e_hidden", "d_hidden")


def model_class(config) -> type[Model]:
    if config.model not in MODELS:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[config.model](config)
    if cls is None:
        raise ConfigError(f"unknown aae_kind {config.aae_kind!r}; choose one of {', '.join(AAE_KINDS)}")
    return cls


def build_model(config) -> Model:
    validate_config(config)
    return model_class(config)(config)


def _choice(config, field: str, allowed) -> None:
    if config[field] not in allowed:
        raise ConfigError(f"unknown {field} {config[field]!r}; choose one of {', '.join(allowed)}")


def validate_config(config, num_devices: int | None = None) -> None:
    """Fails before any work on settings that make no sense (one clear line each)."""
    import jax

    cls = model_class(config)
    _choice(config, "dataset", data.DATASETS)
    if not 1 <= config.batch_size <= data.SPLIT_SIZES["train"]:
        raise ConfigError(f"batch_size must be in 1..{data.SPLIT_SIZES['train']}, got {config.batch_size}")
    if config.num_steps < 0:
        raise ConfigError(f"num_steps must be >= 0, got {config.num_steps}")
    for field in ("log_every", "sample_every", "checkpoint_every", "max_to_keep"):
        if config[field] < 1:
            raise ConfigError(f"{field} must be >= 1, got {config[field]}")
    if config.lr <= 0:
        raise ConfigError(f"lr must be > 0, got {config.lr}")
    _choice(config, "lr_schedule", SCHEDULES)
    _choice(config, "adam", ADAMS)
    _choice(config, "data_split", DATA_SPLITS)
    _choice(config, "data_order", batching.ORDERS)
    if config.lr_decay_every < 0:
        raise ConfigError(f"lr_decay_every must be >= 0, got {config.lr_decay_every}")
    if config.num_seeds < 1:
        raise ConfigError(f"num_seeds must be >= 1, got {config.num_seeds}")
    for field in WIDTH_FIELDS:
        if field in config and not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in config[field]):
            raise ConfigError(f"{field} must be layer widths >= 1, got {tuple(config[field])}")
    try:
        parallel.resolve_mode(config, num_devices or jax.device_count())
        cls.validate(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e
