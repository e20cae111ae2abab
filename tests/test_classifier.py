"""The evaluation classifier: shapes, learning on a separable set, the cache."""

import chex
import jax.numpy as jnp
import numpy as np

from aaejax.eval import classifier
from aaejax.data import images


def test_shapes_and_learning(bars):
    params, acc = classifier.train(bars.train_images, bars.train_labels, bars.test_images, bars.test_labels,
                                   epochs=4, batch_size=32)
    assert acc >= 0.9, acc
    x = images.unit(bars.test_images[:7])
    chex.assert_shape([classifier.logits(params, x), classifier.features(params, x)], [(7, 10), (7, 128)])
    p = classifier.probs(params, bars.test_images[:7])  # uint8 accepted too
    chex.assert_trees_all_close(p.sum(-1), jnp.ones(7), atol=1e-5)
    chex.assert_trees_all_close(classifier.probs(params, x), p, atol=1e-6)


def test_cache_round_trip_and_corrupt_cache_retrains(tmp_path, bars, monkeypatch):
    calls = []
    real_train = classifier.train

    def counting_train(*a, **k):
        calls.append(1)
        return real_train(*a, **{**k, "epochs": 1, "batch_size": 64})

    monkeypatch.setattr(classifier, "train", counting_train)
    p1 = classifier.load_or_train("mnist", tmp_path, dataset=bars)
    p2 = classifier.load_or_train("mnist", tmp_path, dataset=bars)
    assert len(calls) == 1
    chex.assert_trees_all_equal(p1, p2)
    (tmp_path / "mnist.msgpack").write_bytes(b"garbage")
    p3 = classifier.load_or_train("mnist", tmp_path, dataset=bars)
    assert len(calls) == 2
    chex.assert_trees_all_equal_shapes(p1, p3)
    assert not list(tmp_path.glob("*.tmp"))
