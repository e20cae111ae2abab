"""The models: the protocol the trainer drives (protocol.py), the registry that finds a config's
model (registry.py), one module per model (aae.py, aae_categorical.py, aae_paper.py, bigan.py),
each owning its SCHEMA, its step and its cross-field checks, and what they share: the Flax nets
(nets.py), the named losses (losses.py), priors, optimizers and schedules, per-network state."""
