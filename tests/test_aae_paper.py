"""The AAE paper's own method (aaejax/models/aae_paper.py): its step against a hand-written one, its
schedule, its protocols against known answers, and its curve through the real loop, resumed."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aaejax.eval import metrics as ev
from aaejax.data import images
from aaejax.models import losses, optim, registry
from aaejax.run import trainer
from aaejax.configs import ConfigError
from conftest import batch_of, bars_dataset
from experiments import aae as aae_exp


def tiny_paper(variant, **overrides):
    c = aae_exp.get_config(variant)
    c.hidden, c.disc_hidden = (16, 16), (8, 8)
    c.batch_size, c.num_steps, c.log_every = 8, 8, 2
    c.eval_every = c.sample_every = c.checkpoint_every = 4
    c.checkpoint_seconds = 0.0
    if c.num_labels > 0:
        c.num_labels = 20
    c.update(overrides)
    return c


def test_losses_known_answers():
    a, b = jnp.zeros((2, 2, 2, 1)), jnp.ones((2, 2, 2, 1))
    assert float(losses.half_sse(a, b)) == pytest.approx(2.0)  # 0.5 * 4 pixels, per example
    zero = jnp.zeros(5)
    assert float(losses.gan_discriminator_loss(zero, zero)) == pytest.approx(2 * np.log(2))


def test_epoch_drops_schedule():
    c = aae_exp.get_config("paper_semi_100")  # 600 steps an epoch
    sched = optim.make_schedule(c, 0.1)
    assert [float(sched(s)) for s in (0, 29999, 30000, 599999, 600000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001])
    assert optim.steps_per_epoch(aae_exp.get_config("paper_parzen")) == 500  # the 50 000 of the official split


def _naive_step(model, state, batch):
    """The three phases written out with plain gradients and SGD with momentum per (net, phase):
    v <- m v + g; p <- p - lr v (optax.sgd's trace), each phase on what the previous one left."""
    cfg = model.config
    p = {n: s.params for n, s in state.nets.items()}
    v = {(n, ph): s.opt_state[ph][0].trace for n, s in state.nets.items() for ph in s.opt_state}
    rates = {"recon": (cfg.lr_recon, cfg.momentum_recon), "adv": (cfg.lr_adv, cfg.momentum_adv),
             "supervised": (cfg.lr_supervised, cfg.momentum_supervised)}

    def sgd(net, phase, grads):
        lr, m = rates[phase]
        v[net, phase] = jax.tree_util.tree_map(lambda a, g: m * a + g, v[net, phase], grads)
        p[net] = jax.tree_util.tree_map(lambda w, a: w - lr * a, p[net], v[net, phase])

    k_noise, k_prior, k_noise_l = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    x = images.unit(batch["image"])
    x_in = x + cfg.input_noise * jax.random.normal(k_noise, x.shape)
    enc = lambda q, xx: model.encoder.apply({"params": q}, xx)
    code = lambda lo, z: jnp.concatenate([jax.nn.softmax(lo), z], -1)

    g_e, g_d = jax.grad(lambda e, d: 0.5 * jnp.mean(jnp.sum(
        (model.decoder.apply({"params": d}, code(*enc(e, x_in))) - x).reshape(len(x), -1) ** 2, -1)), (0, 1))(
        p["encoder"], p["decoder"])
    sgd("encoder", "recon", g_e)
    sgd("decoder", "recon", g_d)
    logits, z = enc(p["encoder"], x_in)
    k_z, k_cat = jax.random.split(k_prior)
    real = {"disc_z": model.prior.sample(k_z, z.shape),
            "disc_category": jax.nn.one_hot(jax.random.randint(k_cat, z.shape[:1], 0, 10), 10)}
    fake = {"disc_z": z, "disc_category": jax.nn.softmax(logits)}
    for name in ("disc_z", "disc_category"):
        module = getattr(model, name)
        sgd(name, "adv", jax.grad(lambda q: -jnp.mean(jax.nn.log_sigmoid(module.apply({"params": q}, real[name])))
                                  - jnp.mean(jax.nn.log_sigmoid(-module.apply({"params": q}, fake[name]))))(p[name]))

    def gen(e):
        lo, zz = enc(e, x_in)
        return sum(-jnp.mean(jax.nn.log_sigmoid(getattr(model, n).apply({"params": p[n]}, c)))
                   for n, c in (("disc_z", zz), ("disc_category", jax.nn.softmax(lo))))

    sgd("encoder", "adv", jax.grad(gen)(p["encoder"]))
    x_l = images.unit(batch["labelled_image"])
    x_l = x_l + cfg.input_noise * jax.random.normal(k_noise_l, x_l.shape)
    sgd("encoder", "supervised", jax.grad(lambda e: jnp.mean(-jnp.take_along_axis(
        jax.nn.log_softmax(enc(e, x_l)[0]), batch["labelled_label"][:, None], 1)))(p["encoder"]))
    return p


def test_the_step_is_the_three_phases_each_with_its_own_momentum(bars):
    model = registry.build_model(tiny_paper("paper_semi_100"))
    state = model.init(jax.random.PRNGKey(0))
    batch = batch_of(bars, 8, labelled=8)
    step = jax.jit(model.train_step)
    state, _ = step(state, batch)  # a second step: the momentum buffers are no longer zero
    expected = jax.jit(lambda s, b: _naive_step(model, s, b))(state, batch)  # one program, not ~240 eager ones
    new, metrics = step(state, batch)
    for name, params in expected.items():
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                               new.nets[name].params, params)
    assert set(new.nets["encoder"].opt_state) == {"recon", "adv", "supervised"}
    assert set(new.nets["decoder"].opt_state) == {"recon"}
    assert float(metrics["lr_recon"]) == pytest.approx(0.01) and float(metrics["lr_adv"]) == pytest.approx(0.1)


def test_parzen_matches_a_direct_float64_estimate():
    rng = np.random.default_rng(0)
    samples, val, test = (rng.random((n, 4, 4, 1), np.float32) for n in (300, 40, 60))
    sigmas = np.float32([0.1, 0.2, 0.4])
    s, v, t = (a.reshape(len(a), -1).astype(np.float64) for a in (samples, val, test))

    def lls(x, sig):  # log mean_j N(x; s_j, sig^2 I), by logsumexp
        e = -((x[:, None, :] - s[None]) ** 2).sum(-1) / (2 * sig**2)
        top = e.max(1, keepdims=True)
        return (top[:, 0] + np.log(np.exp(e - top).mean(1))) - 0.5 * s.shape[1] * np.log(2 * np.pi * sig**2)

    best = float(sigmas[np.argmax([lls(v, float(sig)).mean() for sig in sigmas])])
    ll = lls(t, best)
    expected = {"parzen_ll": ll.mean(), "parzen_ll_se": ll.std(ddof=1) / np.sqrt(len(ll)), "parzen_sigma": best}
    assert ev.parzen(samples, val, test, sigmas) == pytest.approx(expected, rel=1e-4)


def test_the_papers_cluster_labelling():
    # 3 clusters; cluster 0's most confident validation example is a 7, cluster 1's a 2, cluster
    # 2's a 5, although most of cluster 2's validation members are 3s.
    probs = jnp.array([[.9, .05, .05], [.2, .7, .1], [.1, .1, .8], [.1, .1, .6], [.1, .1, .7], [.1, .1, .99]])
    val_labels = jnp.array([7, 2, 3, 3, 3, 5])
    test_clusters, test_labels = jnp.array([0, 1, 2, 2]), jnp.array([7, 2, 5, 3])
    out = {k: float(v) for k, v in ev.cluster_errors_jax(probs, val_labels, test_clusters, test_labels).items()}
    assert out == {"cluster_error_paper": 0.25, "cluster_error_majority": 0.25, "clusters_used": 3.0}
    test_labels = jnp.array([7, 2, 5, 5])
    out = ev.cluster_errors_jax(probs, val_labels, test_clusters, test_labels)
    assert (float(out["cluster_error_paper"]), float(out["cluster_error_majority"])) == (0.0, 0.5)


def test_labelled_streams_all_labels_and_balanced(bars):
    model = registry.build_model(tiny_paper("paper_semi_all"))
    idx, size = model.labelled_streams(bars.train_labels, 0)["labelled"]
    np.testing.assert_array_equal(idx, np.arange(len(bars.train_labels)))
    model = registry.build_model(tiny_paper("paper_semi_100"))
    idx, _ = model.labelled_streams(bars.train_labels, 3)["labelled"]
    assert np.bincount(bars.train_labels[idx], minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("field,value,says", [
    ("momentum_adv", 1.0, "momentum_adv must be >= 0 and < 1, got 1.0"),
    ("num_labels", -2, "num_labels must be >= -1, got -2"),
    ("num_labels", 15, "num_labels must be -1 (all), 0 or a multiple"),
    ("num_categories", 1, "num_categories must be 0 (no categorical code) or >= 2"),
    ("data_split", "all", "set data_split='official'"),  # paper_parzen picks sigma on held-out images
    ("lr_drop_factor", 0.0, "lr_drop_factor must be > 0 and <= 1, got 0.0"),
    ("init_std", 0.0, "init_std must be > 0"),
])
def test_bad_settings_are_refused(field, value, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        registry.build_model(tiny_paper("paper_parzen", **{field: value}))


@pytest.mark.parametrize("variant,key", [("paper_semi_100", "eval_test_error"),
                                         ("paper_cluster_16", "eval_cluster_error_paper"),
                                         ("paper_parzen", "eval_parzen_ll")])
def test_the_curve_is_logged_and_a_resumed_run_logs_the_same(tmp_path, variant, key):
    ds = bars_dataset(n_train=240, n_test=40)
    config = tiny_paper(variant)
    trainer.train(config, tmp_path / "a", dataset=ds)
    config.num_steps = 4
    trainer.train(config, tmp_path / "b", dataset=ds)
    config.num_steps = 8
    trainer.train(config, tmp_path / "b", dataset=ds)  # resumed from step 4
    curves = [[(r["step"], r[key]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if key in r] for d in ("a", "b")]
    assert [s for s, _ in curves[0]] == [4, 8]
    assert curves[0] == curves[1]
    assert all(np.isfinite(v) for _, v in curves[0])
    from aaejax.eval.report import curve

    rows = curve(tmp_path / "a")  # what `evaluate --curve` prints (epochs of MNIST's size, as the config says)
    assert [r["step"] for r in rows] == [4, 8] and [r[key]["mean"] for r in rows] == [v for _, v in curves[0]]
    assert rows[0]["epoch"] == pytest.approx(4 / optim.steps_per_epoch(config))
