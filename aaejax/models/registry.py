"""The models, found by config.model (and, for the AAE, config.aae_kind). Their schemas
(schemas.SCHEMAS) need no JAX: `new_config`, `schema_of` and `fill_defaults` answer without it,
for the command line's --help and flag mistakes; the model classes load on first use."""

from __future__ import annotations

from aaejax import configs
from aaejax.configs import ConfigError
from aaejax.models.schemas import SCHEMAS

# The fields that choose the schema: a named variant sets them, a flag cannot.
SCHEMA_KEYS = ("model", "aae_kind")


def _key(values) -> tuple[str, str | None]:
    model = values.get("model")
    if model not in SCHEMAS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(SCHEMAS)}")
    if model != "aae":
        return model, None
    kind = values.get("aae_kind", "basic")
    if kind not in SCHEMAS["aae"]:
        raise ConfigError(f"unknown aae_kind {kind!r}; choose one of {', '.join(SCHEMAS['aae'])}")
    return model, kind


def schema_of(values) -> dict:
    """The schema of the model that `values` (a config or a dict) configures."""
    model, kind = _key(values)
    return SCHEMAS[model][kind] if kind else SCHEMAS[model]


def model_class(values):
    """The class (models.protocol.Model) that `values` configures."""
    model, kind = _key(values)
    if model == "bigan":
        from aaejax.models.bigan import BiGAN

        return BiGAN
    if kind == "categorical":
        from aaejax.models.aae_categorical import CategoricalAAE

        return CategoricalAAE
    if kind == "paper":
        from aaejax.models.aae_paper import PaperAAE

        return PaperAAE
    from aaejax.models.aae import AAE

    return AAE


def model_label(values) -> str:
    """'aae (categorical)', 'bigan': how messages name a model."""
    kind = values.get("aae_kind") if values.get("model") == "aae" else None
    return f"{values.get('model')} ({kind})" if kind else str(values.get("model"))


def new_config(model: str, kind: str | None = None, **values):
    """The config of `model` (of `kind`, for the AAE) at its schema's defaults, then `values`."""
    keys = {"model": model, **({"aae_kind": kind} if kind else {})}
    return configs.new_config(schema_of(keys), **keys, **values)


def build_model(config):
    validate_config(config)
    return model_class(config)(config)


def check_fields(config) -> None:
    """ConfigError (one line) on the first field the model lacks or value it does not allow;
    without JAX."""
    configs.check(config, schema_of(config), model_label(config))


def validate_config(config, num_devices: int | None = None) -> None:
    """Fails before any work on settings that make no sense (one clear line each): each field
    against the model's schema, then the rules that tie fields together."""
    check_fields(config)
    import jax

    from aaejax.run import parallel

    try:
        parallel.resolve_mode(config, num_devices or jax.device_count())
        model_class(config).validate(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def fill_defaults(values: dict) -> dict:
    """A saved config (config.json) as today's code reads it (configs.migrate)."""
    return configs.migrate(values, schema_of(values))
