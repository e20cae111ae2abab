"""A small convolutional MNIST classifier, the judge of samples (classifier score, fd_lenet).

LeNet-5-sized (conv 5x5x16, pool, conv 5x5x32, pool, dense 128, dense 10) so it trains in about
a minute on two CPU cores. Data stays on the device and each batch is gathered there, but the
steps are separate jitted calls rather than one `lax.scan`: XLA:CPU runs convolutions inside a
loop about 8x slower than outside one (measured: 386 vs 46 ms a step). Trained once per dataset
and cached (`$AAEJAX_CACHE_DIR/classifier`, else ~/.cache/aaejax/classifier).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import serialization

from aaejax.data import images as images_lib
from aaejax.eval.metrics import batched
from aaejax.run.files import write_atomic

log = logging.getLogger(__name__)
ARCH_VERSION = 1


class LeNet(nn.Module):
    """x [B, 28, 28, 1] in [0, 1] -> (logits [B, 10], features [B, 128])."""

    @nn.compact
    def __call__(self, x):
        h = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        h = nn.max_pool(nn.relu(nn.Conv(32, (5, 5), padding="VALID")(h)), (2, 2), (2, 2))
        feats = nn.relu(nn.Dense(128)(h.reshape((h.shape[0], -1))))
        return nn.Dense(10)(feats), feats


_NET = LeNet()


@jax.jit
def _apply(params, x):
    return _NET.apply({"params": params}, images_lib.unit(x))


def _batched(params, images, which: int) -> jax.Array:
    return batched(lambda x: _apply(params, x)[which], images)


def logits(params, images) -> jax.Array:
    """images [N, 28, 28, 1] (float in [0, 1] or uint8) -> [N, 10]."""
    return _batched(params, images, 0)


def probs(params, images) -> jax.Array:
    return jax.nn.softmax(logits(params, images), axis=-1)


def features(params, images) -> jax.Array:
    """Penultimate-layer activations [N, 128]."""
    return _batched(params, images, 1)


def accuracy(params, images, labels) -> float:
    return float(jnp.mean(jnp.argmax(logits(params, images), -1) == jnp.asarray(labels)))


@jax.jit
def _init(key: jax.Array) -> dict:
    """Fresh parameters (jitted: op by op, the init takes a second to dispatch)."""
    return _NET.init(key, jnp.zeros((1, 28, 28, 1)))["params"]


def train(train_images, train_labels, test_images, test_labels, *, epochs: int = 3, batch_size: int = 128,
          lr: float = 2e-3, seed: int = 0):
    """Trains on uint8 [N, 28, 28, 1] images; returns (params, test accuracy)."""
    images, labels = jax.device_put(train_images), jax.device_put(jnp.asarray(train_labels, jnp.int32))
    n, steps = images.shape[0], images.shape[0] // batch_size
    key = jax.random.PRNGKey(seed)
    params = _init(key)
    opt_state = _optimizer(lr, epochs * steps).init(params)
    for e in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(key, e), n)
        for i in range(steps):
            params, opt_state, loss = _step(params, opt_state, images, labels, perm, i, batch_size=batch_size,
                                            lr=lr, total_steps=epochs * steps)
        log.info("classifier epoch %d: last loss %.4f", e + 1, float(loss))
    return params, accuracy(params, test_images, test_labels)


def _optimizer(lr: float, total_steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(lr, total_steps))


@functools.partial(jax.jit, static_argnames=("batch_size", "lr", "total_steps"))
def _step(params, opt_state, images, labels, perm, i, *, batch_size: int, lr: float, total_steps: int):
    """One Adam step on batch i of the permutation `perm` of images [N, 28, 28, 1] (uint8) and
    labels [N]: the data are arguments, not constants of the program (one compile per shape)."""
    idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)

    def loss_fn(p):
        out, _ = _NET.apply({"params": p}, images_lib.unit(images[idx]))
        return optax.softmax_cross_entropy_with_integer_labels(out, labels[idx]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = _optimizer(lr, total_steps).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    root = os.environ.get("AAEJAX_CACHE_DIR") or os.path.expanduser("~/.cache/aaejax")
    return Path(root) / "classifier"


def load_or_train(dataset_name: str = "mnist", cache: str | os.PathLike | None = None, retrain: bool = False,
                  dataset=None):
    """The cached classifier of `dataset_name`, trained (and cached) on first use."""
    folder = cache_dir(cache)
    weights, info_path = folder / f"{dataset_name}.msgpack", folder / f"{dataset_name}.json"
    template = _init(jax.random.PRNGKey(0))
    if not retrain and weights.exists() and info_path.exists():
        try:
            info = json.loads(info_path.read_text())
            if info.get("arch_version") == ARCH_VERSION:
                return serialization.from_bytes(template, weights.read_bytes())
            log.warning("classifier cache %s is of another architecture; retraining", weights)
        except Exception as e:  # noqa: BLE001 - a corrupt cache is retrained, not fatal
            log.warning("classifier cache %s is unreadable (%s); retraining", weights, e)
    if dataset is None:
        from aaejax.data import datasets

        dataset = datasets.load(dataset_name)
    # Said on stderr whatever the logging set-up: the caller otherwise waits a minute in silence.
    print(f"evaluate: training the sample judge (a LeNet on {dataset_name}; about a minute on 2 CPU cores, "
          f"once: it is cached in {folder})", file=sys.stderr, flush=True)
    t = time.perf_counter()
    params, acc = train(dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)
    seconds = time.perf_counter() - t
    log.info("classifier for %s: test accuracy %.4f after %.0f s", dataset_name, acc, seconds)
    # Whole files only: a killed run never leaves half a cache file.
    write_atomic(weights, serialization.to_bytes(params), "the classifier cache")
    write_atomic(info_path, json.dumps({"arch_version": ARCH_VERSION, "test_accuracy": acc, "train_seconds": seconds}),
                 "the classifier cache")
    return params
