"""The AAE paper's other models: 2-D and label-conditioned priors, supervised, semi-supervised,
clustering. Priors and metrics against known answers; every variant one step, evaluate end to end on three."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aaejax
from aaejax.data import batching
from aaejax.data import datasets as data_lib
from aaejax.eval import metrics as ev
from aaejax.data import images
from aaejax.models import priors, registry
from aaejax.run import trainer
from aaejax.configs import ConfigError
from conftest import assert_documented, batch_of, tiny_variant


def test_mixture_prior_component_follows_the_label():
    prior = priors.GaussianMixture2D(num_components=10, radius=4.0)
    labels = jnp.repeat(jnp.arange(10), 500)
    z = np.asarray(prior.sample(jax.random.PRNGKey(0), (5000, 2), labels))
    chex.assert_shape(z, (5000, 2))
    angles = np.arctan2(z[:, 1], z[:, 0]).reshape(10, 500)
    mean_dir = np.exp(1j * angles).mean(1)
    offset = np.angle(mean_dir * np.exp(-2j * np.pi * np.arange(10) / 10))  # wrapped to (-pi, pi]
    np.testing.assert_allclose(offset, 0.0, atol=0.05)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1).mean(), 4.0, atol=0.1)
    free = np.asarray(prior.sample(jax.random.PRNGKey(1), (20000, 2)))  # no labels: all components
    comp = np.round(np.arctan2(free[:, 1], free[:, 0]) / (2 * np.pi / 10)) % 10
    assert np.bincount(comp.astype(int), minlength=10).min() > 1600


def test_the_step_draws_prior_codes_of_each_image_label(bars):
    """The conditioned AAE's real codes for D come from the component its batch's labels name."""
    model = registry.build_model(tiny_variant("mixture_cond"))
    batch = batch_of(bars, 16)
    z = np.asarray(model.draws(model.init(jax.random.PRNGKey(0)), batch)["z_real"])
    nearest = np.round(np.arctan2(z[:, 1], z[:, 0]) / (2 * np.pi / 10)) % 10
    np.testing.assert_array_equal(nearest, np.asarray(batch["label"]))


def test_the_seed_steps_three_draws_are_independent():
    """eps (the autoencoder's codes), eps_d (the codes D sees) and z_real (the prior's) are drawn
    apart, as Keras-GAN's separate calls draw them: no two equal, none correlated."""
    model = registry.build_model(tiny_variant("seed"))
    batch = {"image": np.zeros((500, 28, 28, 1), np.uint8), "label": np.zeros((500,), np.int32)}
    draws = model.draws(model.init(jax.random.PRNGKey(0)), batch)
    names = ("eps", "eps_d", "z_real")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            corr = np.corrcoef(np.ravel(draws[a]), np.ravel(draws[b]))[0, 1]
            assert abs(corr) < 0.05, (a, b, corr)


def test_input_noise_is_added_to_the_unlabelled_images(bars):
    """The categorical AAE's encoder sees x + input_noise * N(0, 1) ([-1, 1] scale); x stays the
    reconstruction target."""
    model = registry.build_model(tiny_variant("clustering_plus"))  # input_noise 0.3
    batch = batch_of(bars, 16)
    draws = model._draws(model.init(jax.random.PRNGKey(0)), batch)
    np.testing.assert_array_equal(draws["x"], images.signed(batch["image"]))
    noise = np.asarray(draws["x_in"] - draws["x"])
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.3) < 0.01, (noise.mean(), noise.std())


def test_the_categorical_steps_keys_are_each_its_own(bars):
    """The unlabelled images' input noise and the keys of the labelled noise, the labelled shifts
    and the consistency view: four independent streams, none correlated with another."""
    config = tiny_variant("semi_supervised_plus")
    config.input_noise = 0.3
    model = registry.build_model(config)
    batch = batch_of(bars, 16)
    draws = model._draws(model.init(jax.random.PRNGKey(0)), batch)
    shape = draws["x"].shape
    streams = {"input noise": np.asarray(draws["x_in"] - draws["x"]) / 0.3,
               **{k: np.asarray(jax.random.normal(draws[k], shape)) for k in ("k_noise_l", "k_shift", "k_consist")}}
    names = list(streams)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            corr = np.corrcoef(streams[a].ravel(), streams[b].ravel())[0, 1]
            assert abs(corr) < 0.05, (a, b, corr)


def test_swiss_roll_segments_follow_the_label():
    prior = priors.SwissRoll2D(num_components=10)
    labels = jnp.repeat(jnp.arange(10), 300)
    r = np.linalg.norm(np.asarray(prior.sample(jax.random.PRNGKey(0), (3000, 2), labels)), axis=1).reshape(10, 300)
    edges = 3.0 * np.sqrt(np.arange(11) / 10)  # segment k covers radii [edges[k], edges[k+1])
    assert np.all(r >= edges[:-1, None] - 1e-5) and np.all(r <= edges[1:, None] + 1e-5)


@pytest.mark.parametrize("variant,field,value,match", [
    ("mixture_cond", "latent_dim", 3, "latent_dim=2"), ("mixture_cond", "prior", "gaussian", "prior_conditioned"),
])
def test_aae_config_errors(variant, field, value, match):
    config = tiny_variant(variant)
    config[field] = value
    with pytest.raises(ConfigError, match=match):
        registry.validate_config(config)


@pytest.mark.parametrize("config,match", [
    (tiny_variant("semi_supervised_plus", num_labels=15), "multiple of num_classes"),
    (tiny_variant("semi_supervised_plus", num_categories=16), "num_categories == num_classes"),
    (tiny_variant("clustering_plus", aae_kind="vq"), "aae_kind"),
    (tiny_variant("clustering_plus", phases="alternating"), "phases"),
    (tiny_variant("clustering_plus", input_noise=-0.1), "input_noise"),
    (tiny_variant("clustering_plus", balance_weight=-1.0), "balance_weight"),
    (tiny_variant("clustering_plus", lr_schedule="exponential"), "lr_schedule='constant'"),
    (tiny_variant("semi_supervised_plus", labelled_shift=-1), "labelled_shift"),
    (tiny_variant("clustering_plus", consistency_weight=-1.0), "consistency_weight"),
    (tiny_variant("clustering_plus", consistency_weight=1.0, consistency_shift=0), "consistency_shift"),
    (tiny_variant("clustering_plus", augment_rotation=-5.0), "augment_rotation"),
])
def test_categorical_config_errors(config, match):
    with pytest.raises(ConfigError, match=match):
        registry.validate_config(config)


def _adam_counts(net) -> list[int]:
    return [int(x) for path, x in jax.tree_util.tree_leaves_with_path(net.opt_state)
            if "count" in jax.tree_util.keystr(path)]


def test_sequential_phases_step_the_encoder_three_times(bars):
    """Sequential phases update the encoder three times a step (reconstruction, regularisation,
    supervised) and the decoder twice with labelled_recon; each discriminator once."""
    config = tiny_variant("semi_supervised_plus", phases="sequential", lr_schedule="constant")
    model = registry.build_model(config)
    new, _ = jax.jit(model.train_step)(model.init(jax.random.PRNGKey(0)), _batch(bars, config))
    for name, count in {"encoder": 3, "decoder": 2, "disc_category": 1, "disc_style": 1}.items():
        assert set(_adam_counts(new.nets[name])) == {count}, name


def test_two_discriminator_updates_a_step_keep_its_schedule_on_the_step():
    """d_update='two_batches' steps D's optimizer twice a step; its learning rate is the
    schedule's at the training step, as logged (Adam's first updates of a constant gradient are
    -lr each with optax's Adam; Keras's counts the networks' updates together)."""
    config = tiny_variant("seed", lr_schedule="exponential", num_steps=4, adam="optax")
    model = registry.build_model(config)
    tx, schedule = model.txs["discriminator"], model.schedules["discriminator"]
    params = {"w": jnp.zeros(())}
    opt_state, steps = tx.init(params), []
    for _ in range(4):
        updates, opt_state = tx.update({"w": jnp.ones(())}, opt_state, params)
        steps.append(-float(updates["w"]))
    expected = [float(schedule(s)) for s in (0, 0, 1, 1)]
    assert expected[0] > expected[2] * 1.1  # the schedule does decay over these steps
    np.testing.assert_allclose(steps, expected, rtol=1e-4)  # float32 bias corrections


def test_labelled_subset_is_balanced_and_fixed_by_seed():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    a = batching.labelled_subset(labels, 100, 10, seed=3)
    assert len(np.unique(a)) == 100 and np.all(np.bincount(labels[a], minlength=10) == 10)
    np.testing.assert_array_equal(a, batching.labelled_subset(labels, 100, 10, seed=3))
    assert not np.array_equal(a, batching.labelled_subset(labels, 100, 10, seed=4))
    with pytest.raises(data_lib.DataError, match="fewer"):
        batching.labelled_subset(labels[:20], 100, 10, seed=0)


def test_cluster_errors_known_answers():
    y = np.repeat(np.arange(10), 10)
    perfect = (y * 7 + 3) % 10  # a relabelling of a perfect clustering
    assert ev.cluster_errors(perfect, y, perfect, y, 10) == {"cluster_error_majority": 0.0,
                                                             "cluster_error_hungarian": 0.0}
    split = np.where(np.arange(100) % 2 == 0, y, y + 10)  # each class split over two of 20 clusters
    out = ev.cluster_errors(split, y, split, y, 20)
    assert out["cluster_error_majority"] == 0.0 and out["cluster_error_hungarian"] == pytest.approx(0.5)
    noisy = y.copy()
    noisy[:5] = 9  # five of class 0 put in class 9's cluster
    out = ev.cluster_errors(noisy, y, noisy, y, 10)
    assert out["cluster_error_majority"] == pytest.approx(0.05)


def _batch(bars, config):
    """16 images, and 8 labelled ones when the config has labels."""
    return batch_of(bars, 16, 8 if config.get("num_labels", 0) else 0)


@pytest.mark.parametrize("variant", ["mixture", "mixture_cond", "swiss_roll_cond", "supervised",
                                     "semi_supervised_plus", "clustering_plus"])
def test_one_step_keeps_shapes(bars, variant):
    """Shapes and finiteness of one step and of the API on every variant (the step's values:
    test_steps.py)."""
    config = tiny_variant(variant)
    model = registry.build_model(config)
    state = model.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(model.train_step)(state, _batch(bars, config))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
    chex.assert_tree_all_finite((new, metrics))
    assert int(new.step) == 1
    x = images.unit(bars.test_images[:5])
    labels = jnp.asarray(bars.test_labels[:5])
    chex.assert_shape(model.encode(new, x), (5, model.latent_dim))
    chex.assert_shape(model.reconstruct(new, x, labels), (5, 28, 28, 1))
    chex.assert_shape(model.sample(new, jax.random.PRNGKey(1), 7), (7, 28, 28, 1))


def test_supervised_decoder_needs_labels_and_uses_them(bars):
    config = tiny_variant("supervised")
    model = registry.build_model(config)
    state = model.init(jax.random.PRNGKey(0))
    z = jnp.zeros((2, config.latent_dim))
    with pytest.raises(ValueError, match="labels"):
        model.decode(state, z)
    labels = jnp.array([0, 1])
    code = jnp.concatenate([z, jax.nn.one_hot(labels, 10)], -1)  # style, then the class's one-hot
    want = images.unit_from_signed(model.decoder.apply({"params": state.nets["decoder"].params}, code))
    chex.assert_trees_all_close(model.decode(state, z, labels), want)
    assert not np.allclose(want[0], want[1], atol=1e-3)  # the label alone tells the two apart


@pytest.mark.parametrize("labelled_recon", [False, True])
def test_semi_supervised_sees_only_the_labelled_subset(bars, labelled_recon):
    """The step reads labelled_label, never batch['label']: changing the latter changes nothing.
    The labelled label reaches the encoder, and the decoder exactly when labelled_recon rebuilds
    the labelled images from it."""
    config = tiny_variant("semi_supervised_plus", labelled_recon=labelled_recon, labelled_shift=0, augment_rotation=0.0)
    model = registry.build_model(config)
    state = model.init(jax.random.PRNGKey(0))
    batch = _batch(bars, config)
    step = jax.jit(model.train_step)
    a, _ = step(state, batch)
    b, _ = step(state, {**batch, "label": (batch["label"] + 1) % 10})
    chex.assert_trees_all_equal(a, b)
    c, _ = step(state, {**batch, "labelled_label": (batch["labelled_label"] + 1) % 10})
    assert not np.array_equal(a.nets["encoder"].params["category"]["kernel"],
                              c.nets["encoder"].params["category"]["kernel"])
    decoder = lambda s: s.nets["decoder"].params["Dense_0"]["kernel"]
    assert np.array_equal(decoder(a), decoder(c)) != labelled_recon


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mixture_cond", "supervised", "semi_supervised_plus", "clustering_plus"])
def test_evaluate_end_to_end(tmp_path, bars, variant):
    from aaejax.eval.report import evaluate

    trainer.train(tiny_variant(variant), tmp_path, bars)
    out = evaluate(tmp_path, num_samples=200, use_classifier=False, knn_pixels=False, dataset=bars)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert_documented(out)  # with the categorical models' keys
    assert np.isfinite(saved["recon_mse"]) and np.isfinite(saved["knn1_acc"])
    if variant in ("semi_supervised_plus", "clustering_plus"):
        assert 0 <= saved["cluster_error_majority"] <= 1 and 0 <= saved["cluster_error_hungarian"] <= 1
        assert ("test_error" in saved) == (variant == "semi_supervised_plus")
    for name in ("samples", "reconstructions", "latent_scatter", "interpolations", "losses"):
        assert (tmp_path / "eval" / f"{name}.png").stat().st_size > 0
    if variant in ("supervised", "semi_supervised_plus", "clustering_plus"):
        assert (tmp_path / "eval" / "styles.png").stat().st_size > 0
    m = aaejax.load(tmp_path)
    assert m.sample(3).shape == (3, 28, 28, 1)
    if variant == "clustering_plus":  # all 16 clusters are scored; the bars' labels are 10 classes
        assert 1 <= saved["clusters_used"] <= 16


def test_semi_supervised_learns_the_labels(tmp_path, bars):
    """On the bars set (a label = a bar position), 20 labels and 300 steps classify most test bars
    (0.72 measured; 0.66 without labelled_recon; chance is 0.1)."""
    # A bar's class is its position, which a shift or a rotation changes: no augmentation here.
    config = tiny_variant("semi_supervised_plus", num_steps=300, log_every=100, sample_every=300,
                          checkpoint_every=300, labelled_shift=0, consistency_weight=0.0,
                          augment_rotation=0.0)
    state = trainer.train(config, tmp_path, bars)
    model = registry.build_model(config)
    pred = model.classify(state, images.unit(bars.test_images)).argmax(-1)
    assert float(jnp.mean(pred == jnp.asarray(bars.test_labels))) > 0.5  # chance: 0.1


def test_the_step_and_decode_refuse_labels_of_the_wrong_shape(bars):
    """chex guards the boundaries: labels must be one per image."""
    for variant, labelled in (("mixture_cond", 0), ("semi_supervised_plus", 8)):
        model = registry.build_model(tiny_variant(variant))
        state = model.init(jax.random.PRNGKey(0))
        batch = batch_of(bars, 16, labelled)
        key = "labelled_label" if labelled else "label"
        with pytest.raises(AssertionError, match="shape"):
            model.train_step(state, {**batch, key: batch[key][:-1]})
    model = registry.build_model(tiny_variant("supervised"))
    with pytest.raises(AssertionError, match="shape"):
        model.decode(model.init(jax.random.PRNGKey(0)), jnp.zeros((3, model.latent_dim)), jnp.array([0, 1]))
