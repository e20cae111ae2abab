"""Run dirs written by older code still load and resume (issue #23, outcome 4).

tests/fixtures/rundirs_86008c2/ holds tiny runs of three default configs written by commit 86008c2
(before the code-shape refactor; generated on the bars set of conftest.bars_dataset(64, 64)):
trained to step 8 with checkpoints every 4 steps, then cut back to step 4 as if killed after that
checkpoint. Today's code resumes each to step 8 and must land on the very parameters a fresh run
of today's code reaches.
"""

import json
import shutil
from pathlib import Path

import chex
import pytest

import aaejax
from aaejax import rundir, trainer
from conftest import bars_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "rundirs_86008c2"


@pytest.mark.parametrize("name", ["aae_seed", "aae_semi_supervised", "bigan_official"])
def test_old_run_dir_loads_and_resumes(tmp_path, name):
    workdir = tmp_path / name
    shutil.copytree(FIXTURES / name, workdir)
    old = aaejax.load(workdir)
    assert old.step == 4 and old.sample(2).shape == (2, 28, 28, 1)
    bars = bars_dataset(n_train=64, n_test=64)
    config = rundir.read_config(workdir)
    resumed = trainer.train(config, workdir, bars)
    assert int(resumed.step) == 8
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [4, 8]
    fresh = trainer.train(rundir.read_config(workdir), tmp_path / "fresh", bars)
    # Not bit-equal: the fixtures' step-4 weights were computed on another CPU kind and with XLA's
    # full optimisations (the tests compile with fewer, conftest.py), which round differently
    # (seen: 6e-8 on weights of 1e-2, 2e-6 on an Adam moment after 4 more steps); a wrong resume
    # moves a weight by about the learning rate (2e-4) per step.
    chex.assert_trees_all_close(resumed, fresh, atol=1e-5, rtol=1e-4)
