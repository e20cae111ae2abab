"""Command line shared by `python -m experiments.aae|bigan`.

Flags: --workdir=DIR, --steps=N, --seed=S, --overwrite, --print_config, and --config.FIELD=VALUE
for every field of the chosen variant's model (its SCHEMA declares each); --config=experiments/
bigan.py:seed selects a named variant. Every mistake in them is one line on stderr and exit
status 2, before any work; `--help` lists the flags and the fields. The experiment scripts pass
themselves in (`Experiment`): the library never imports them.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

RUN_FLAGS = ("workdir", "steps", "seed", "overwrite", "print_config", "config")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An entry point: its model's name, its config file, its named variants (the first the default)."""

    name: str
    path: str
    get_config: Callable
    variants: tuple[str, ...]
    doc: str = ""


class UsageError(Exception):
    """A mistake on the command line: one line, exit status 2."""


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, on by default so a second run starts in seconds."""
    import jax

    path = os.environ.get("AAEJAX_JAX_CACHE", os.path.expanduser("~/.cache/aaejax/jax"))
    if path.lower() in ("", "0", "off", "none"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _define_flags(fv: flags.FlagValues, config_path: str, argv: list[str]) -> None:
    flags.DEFINE_string("workdir", None, "Run directory (default runs/<model>).", flag_values=fv)
    flags.DEFINE_integer("steps", None, "Training steps (overrides config.num_steps).", flag_values=fv)
    flags.DEFINE_integer("seed", None, "Random seed (overrides config.seed).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "If the work dir holds a run with another config, delete it "
                      "(checkpoints, samples, metrics) and start over; without it such a work dir is refused.",
                      flag_values=fv)
    flags.DEFINE_bool("print_config", False, "Print the resolved config and exit.", flag_values=fv)
    config_flags.DEFINE_config_file("config", config_path, "Experiment config (path[:variant]).", flag_values=fv,
                                    lock_config=True, sys_argv=argv)  # it finds the --config.FIELD flags in argv


def _variant(argv: list[str], exp: Experiment) -> str:
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
    return given.rpartition(":")[2] if ":" in given else exp.variants[0]


def _variant_config(argv: list[str], exp: Experiment):
    """The config of the variant on the command line (the default one if it names none we know)."""
    variant = _variant(list(argv), exp)
    return exp.get_config(variant if variant in exp.variants else exp.variants[0])


def _schema(argv: list[str], exp: Experiment) -> dict:
    """The schema of the model of the variant on the command line."""
    from aaejax.models import registry

    return registry.schema_of(_variant_config(argv, exp))


def help_text(exp: Experiment, argv: list[str] = ()) -> str:
    from aaejax.models import registry

    config = _variant_config(argv, exp)
    label = registry.model_label(config)
    lines = [f"usage: python -m experiments.{exp.name} [--config=experiments/{exp.name}.py[:VARIANT]] "
             f"[--workdir=DIR] [--steps=N] [--seed=S] [--overwrite] [--print_config] [--config.FIELD=VALUE ...]",
             "", (exp.doc or "").strip(), "",
             "flags:",
             "  --workdir=DIR        run directory (default runs/<model>); the same command resumes a run there",
             "  --steps=N            training steps (overrides config.num_steps)",
             "  --seed=S             random seed (overrides config.seed)",
             "  --overwrite          delete a run of another config in the work dir and start over",
             "  --print_config       print the resolved config and exit",
             f"  --config=experiments/{exp.name}.py:VARIANT   a named config: {', '.join(exp.variants)}",
             "", f"config fields of {label} (--config.FIELD=VALUE; defaults of the {config.variant} variant; "
                 f"another variant's: --config=experiments/{exp.name}.py:VARIANT --help):"]
    for name, field in registry.schema_of(config).items():
        lines.append(f"  {name:<26} {str(config[name]):<16} {field.describe()}")
    return "\n".join(lines)


def _explain(error: BaseException, exp: Experiment, argv: list[str]) -> str:
    """One line for a flag-parsing error."""
    text = str(error).strip()
    if isinstance(error, AttributeError):  # config_flags: an unknown field of the config
        field = re.search(r'instead of "(\w+)"', text) or re.search(r"(\w+)\\?'", text)
        text = f"Unknown command line flag 'config.{field.group(1) if field else '?'}'"
    unknown = re.match(r"Unknown command line flag '([^']+)'", text)
    if unknown:
        name = unknown.group(1)
        if name.startswith("config."):
            field = name.split(".", 1)[1]
            close = difflib.get_close_matches(field, list(_schema(argv, exp)), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            return (f"unknown config field {field!r} for the {_variant(argv, exp)} variant{hint} "
                    f"(--help lists its fields)")
        close = difflib.get_close_matches(name, [*RUN_FLAGS], n=2)
        hint = f"; did you mean --{' or --'.join(close)}?" if close else ""
        return f"unknown flag --{name}{hint} (--help lists the flags)"
    if isinstance(error, OSError) or "Failed loading config file" in text:
        given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
        return (f"cannot load the config file of --config={given}; use --config=experiments/{exp.name}.py[:VARIANT] "
                f"with VARIANT one of {', '.join(exp.variants)}")
    context = str(error.__context__ or "").strip().splitlines()
    last = context[-1] if context else text.splitlines()[-1]
    variant = re.search(r"ValueError: (unknown \w+ variant .*)", str(error.__context__ or ""))
    if variant:
        return variant.group(1)
    value = re.match(r"flag --config\.(\w+)=(.*?): ", text)
    if value:
        field = _schema(argv, exp).get(value.group(1))
        about = f" ({field.describe()})" if field else ""
        return f"bad value {value.group(2)!r} for config field {value.group(1)}{about}: {last.removeprefix('ValueError: ')}"
    return text.splitlines()[0]


def parse(argv: list[str], exp: Experiment):
    """argv -> (the config, validated; the run flags). UsageError (one line) for any mistake."""
    config, fv = parse_flags(argv, exp)
    validate(config)
    return config, fv


def validate(config, fields_only: bool = False) -> None:
    """UsageError (one line) for a value the model does not allow (registry.validate_config);
    fields_only: each field on its own, without JAX (registry.check_fields)."""
    from aaejax.configs import ConfigError
    from aaejax.models import registry

    try:
        (registry.check_fields if fields_only else registry.validate_config)(config)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def parse_flags(argv: list[str], exp: Experiment):
    """argv -> (the config, not yet validated; the run flags), without JAX. UsageError (one line)
    for a mistake in the flags themselves."""
    from aaejax.models import registry

    fv = flags.FlagValues()
    try:  # config_flags reads the --config.FIELD overrides when the flag is defined; errors surface late
        _define_flags(fv, exp.path, argv)
        rest = fv(argv)
        overrides = config_flags.get_override_values(fv["config"])
        config = fv.config
        config.model  # noqa: B018 - a config file that failed to load raises here
    except Exception as e:  # noqa: BLE001 - absl and config_flags raise many kinds; each is one line
        raise UsageError(_explain(e, exp, argv)) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(rest[1:])} (flags take the form --name=value)")
    chosen = [k for k in ("variant", *registry.SCHEMA_KEYS) if k in overrides]
    if chosen:
        raise UsageError(f"{chosen[0]} is set by the variant: choose one with --config=experiments/{exp.name}.py:VARIANT, "
                         f"not --config.{chosen[0]}")
    with config.unlocked():
        if fv.steps is not None:
            config.num_steps = fv.steps
        if fv.seed is not None:
            config.seed = fv.seed
    if config.model != exp.name:
        raise UsageError(f"this is the {exp.name} experiment, but the config is for {config.model!r}")
    return config, fv


def run(exp: Experiment) -> None:
    """Parses the command line (one line and exit status 2 for any mistake in it) and trains."""
    if {"-h", "--help", "--helpfull", "-?"} & set(sys.argv[1:]):
        print(help_text(exp, sys.argv[1:]))
        sys.exit(0)
    flags.FLAGS.mark_as_parsed()  # absl's own flags keep their defaults (its logging asks)
    try:
        config, fv = parse_flags(sys.argv, exp)
        validate(config, fields_only=True)  # a bad value answers at once, before JAX loads
        from aaejax.run import parallel

        # Multi-process jobs join up before anything touches a device (parallel.initialize_distributed).
        parallel.initialize_distributed()
        validate(config)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if fv.print_config:
        print(config.to_json_best_effort(indent=2, sort_keys=True))
        return
    _main(config, fv.workdir or os.path.join("runs", config.model), fv.overwrite)


def _main(config, workdir: str, overwrite: bool) -> None:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("aaejax")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    from aaejax.run import trainer
    from aaejax.run.checkpoint import CheckpointError
    from aaejax.configs import ConfigError
    from aaejax.data.datasets import DataError
    from aaejax.run.files import WriteError

    enable_compilation_cache()
    try:
        trainer.train(config, workdir, overwrite=overwrite)
    except (ConfigError, DataError, CheckpointError, WriteError, trainer.NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted; run the same command again to resume from the last checkpoint")
    print(f"done: {workdir}")
