"""aaejax: adversarial representation learning (AAE, BiGAN) in JAX/Flax."""

from aaejax.api import LoadedModel, load

__all__ = ["load", "LoadedModel"]
__version__ = "0.1.0"
