"""The models, found by config.model (and, for the AAE, config.aae_kind): each class owns its
config schema (`SCHEMA`), which `new_config`, `validate_config` and `fill_defaults` read."""

from __future__ import annotations

from aaejax import configs
from aaejax.run import parallel
from aaejax.models.aae import AAE
from aaejax.models.aae_categorical import CategoricalAAE
from aaejax.models.aae_paper import PaperAAE
from aaejax.models.bigan import BiGAN
from aaejax.configs import ConfigError
from aaejax.models.protocol import Model

MODELS = {"aae": {"basic": AAE, "categorical": CategoricalAAE, "paper": PaperAAE}, "bigan": BiGAN}
# The fields that choose the schema: a named variant sets them, a flag cannot.
SCHEMA_KEYS = ("model", "aae_kind")


def model_class(values) -> type[Model]:
    """The class that `values` (a config or a dict) configures."""
    model = values.get("model")
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    kinds = MODELS[model]
    if not isinstance(kinds, dict):
        return kinds
    kind = values.get("aae_kind", "basic")
    if kind not in kinds:
        raise ConfigError(f"unknown aae_kind {kind!r}; choose one of {', '.join(kinds)}")
    return kinds[kind]


def model_label(values) -> str:
    """'aae (categorical)', 'bigan': how messages name a model."""
    kind = values.get("aae_kind") if values.get("model") == "aae" else None
    return f"{values.get('model')} ({kind})" if kind else str(values.get("model"))


def new_config(model: str, kind: str | None = None, **values):
    """The config of `model` (of `kind`, for the AAE) at its schema's defaults, then `values`."""
    keys = {"model": model, **({"aae_kind": kind} if kind else {})}
    return configs.new_config(model_class(keys).SCHEMA, **keys, **values)


def build_model(config) -> Model:
    validate_config(config)
    return model_class(config)(config)


def validate_config(config, num_devices: int | None = None) -> None:
    """Fails before any work on settings that make no sense (one clear line each): each field
    against the model's schema, then the rules that tie fields together."""
    import jax

    cls = model_class(config)
    configs.check(config, cls.SCHEMA, model_label(config))
    try:
        parallel.resolve_mode(config, num_devices or jax.device_count())
        cls.validate(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def fill_defaults(values: dict) -> dict:
    """A saved config (config.json) as today's code reads it (configs.migrate)."""
    return configs.migrate(values, model_class(values).SCHEMA)
