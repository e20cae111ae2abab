"""The command line tells the truth: every config or flag mistake is one line (exit status 2),
--help and --print_config, a run's label matches its settings, the options table and README's
code cannot drift from the code, the start-of-run lines."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_FLAGS, cli_env, run_cli


def _cli(*args, module="experiments.aae", tmp_path=None):
    env = cli_env(tmp_path) if tmp_path else None
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def experiment(model: str):
    from aaejax.run import cli
    from experiments import aae, bigan

    module = {"aae": aae, "bigan": bigan}[model]
    return cli.Experiment(model, module.__file__, module.get_config, module.VARIANTS, module.__doc__)


def _usage_error(args, model="aae") -> str:
    """The one line that cli.parse (in this process) answers `args` with."""
    from aaejax.run import cli

    with pytest.raises(cli.UsageError) as e:
        cli.parse([f"experiments.{model}", *args], experiment(model))
    assert len(str(e.value).splitlines()) == 1, str(e.value)
    return str(e.value)


@pytest.mark.parametrize("args,says", [
    (["--config.adv_wieght=0.01"], "unknown config field 'adv_wieght' for the seed variant; did you mean adv_weight?"),
    (["--config=aae:paper"], "cannot load the config file of --config=aae:paper; use --config=experiments/aae.py"),
    (["--config=experiments/aae.py:mixtur"], "unknown aae variant 'mixtur'; choose one of seed, parzen_keras, mixture"),
    (["--config=experiments/aae.py:semi_supervised"], "unknown aae variant 'semi_supervised': renamed 'semi_supervised_plus'"),
    (["--config.batch_size=abc"], "bad value 'abc' for config field batch_size"),
    (["--config.prior=cauchy"], "unknown prior 'cauchy'; choose one of gaussian"),
    (["--config.batch_size=0"], "batch_size must be >= 1 and <= 60000, got 0"),
    (["--config.hidden=(512,-1)"], "hidden must be a tuple of integers >= 1, got (512, -1)"),
    (["--config.disc_hidden=(0,)"], "disc_hidden must be a tuple of integers >= 1, got (0,)"),
    (["--stepz=3"], "unknown flag --stepz; did you mean --steps?"),
    (["--config.variant=paper"], "variant is set by the variant: choose one with --config=experiments/aae.py:VARIANT"),
    (["--config.aae_kind=paper"], "aae_kind is set by the variant"),
    (["stray"], "unexpected arguments: stray"),
    # A field the variant's model does not have is unknown, however the other AAEs use it.
    (["--config=experiments/aae.py:semi_supervised_plus", "--config.init=typo", "--config.prior=swiss_roll"],
     "unknown config field 'prior' for the semi_supervised_plus variant; did you mean prior_scale?"),
    (["--config=experiments/aae.py:semi_supervised_plus", "--config.init=typo"], "unknown init 'typo'"),
    (["--config=experiments/aae.py:semi_supervised_plus", "--config.d_update=nonsense"], "unknown config field 'd_update'"),
    (["--config.latent_dim=-5"], "latent_dim must be >= 1, got -5"),
    (["--config.lr=nan"], "lr must be a finite number, got nan"),
])
def test_every_mistake_is_one_line(args, says):
    assert says in _usage_error(args)


def test_a_mistake_ends_the_command_with_one_line_and_exit_status_2(tmp_path):
    """The issue's command: the first mistake, one line, status 2, before any work."""
    proc = _cli("--config=experiments/aae.py:semi_supervised_plus", "--config.init=typo", "--config.prior=swiss_roll",
                "--config.d_update=nonsense", "--config.latent_dim=-5", "--steps=1", f"--workdir={tmp_path / 'run'}",
                tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: unknown config field 'prior' for the semi_supervised_plus variant; did you mean prior_scale? "
        "(--help lists its fields)"]
    assert not (tmp_path / "run").exists()  # before any work


def test_help_lists_the_flags_and_every_field_of_the_variants_model():
    from aaejax.models import registry
    from experiments import aae, bigan

    for model, variant, module in (("aae", "seed", aae), ("aae", "paper_semi_100", aae), ("bigan", "official", bigan)):
        proc = _cli(f"--config=experiments/{model}.py:{variant}", "--help", module=f"experiments.{model}")
        assert proc.returncode == 0
        for flag in ("--workdir", "--steps", "--seed", "--overwrite", "--print_config", f"--config=experiments/{model}.py"):
            assert flag in proc.stdout
        listed = {line.split()[0] for line in proc.stdout.split("config fields")[1].splitlines()[1:] if line.strip()}
        assert listed == set(registry.model_class(module.get_config(variant)).SCHEMA)


def test_a_runs_label_matches_its_settings():
    proc = _cli("--config=experiments/aae.py:parzen_keras", "--print_config")
    config = json.loads(proc.stdout)
    assert (config["variant"], config["latent_dim"], config["prior_scale"], config["hidden"]) == ("parzen_keras", 8, 5.0, [1200, 1200])
    assert json.loads(_cli("--print_config").stdout)["variant"] == "seed"


def test_every_variant_holds_exactly_its_models_fields_and_the_options_table_is_current():
    from aaejax.models import registry
    from experiments import aae, bigan
    from tools import options

    for module in (aae, bigan):
        for variant in module.VARIANTS:
            config = module.get_config(variant)
            assert sorted(config) == sorted(registry.schema_of(config)), variant
    assert (REPO / "docs" / "options.md").read_text() == options.render() + "\n", \
        "docs/options.md is stale: python -m tools.options > docs/options.md"


def test_readme_python_blocks_run_against_a_tiny_run(tmp_path):
    """README's Python code, executed as a user would after training (a tiny run on mock data in
    place of runs/aae, the mock data in place of MNIST)."""
    import tensorflow_datasets as tfds

    proc = run_cli("experiments.aae", [f"--workdir={tmp_path / 'runs' / 'aae'}", "--steps=4", "--config.log_every=2"]
                   + TINY_FLAGS["aae"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with tfds.testing.mock_data(num_examples=32):
            for block in blocks:
                exec(compile(block, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)


def test_dropped_library_warnings_are_only_the_named_ones(caplog):
    """console.without_log_messages drops the records with its fragment, inside the block only."""
    import logging

    from aaejax.run import console

    logger = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        with console.without_log_messages("absl", "is read only"):
            logger.warning("dir x is read only")
            logger.warning("something else")
        logger.warning("dir y is read only")
    assert [r.getMessage() for r in caplog.records] == ["something else", "dir y is read only"]
