"""aaejax: adversarial representation learning (AAE, BiGAN) in JAX/Flax."""

__all__ = ["load", "LoadedModel"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`aaejax.load` / `aaejax.LoadedModel` import JAX on first use, not with the package: the
    command line answers --help and mistakes in its flags without it (2 s)."""
    if name in __all__:
        from aaejax import api

        return getattr(api, name)
    raise AttributeError(f"module 'aaejax' has no attribute {name!r}")
