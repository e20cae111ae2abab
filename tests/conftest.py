"""Shared fixtures: tiny configs and a small structured dataset, so the suite runs in minutes."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["AAEJAX_OFFLINE"] = "1"  # never probe the network from tests

import numpy as np
import pytest

from aaejax import data as data_lib
from experiments import aae as aae_exp
from experiments import bigan as bigan_exp


def tiny_aae_config(**overrides):
    c = aae_exp.get_config()
    c.hidden, c.disc_hidden, c.latent_dim = (64, 64), (32, 32), 4
    c.batch_size, c.num_steps = 16, 40
    c.log_every, c.sample_every, c.checkpoint_every = 10, 20, 20
    c.update(overrides)
    return c


def tiny_bigan_config(variant="official", **overrides):
    c = bigan_exp.get_config(variant)
    c.g_hidden = c.e_hidden = c.d_hidden = (64, 64)
    c.latent_dim, c.batch_size, c.num_steps = 8, 16, 40
    c.bn_eval_batches = 4
    c.log_every, c.sample_every, c.checkpoint_every = 10, 20, 20
    c.update(overrides)
    return c


def bars_dataset(n_train=512, n_test=128, seed=0) -> data_lib.Dataset:
    """28x28 images of one bright bar (row or column, position = label-dependent): learnable."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.int32)
        images = np.zeros((n, 28, 28, 1), np.uint8)
        for i, y in enumerate(labels):
            pos = 3 + 2 * y + rng.integers(0, 2)
            if rng.random() < 0.5:
                images[i, pos:pos + 2, 4:24, 0] = 255
            else:
                images[i, 4:24, pos:pos + 2, 0] = 255
        return images, labels

    return data_lib.Dataset("mnist", *make(n_train), *make(n_test), source="synthetic")


def pytest_collection_modifyitems(items):
    """The slow tests first: with `pytest -n N` (make test) they start at once instead of
    leaving one worker alone with the longest at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def bars():
    return bars_dataset()
