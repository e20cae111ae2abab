"""A run's report card: evaluate() writes eval.json and the figures in DIR/eval/ (sample and
reconstruction grids, the latent scatter, interpolations, loss curves); curve() and write_curve()
read the curve a paper variant logs as it trains. `python -m experiments.evaluate` is their
command line."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path


def curve(workdir: str | Path) -> list[dict]:
    """The run's logged evaluations: one row per step that has eval_* keys, with the epoch and,
    per key, the mean and sample standard deviation over the run's seeds (and their values)."""
    import numpy as np

    from aaejax.models import optim
    from aaejax.run import rundir, writers

    workdir = Path(workdir)
    per_epoch = optim.steps_per_epoch(rundir.read_config(workdir))
    rows = []
    for r in writers.read_metrics(workdir):
        keys = [k for k in r if k.startswith("eval_")]
        if not keys:
            continue
        row = {"step": r["step"], "epoch": r["step"] / per_epoch}
        for k in keys:
            values = r.get("per_seed", {}).get(k, [r[k]])
            row[k] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                      "seeds": [float(v) for v in values]}
        rows.append(row)
    return rows


def _save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, written whole (files.write_atomic)."""
    import io

    from aaejax.run import files

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    files.write_atomic(path, out.getvalue(), "a figure")


def write_curve(workdir: Path, rows: list[dict]) -> None:
    """curve.json and eval/curve.png (one line per seed, one panel per eval_* key) of `rows` (curve())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aaejax.run import files

    keys = [k for k in rows[-1] if k.startswith("eval_")]
    files.write_atomic(workdir / "curve.json", json.dumps(rows, indent=2))
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.5 * len(keys)), sharex=True, squeeze=False)
    for ax, k in zip(axes[:, 0], keys):
        xs = [r["epoch"] for r in rows if k in r]
        for i in range(len(rows[-1][k]["seeds"])):
            ax.plot(xs, [r[k]["seeds"][i] for r in rows if k in r], marker=".", label=f"seed {i}")
        ax.set_ylabel(k.removeprefix("eval_"))
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("epoch")
    (workdir / "eval").mkdir(exist_ok=True)
    fig.tight_layout()
    _save_figure(fig, workdir / "eval" / "curve.png")
    plt.close(fig)


def evaluate(workdir: str | Path, num_samples: int = 10000, use_classifier: bool = True,
             knn_pixels: bool = True, classifier_cache: str | None = None, dataset=None,
             step: int | None = None) -> dict:
    """Evaluates the run in `workdir` and writes eval.json. A multi-seed run is evaluated model by
    model: eval.json then holds each one's report under "seeds" and the mean and standard
    deviation over seeds of every number under "mean" / "std"; figures are of model 0."""
    import numpy as np

    from aaejax.data import datasets as data_lib
    from aaejax.run import files, rundir

    workdir = Path(workdir)
    config = rundir.read_config(workdir)
    num_seeds = int(config.num_seeds)
    dataset = dataset or data_lib.load(config.dataset, config.data_dir or None, config.data_mirror or None)
    # The baselines (random encoder, pixels) do not depend on the trained model: model 0 only.
    # The other models are read at model 0's step: a run still writing may save a newer checkpoint.
    reports = []
    for i in range(num_seeds):
        reports.append(_evaluate_one(workdir, i, num_samples, use_classifier, i == 0, knn_pixels and i == 0,
                                     classifier_cache, dataset, step if i == 0 else reports[0]["step"]))
    if num_seeds == 1:
        out = reports[0]
    else:
        numeric = [k for k, v in reports[0].items() if isinstance(v, (int, float)) and k not in ("step", "seed_index")
                   and all(k in r for r in reports)]  # the baselines live in seeds[0] only
        out = {k: reports[0][k] for k in ("model", "variant", "step", "dataset")}
        out["num_seeds"] = num_seeds
        out["mean"] = {k: float(np.mean([r[k] for r in reports])) for k in numeric}
        out["std"] = {k: float(np.std([r[k] for r in reports], ddof=1)) for k in numeric}  # sample std
        out["seeds"] = reports
    files.write_atomic(workdir / ("eval.json" if step is None else f"eval_{step}.json"), json.dumps(out, indent=2))
    return out


def _fresh_state(key, train_images, *, model):
    """An untrained model's state with its BatchNorm statistics (the random-encoder baseline)."""
    return model.prepare_eval(model.init(key), train_images, key)


def _evaluate_one(workdir: Path, seed_index: int, num_samples: int, use_classifier: bool, random_baseline: bool,
                  knn_pixels: bool, classifier_cache, dataset, step: int | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import aaejax
    from aaejax.eval import metrics as ev
    from aaejax.data import images
    from aaejax.models import protocol

    m = aaejax.load(workdir, seed_index, step=step, dataset=dataset)  # with its population statistics
    ds = dataset
    train_u8 = jnp.asarray(ds.train_images)  # on the device once: the baselines read it too
    test, train = images.unit(jnp.asarray(ds.test_images)), images.unit(train_u8)
    out = {"model": m.config.model, "variant": m.config.get("variant", ""), "step": m.step,
           "dataset": m.config.dataset}
    timings = {}

    t = time.perf_counter()
    test_labels = jnp.asarray(ds.test_labels)
    out["recon_mse"] = ev.recon_mse(m.reconstruct, test, test_labels)
    out["recon_mse_mean_image"] = float(jnp.mean(jnp.square(test - train.mean(0))))
    timings["recon"] = time.perf_counter() - t

    t = time.perf_counter()
    samples = m.sample(num_samples, seed=0)
    if use_classifier:
        from aaejax.eval import classifier

        clf = classifier.load_or_train(m.config.dataset, classifier_cache, dataset=ds)
        out["classifier_test_acc"] = classifier.accuracy(clf, ds.test_images, ds.test_labels)
        probs = classifier.probs(clf, samples)
        out["classifier_score"] = ev.classifier_score(probs)
        out["class_fractions"] = ev.class_fractions(probs)
        out["min_class_fraction"] = min(out["class_fractions"])
        out["mean_top_prob"] = float(jnp.mean(jnp.max(probs, axis=1)))
        out["fd_lenet"] = ev.frechet_distance(classifier.features(clf, samples), classifier.features(clf, test))
        timings["samples"] = time.perf_counter() - t

    t = time.perf_counter()
    # Parzen window on 10 000 samples; sigma chosen on the last 1 000 training images (held out
    # from the Parzen fit, not from the model's training).
    out.update(ev.parzen(samples, train[-1000:], test))
    timings["parzen"] = time.perf_counter() - t

    t = time.perf_counter()
    out.update(m.model.report(m.state, ds))  # the model's own entries (protocol.Model.report)
    timings["model_report"] = time.perf_counter() - t

    t = time.perf_counter()
    enc = functools.partial(protocol.encode, model=m.model)
    z_train, z_test = ev.batched(lambda x: enc(m.state, x), train), ev.batched(lambda x: enc(m.state, x), test)
    out["knn1_acc"] = ev.knn1_accuracy(z_train, ds.train_labels, z_test, ds.test_labels)
    out["linear_probe_acc"] = ev.linear_probe_accuracy(z_train, ds.train_labels, z_test, ds.test_labels)
    key = jax.random.PRNGKey(12345)
    if random_baseline:
        # Jitted: op by op, a fresh init and its BatchNorm statistics take seconds to dispatch.
        random_state = jax.jit(_fresh_state, static_argnames="model")(key, train_u8, model=m.model)
        r_train = ev.batched(lambda x: enc(random_state, x), train)
        r_test = ev.batched(lambda x: enc(random_state, x), test)
        out["knn1_acc_random_encoder"] = ev.knn1_accuracy(r_train, ds.train_labels, r_test, ds.test_labels)
    if knn_pixels:
        out["knn1_acc_pixels"] = ev.knn1_accuracy(train, ds.train_labels, test, ds.test_labels)
    timings["features"] = time.perf_counter() - t
    out["seconds"] = timings
    out["seed_index"] = seed_index
    if seed_index == 0 and step is None:
        from aaejax.run.files import WriteError

        try:
            _figures(workdir, m, test, np.asarray(ds.test_labels), z_test, samples)
        except OSError as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(e.strerror or str(e), workdir / "eval", "the evaluation figures") from e
    return out


def _figures(workdir: Path, m, test, test_labels, z_test, samples) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from aaejax.run import writers

    fig_dir = workdir / "eval"
    fig_dir.mkdir(exist_ok=True)
    writers.save_png(fig_dir / "samples.png", writers.image_grid(np.asarray(samples[:100]), ncols=10))
    recon = np.asarray(m.reconstruct(test[:50], test_labels[:50]))
    writers.save_png(fig_dir / "reconstructions.png",
                     writers.image_grid(writers.side_by_side(np.asarray(test[:50]), recon, ncols=10), ncols=10))

    z = np.asarray(z_test, np.float64)
    if z.shape[1] > 2:  # PCA to 2-D
        zc = z - z.mean(0)
        _, _, vt = np.linalg.svd(zc, full_matrices=False)
        z2, title = zc @ vt[:2].T, "latent (PCA)"
    else:
        z2, title = z, "latent"
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(z2[:, 0], z2[:, 1], c=test_labels, cmap="tab10", s=2)
    fig.colorbar(sc, ax=ax, ticks=range(10))
    ax.set_title(f"{m.config.model}: {title} of the test set")
    _save_figure(fig, fig_dir / "latent_scatter.png")
    plt.close(fig)

    # Interpolations between pairs of test codes: 8 rows of 10 steps.
    pairs = np.asarray(z_test)[:16].reshape(8, 2, -1)
    alphas = np.linspace(0, 1, 10)[None, :, None]
    codes = pairs[:, :1] * (1 - alphas) + pairs[:, 1:] * alphas
    pair_labels = np.repeat(test_labels[:16:2], 10)  # (supervised AAE: rendered as the first's class)
    imgs = np.asarray(m.decode(jnp.asarray(codes.reshape(80, -1), jnp.float32),
                               pair_labels if m.model.needs_labels else None))
    writers.save_png(fig_dir / "interpolations.png", writers.image_grid(imgs, ncols=10))

    # Style x class: rows share a style, columns are the classes / categories (the supervised and
    # categorical AAEs, the paper's Figures 6, 8 and 9).
    grid = m.model.style_grid(m.state, jax.random.PRNGKey(7), 10)
    if grid is not None:
        writers.save_png(fig_dir / "styles.png", writers.image_grid(np.asarray(grid), ncols=len(grid) // 10))

    records = writers.read_metrics(workdir)
    if records:
        keys = [k for k in records[0] if k.endswith("loss") or k in ("recon_mse", "d_accuracy")]
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2 * len(keys)), sharex=True)
        for ax, k in zip(np.atleast_1d(axes), keys):
            ax.plot([r["step"] for r in records], [r.get(k, np.nan) for r in records])
            ax.set_ylabel(k)
        np.atleast_1d(axes)[-1].set_xlabel("step")
        fig.tight_layout()
        _save_figure(fig, fig_dir / "losses.png")
        plt.close(fig)
