"""Command line shared by `python -m experiments.aae|bigan`.

Flags: --workdir=DIR, --steps=N, --seed=S, and --config.<field>=value for every config field;
--config=experiments/bigan.py:paper selects a named variant of the experiment's config.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, on by default so a second run starts in seconds."""
    import jax

    path = os.environ.get("AAEJAX_JAX_CACHE", os.path.expanduser("~/.cache/aaejax/jax"))
    if path.lower() in ("", "0", "off", "none"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run(config_path: str, model_name: str) -> None:
    """Defines the flags and runs training; `config_path` is the experiment module's file."""
    flags.DEFINE_string("workdir", None, "Run directory (default runs/<model>).")
    flags.DEFINE_integer("steps", None, "Training steps (overrides config.num_steps).")
    flags.DEFINE_integer("seed", None, "Random seed (overrides config.seed).")
    flags.DEFINE_bool("overwrite", False, "If the work dir holds a run with another config, delete it "
                      "(checkpoints, samples, metrics) and start over; without it such a work dir is refused.")
    config_flags.DEFINE_config_file("config", config_path, "Experiment config (path[:variant]).",
                                    lock_config=True)
    app.run(lambda argv: _main(argv, model_name))


def _main(argv, model_name: str) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
    logging.getLogger("aaejax").setLevel(logging.INFO)
    from aaejax import parallel, registry, trainer
    from aaejax.checkpoint import CheckpointError
    from aaejax.configs import ConfigError
    from aaejax.data import DataError
    from aaejax.rundir import WriteError

    # Multi-process jobs join up before anything touches a device (see parallel.initialize_distributed).
    parallel.initialize_distributed()

    config = FLAGS.config
    with config.unlocked():
        if FLAGS.steps is not None:
            config.num_steps = FLAGS.steps
        if FLAGS.seed is not None:
            config.seed = FLAGS.seed
    if config.model != model_name:
        sys.exit(f"error: this is the {model_name} experiment, but the config is for {config.model!r}")
    workdir = FLAGS.workdir or os.path.join("runs", config.model)
    enable_compilation_cache()
    try:
        registry.validate_config(config)
        trainer.train(config, workdir, overwrite=FLAGS.overwrite)
    except (ConfigError, DataError, CheckpointError, WriteError, trainer.NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted; run the same command again to resume from the last checkpoint")
    print(f"done: {workdir}")
