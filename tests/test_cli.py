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


@pytest.mark.parametrize("args,says", [
    (["--config.adv_wieght=0.01"], "unknown config field 'adv_wieght'; did you mean adv_weight?"),
    (["--config=aae:paper"], "cannot load the config file of --config=aae:paper; use --config=experiments/aae.py"),
    (["--config=experiments/aae.py:mixtur"], "unknown aae variant 'mixtur'; choose one of seed, parzen_keras, mixture"),
    (["--config=experiments/aae.py:semi_supervised"], "unknown aae variant 'semi_supervised': renamed 'semi_supervised_plus'"),
    (["--config.batch_size=abc"], "bad value 'abc' for config field batch_size"),
    (["--config.prior=cauchy"], "unknown prior 'cauchy'; choose one of gaussian"),
    (["--config.batch_size=0"], "batch_size must be in 1..60000"),
    (["--config.hidden=(512,-1)"], "hidden must be layer widths >= 1, got (512, -1)"),
    (["--config.disc_hidden=(0,)"], "disc_hidden must be layer widths >= 1, got (0,)"),
    (["--stepz=3"], "unknown flag --stepz; did you mean --steps?"),
    (["--config.variant=paper"], "the variant is chosen with --config=experiments/aae.py:VARIANT"),
    (["stray"], "unexpected arguments: stray"),
])
def test_every_mistake_is_one_line_and_exit_status_2(tmp_path, args, says):
    proc = _cli(*args, f"--workdir={tmp_path / 'run'}", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # before any work


def test_help_lists_the_flags_and_every_field():
    from aaejax.fields import FIELDS

    for model in ("aae", "bigan"):
        proc = _cli("--help", module=f"experiments.{model}")
        assert proc.returncode == 0
        for flag in ("--workdir", "--steps", "--seed", "--overwrite", "--print_config", f"--config=experiments/{model}.py"):
            assert flag in proc.stdout
        listed = {line.split()[0] for line in proc.stdout.split("config fields")[1].splitlines()[1:] if line.strip()}
        assert listed == set(FIELDS[model])


def test_a_runs_label_matches_its_settings():
    proc = _cli("--config=experiments/aae.py:parzen_keras", "--print_config")
    config = json.loads(proc.stdout)
    assert (config["variant"], config["latent_dim"], config["prior_scale"], config["hidden"]) == ("parzen_keras", 8, 5.0, [1200, 1200])
    assert json.loads(_cli("--print_config").stdout)["variant"] == "seed"


def test_every_field_has_one_description_and_the_options_table_is_current():
    from aaejax.fields import FIELDS
    from experiments import aae, bigan, options

    for module, model in ((aae, "aae"), (bigan, "bigan")):
        for variant in module.VARIANTS:
            assert set(module.get_config(variant)) == set(FIELDS[model]), (model, variant)
    assert (REPO / "docs" / "options.md").read_text() == options.render() + "\n", \
        "docs/options.md is stale: python -m experiments.options > docs/options.md"


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

    from aaejax import console

    logger = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        with console.without_log_messages("absl", "is read only"):
            logger.warning("dir x is read only")
            logger.warning("something else")
        logger.warning("dir y is read only")
    assert [r.getMessage() for r in caplog.records] == ["something else", "dir y is read only"]
