"""The models: the protocol the trainer drives (protocol.py), the registry that finds a config's
model (registry.py), each model's config fields (schemas.py), one module per model (aae.py,
aae_categorical.py, aae_paper.py, bigan.py) with its step and its cross-field checks, and what
they share: the Flax nets (nets.py), the named losses (losses.py), priors, optimizers and
schedules, per-network state."""
