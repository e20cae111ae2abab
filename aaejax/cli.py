"""Command line shared by `python -m experiments.aae|bigan`.

Flags: --workdir=DIR, --steps=N, --seed=S, --overwrite, --print_config, and --config.FIELD=VALUE
for every config field (aaejax/fields.py describes each); --config=experiments/bigan.py:seed
selects a named variant. Every mistake in them is one line on stderr and exit status 2, before
any work; `--help` lists the flags and the fields.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
RUN_FLAGS = ("workdir", "steps", "seed", "overwrite", "print_config", "config")


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, on by default so a second run starts in seconds."""
    import jax

    path = os.environ.get("AAEJAX_JAX_CACHE", os.path.expanduser("~/.cache/aaejax/jax"))
    if path.lower() in ("", "0", "off", "none"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _define_flags(config_path: str) -> None:
    flags.DEFINE_string("workdir", None, "Run directory (default runs/<model>).")
    flags.DEFINE_integer("steps", None, "Training steps (overrides config.num_steps).")
    flags.DEFINE_integer("seed", None, "Random seed (overrides config.seed).")
    flags.DEFINE_bool("overwrite", False, "If the work dir holds a run with another config, delete it "
                      "(checkpoints, samples, metrics) and start over; without it such a work dir is refused.")
    flags.DEFINE_bool("print_config", False, "Print the resolved config and exit.")
    config_flags.DEFINE_config_file("config", config_path, "Experiment config (path[:variant]).", lock_config=True)


def _experiment(model_name: str):
    import importlib

    return importlib.import_module(f"experiments.{model_name}")


def help_text(model_name: str) -> str:
    from aaejax.fields import FIELDS

    exp = _experiment(model_name)
    config = exp.get_config()
    lines = [f"usage: python -m experiments.{model_name} [--config=experiments/{model_name}.py[:VARIANT]] "
             f"[--workdir=DIR] [--steps=N] [--seed=S] [--overwrite] [--print_config] [--config.FIELD=VALUE ...]",
             "", (exp.__doc__ or "").strip(), "",
             "flags:",
             "  --workdir=DIR        run directory (default runs/<model>); the same command resumes a run there",
             "  --steps=N            training steps (overrides config.num_steps)",
             "  --seed=S             random seed (overrides config.seed)",
             "  --overwrite          delete a run of another config in the work dir and start over",
             "  --print_config       print the resolved config and exit",
             f"  --config=experiments/{model_name}.py:VARIANT   a named config: {', '.join(exp.VARIANTS)}",
             "", f"config fields (--config.FIELD=VALUE; defaults of the {exp.VARIANTS[0]} variant, "
                 "--print_config shows another's):"]
    for name, doc in FIELDS[model_name].items():
        lines.append(f"  {name:<26} {str(config[name]):<16} {doc}")
    return "\n".join(lines)


def _usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _explain(error: BaseException, model_name: str) -> str:
    """One line for a flag-parsing error."""
    from aaejax.fields import FIELDS

    exp = _experiment(model_name)
    text = str(error).strip()
    if isinstance(error, AttributeError):  # config_flags: an unknown field of the config
        field = re.search(r'instead of "(\w+)"', text) or re.search(r"(\w+)\\?'", text)
        text = f"Unknown command line flag 'config.{field.group(1) if field else '?'}'"
    unknown = re.match(r"Unknown command line flag '([^']+)'", text)
    if unknown:
        name = unknown.group(1)
        if name.startswith("config."):
            field = name.split(".", 1)[1]
            close = difflib.get_close_matches(field, list(FIELDS[model_name]), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            return f"unknown config field {field!r}{hint} (--help lists the fields)"
        close = difflib.get_close_matches(name, [*RUN_FLAGS], n=2)
        hint = f"; did you mean --{' or --'.join(close)}?" if close else ""
        return f"unknown flag --{name}{hint} (--help lists the flags)"
    if isinstance(error, OSError) or "Failed loading config file" in text:
        given = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "?")
        return (f"cannot load the config file of --config={given}; use --config=experiments/{model_name}.py[:VARIANT] "
                f"with VARIANT one of {', '.join(exp.VARIANTS)}")
    context = str(error.__context__ or "").strip().splitlines()
    last = context[-1] if context else text.splitlines()[-1]
    variant = re.search(r"ValueError: (unknown \w+ variant .*)", str(error.__context__ or ""))
    if variant:
        return variant.group(1)
    value = re.match(r"flag --config\.(\w+)=(.*?): ", text)
    if value:
        field = value.group(1)
        doc = FIELDS[model_name].get(field, "")
        return f"bad value {value.group(2)!r} for config field {field} ({doc}): {last.removeprefix('ValueError: ')}"
    return text.splitlines()[0]


def run(config_path: str, model_name: str) -> None:
    """Parses the command line (one line and exit status 2 for any mistake in it) and trains."""
    if {"-h", "--help", "--helpfull", "-?"} & set(sys.argv[1:]):
        print(help_text(model_name))
        sys.exit(0)
    try:  # config_flags reads the --config.FIELD overrides when the flag is defined; errors surface late
        _define_flags(config_path)
        rest = FLAGS(sys.argv)
        overrides = config_flags.get_override_values(FLAGS["config"])
        FLAGS.config.model  # noqa: B018 - a config file that failed to load raises here
    except Exception as e:  # noqa: BLE001 - absl and config_flags raise many kinds; each is one line
        _usage_error(_explain(e, model_name))
    if len(rest) > 1:
        _usage_error(f"unexpected arguments: {' '.join(rest[1:])} (flags take the form --name=value)")
    if "variant" in overrides:
        _usage_error(f"the variant is chosen with --config=experiments/{model_name}.py:VARIANT, not --config.variant")
    _main(model_name)


def _main(model_name: str) -> None:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("aaejax")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    from aaejax import parallel, registry, trainer
    from aaejax.checkpoint import CheckpointError
    from aaejax.configs import ConfigError
    from aaejax.data import DataError
    from aaejax.files import WriteError

    config = FLAGS.config
    with config.unlocked():
        if FLAGS.steps is not None:
            config.num_steps = FLAGS.steps
        if FLAGS.seed is not None:
            config.seed = FLAGS.seed
    if config.model != model_name:
        _usage_error(f"this is the {model_name} experiment, but the config is for {config.model!r}")
    # Multi-process jobs join up before anything touches a device (see parallel.initialize_distributed).
    parallel.initialize_distributed()
    try:
        registry.validate_config(config)
    except ConfigError as e:
        _usage_error(str(e))
    if FLAGS.print_config:
        print(config.to_json_best_effort(indent=2, sort_keys=True))
        return
    workdir = FLAGS.workdir or os.path.join("runs", config.model)
    enable_compilation_cache()
    try:
        trainer.train(config, workdir, overwrite=FLAGS.overwrite)
    except (ConfigError, DataError, CheckpointError, WriteError, trainer.NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted; run the same command again to resume from the last checkpoint")
    print(f"done: {workdir}")
