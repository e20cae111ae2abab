"""Each metric on small synthetic cases with known answers."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aaejax.eval import metrics as ev


def test_frechet_distance_identical_sets_is_zero_and_shift_is_squared_norm():
    f = np.random.default_rng(0).normal(size=(2000, 6))
    assert abs(ev.frechet_distance(f, f)) < 1e-6
    shift = np.array([3.0, 0, 0, 0, 0, 0])
    assert ev.frechet_distance(f, f + shift) == pytest.approx(9.0, rel=1e-6)


def test_frechet_distance_of_gaussians_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200000, 2)), 2.0 * rng.normal(size=(200000, 2))
    # N(0, I) vs N(0, 4I): tr(I + 4I - 2*2I) = 2*(1 + 4 - 4) = 2.
    assert ev.frechet_distance(a, b) == pytest.approx(2.0, abs=0.05)


def test_knn1_perfect_and_chance_features():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 10, 1000), rng.integers(0, 10, 300)
    perfect = lambda y: np.eye(10)[y] * 10 + rng.normal(scale=0.1, size=(len(y), 10))
    assert ev.knn1_accuracy(perfect(ytr), ytr, perfect(yte), yte) == 1.0
    noise = ev.knn1_accuracy(rng.normal(size=(1000, 5)), ytr, rng.normal(size=(300, 5)), yte)
    assert noise < 0.25


def test_linear_probe_separable_features():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 10, 2000), rng.integers(0, 10, 500)
    centers = rng.normal(size=(10, 8)) * 4
    feats = lambda y: centers[y] + rng.normal(size=(len(y), 8))
    assert ev.linear_probe_accuracy(feats(ytr), ytr, feats(yte), yte, steps=200) > 0.95


def test_classifier_score_bounds_and_fractions():
    onehot = jax.nn.one_hot(jnp.arange(1000) % 10, 10)
    assert ev.classifier_score(onehot) == pytest.approx(10.0, rel=1e-4)
    assert ev.classifier_score(jax.nn.one_hot(jnp.zeros(1000, int), 10)) == pytest.approx(1.0, rel=1e-4)
    assert ev.class_fractions(onehot) == pytest.approx([0.1] * 10)


def test_recon_mse_of_identity_is_zero():
    x = jax.random.uniform(jax.random.PRNGKey(0), (50, 28, 28, 1))
    assert ev.recon_mse(lambda a: a, x) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["aae", "bigan"])
def test_evaluate_end_to_end_on_a_tiny_run(tmp_path, bars, model, capsys):
    import json

    from aaejax.run import trainer
    from conftest import assert_documented, tiny_aae_config, tiny_bigan_config
    from aaejax.eval.report import evaluate

    config = tiny_aae_config() if model == "aae" else tiny_bigan_config()
    trainer.train(config, tmp_path, bars)
    out = evaluate(tmp_path, num_samples=200, classifier_cache=tmp_path / "clf", dataset=bars)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert_documented(out)  # with the classifier's keys and, for the BiGAN, the official ones
    said = "".join(capsys.readouterr())  # the judge's training is announced, with where it is cached
    assert "evaluate: training the sample judge" in said and str(tmp_path / "clf") in said
    assert saved["classifier_test_acc"] > 0.9  # the bars' positions are easy to tell apart
    for key in ("recon_mse", "classifier_score", "fd_lenet", "knn1_acc", "knn1_acc_pixels",
                "knn1_acc_random_encoder", "linear_probe_acc", "mean_top_prob", "parzen_ll", "parzen_ll_se"):
        assert np.isfinite(saved[key]), key
    assert len(saved["class_fractions"]) == 10 and abs(sum(saved["class_fractions"]) - 1) < 1e-6
    assert 0 <= saved["recon_mse"] <= 1 and 1 <= saved["classifier_score"] <= 10
    for name in ("samples", "reconstructions", "latent_scatter", "interpolations", "losses"):
        assert (tmp_path / "eval" / f"{name}.png").stat().st_size > 0
    if model == "bigan":  # the official code's feature scores, on its split, and on the test set
        for key in ("nnc_e", "nnc_e_minus", "probe_e_minus"):
            for where in ("heldout", "test"):
                assert 0.1 < saved[f"{key}_{where}"] <= 1, (key, where)  # the bars are learnable


def test_parzen_of_a_gaussian_matches_its_closed_form():
    """Kernels of width s on samples of N(0, I) estimate N(0, (1 + s^2) I) as samples grow."""
    rng = np.random.default_rng(0)
    d, s = 2, 0.3
    samples = rng.normal(size=(40000, d))
    x = rng.normal(size=(500, d))
    ll = np.asarray(ev.parzen_log_likelihoods(samples, x, [s])[:, 0])
    var = 1 + s**2
    exact = -0.5 * np.sum(x**2, 1) / var - 0.5 * d * np.log(2 * np.pi * var)
    assert np.mean(np.abs(ll - exact)) < 0.05


def test_parzen_selects_the_best_sigma_on_validation():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(5000, 3))
    out = ev.parzen(samples, rng.normal(size=(500, 3)), rng.normal(size=(500, 3)), sigmas=[0.01, 0.3, 10.0])
    assert out["parzen_sigma"] == pytest.approx(0.3)
    exact = -0.5 * 3 * np.log(2 * np.pi * 1.09) - 0.5 * 3 / 1.09 * 1.0  # E over x ~ N(0, I)
    assert out["parzen_ll"] == pytest.approx(exact, abs=0.15)
    assert 0 < out["parzen_ll_se"] < 0.2


def test_evaluate_says_which_step_it_evaluated(tmp_path, bars):
    from aaejax.run import trainer
    from conftest import run_cli, tiny_aae_config

    trainer.train(tiny_aae_config(num_steps=20, checkpoint_every=10, max_to_keep=5), tmp_path / "run", bars)
    proc = run_cli("experiments.evaluate", [f"--workdir={tmp_path / 'run'}", "--classifier=false", "--knn_pixels=false",
                                            "--num_samples=100"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"evaluated step 20 of {tmp_path / 'run'} (its newest readable checkpoint)" in proc.stdout
    proc = run_cli("experiments.evaluate", [f"--workdir={tmp_path / 'run'}", "--num_samples=10000000000"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.fullmatch(r"error: sample\(10000000000\) needs .* GiB .*: ask for fewer", proc.stderr.splitlines()[-1])


def test_evaluate_curve_says_a_failed_write_in_one_line(tmp_path, bars):
    from aaejax.run import trainer
    from conftest import run_cli, tiny_aae_config

    trainer.train(tiny_aae_config(num_steps=0), tmp_path / "run", bars)  # its config.json
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 4, "eval_x": 0.5, "per_seed": {"eval_x": [0.5, 0.7]}}\n')
    full_disk = ("import aaejax.run.files as f\n"
                 "def full(path, data, what=''):\n"
                 "    raise f.WriteError('No space left on device', path, what or path.name)\n"
                 "f.write_atomic = full\n")
    proc = run_cli("experiments.evaluate", [f"--workdir={tmp_path / 'run'}", "--curve"], tmp_path, prelude=full_disk)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "0.6000 ± 0.1414" in proc.stdout  # the table came first
    assert re.fullmatch(rf"error: could not write curve.json to {re.escape(str(tmp_path / 'run' / 'curve.json'))}: "
                        r"No space left on device \(\d+\.\d MB free\); free space and rerun the same command "
                        r"\(the run itself is untouched\)", proc.stderr.splitlines()[-1])
