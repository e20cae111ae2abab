"""Run dirs written by older code still load and resume (issue #23, outcome 4).

tests/fixtures/rundirs_86008c2/ holds tiny runs of three default configs written by commit 86008c2
(before the code-shape refactor, and the last commit with the options it removed), by
tests/fixtures/make_rundirs_86008c2.py run in a checkout of that commit: trained to step 8 on
conftest.bars_dataset(64, 64) with checkpoints every 4 steps, then cut back to step 4 as if killed
after that checkpoint. Their config.json files hold the removed options at their "off" values.
Today's code resumes each to step 8 and must land on the very parameters a fresh run of today's
code reaches (with the random-key indices of the fixtures' code, `_draw_as_before`).
"""

import json
import shutil
from pathlib import Path

import chex
import jax
import pytest

import aaejax
from aaejax import configs
from aaejax.models import aae, aae_categorical, registry
from aaejax.run import rundir, trainer
from conftest import bars_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "rundirs_86008c2"


def _draw_as_before(monkeypatch) -> None:
    """Today's code with the random-key indices the fixtures' code drew with: 886eb34 gave the
    two-batch AAE's eps_d a key of its own (it was the prior's, fold_in(k, 1)), 49807d1 the
    categorical AAE's labelled shifts and consistency view (they were fold_in(k, 2) and 3). With
    them, resuming a fixture must land where a fresh run does. (Callers clear JAX's caches: the
    trainer's programs are cached by model config.)"""
    aae_draws, categorical_draws = aae.AAE.draws, aae_categorical.CategoricalAAE._draws

    def old_aae_draws(self, state, batch):
        out = aae_draws(self, state, batch)
        if self.config.d_update == "two_batches":
            out["eps_d"] = jax.random.normal(jax.random.fold_in(state.step_key(), 1), out["eps"].shape)
        return out

    def old_categorical_draws(self, state, batch):
        k = state.step_key()
        return {**categorical_draws(self, state, batch), "k_shift": jax.random.fold_in(k, 2),
                "k_consist": jax.random.fold_in(k, 3)}

    monkeypatch.setattr(aae.AAE, "draws", old_aae_draws)
    monkeypatch.setattr(aae_categorical.CategoricalAAE, "_draws", old_categorical_draws)


@pytest.mark.parametrize("name", ["aae_seed", "aae_semi_supervised", "bigan_official"])
def test_old_run_dir_loads_and_resumes(tmp_path, name, monkeypatch, retrace):
    _draw_as_before(monkeypatch)
    workdir = tmp_path / name
    shutil.copytree(FIXTURES / name, workdir)
    saved = json.loads((workdir / "config.json").read_text())
    removed = configs.REMOVED_FIELDS[saved["model"]]
    assert {field: saved[field] for field in removed} == removed  # written by 86008c2, options off
    old = aaejax.load(workdir)
    assert old.step == 4 and old.sample(2).shape == (2, 28, 28, 1)
    bars = bars_dataset(n_train=64, n_test=64)
    config = rundir.read_config(workdir)
    assert config.variant == {"aae_semi_supervised": "semi_supervised_plus"}.get(name, saved["variant"])  # renamed
    resumed = trainer.train(config, workdir, bars)
    assert int(resumed.step) == 8
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [4, 8]
    fresh = trainer.train(rundir.read_config(workdir), tmp_path / "fresh", bars)
    # Not bit-equal: the fixtures' step-4 weights were computed with XLA's full optimisations (the
    # tests compile with fewer, conftest.py) on whatever CPU generated them, which round differently
    # (seen: 6e-8 on weights of 1e-2, 2e-6 on an Adam moment after 4 more steps); a wrong resume
    # moves a weight by about the learning rate (2e-4) per step.
    chex.assert_trees_all_close(resumed, fresh, atol=1e-5, rtol=1e-4)


def test_old_run_dir_that_used_a_removed_option_is_refused_in_one_line(tmp_path):
    workdir = tmp_path / "aae_seed"
    shutil.copytree(FIXTURES / "aae_seed", workdir)
    saved = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**saved, "disc_noise": 0.3}))
    for read in (rundir.read_config, aaejax.load):
        with pytest.raises(configs.ConfigError) as e:
            read(workdir)
        assert str(e.value) == (
            "this run used disc_noise=0.3, an option removed after commit 86008c2 (docs/results.md "
            "has its measurements); check out that commit to load or resume it")
    assert json.loads((workdir / "config.json").read_text())["disc_noise"] == 0.3  # left as it was


# tests/fixtures/rundirs_d171984/ (tests/fixtures/make_rundirs_d171984.py, run in a checkout of
# d171984): written before each model had its own schema, so their configs hold every AAE kind's
# fields; today's code drops those the model lacks, resumes each to step 8, and lands where a
# fresh run of today's code does.
FIXTURES_D171984 = Path(__file__).parent / "fixtures" / "rundirs_d171984"


@pytest.mark.parametrize("name", ["aae_seed", "aae_semi_supervised_plus", "aae_paper_semi_100", "bigan_official"])
def test_run_dir_from_before_the_schemas_loads_and_resumes(tmp_path, name, monkeypatch, retrace):
    _draw_as_before(monkeypatch)
    workdir = tmp_path / name
    shutil.copytree(FIXTURES_D171984 / name, workdir)
    saved = json.loads((workdir / "config.json").read_text())
    config = rundir.read_config(workdir)
    assert set(config) == set(registry.schema_of(saved)) and set(config) != set(saved)  # fields dropped
    assert aaejax.load(workdir).step == 4
    bars = bars_dataset(n_train=64, n_test=64)
    resumed = trainer.train(config, workdir, bars)
    assert int(resumed.step) == 8
    fresh = trainer.train(rundir.read_config(workdir), tmp_path / "fresh", bars)
    chex.assert_trees_all_close(resumed, fresh, atol=1e-5, rtol=1e-4)  # rounding: see above
