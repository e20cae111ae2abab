"""Which examples make each batch: epoch permutations, the official stream, the labelled stream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aaejax.data import batching
from aaejax.run import trainer
from aaejax.models.aae import AAE
from conftest import tiny_aae_config


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    key = jax.random.PRNGKey(3)
    p0, p0b, p1 = (batching.epoch_permutation(key, e, 100) for e in (0, 0, 1))
    np.testing.assert_array_equal(p0, p0b)
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(np.sort(np.asarray(p0)), np.arange(100))
    idx = jax.jit(batching.batch_indices, static_argnums=2)(p0, jnp.int32(2), 10)
    np.testing.assert_array_equal(idx, p0[20:30])


def test_stream_batch_straddles_the_epoch_end():
    perm, nxt = jnp.arange(10) * 10, jnp.arange(10) * 100
    np.testing.assert_array_equal(batching.stream_indices(perm, nxt, 4, 4), [40, 50, 60, 70])
    np.testing.assert_array_equal(batching.stream_indices(perm, nxt, 8, 4), [80, 90, 0, 100])


def test_stream_order_reads_every_epoch_once_in_ceil_n_over_b_batches():
    """data_order="stream" (the official BiGAN code's provider): 10 examples, batch 4: the batches
    of steps 0..4 cover epoch 0's order then epoch 1's, continuing across the boundary."""
    seen = []

    class Recorder(AAE):
        def train_step(self, state, batch):
            return state.replace(step=state.step + 1), {"label": batch["label"]}

    model = Recorder(tiny_aae_config(batch_size=4))
    chunk = trainer.make_train_chunk(model, 4, 10, data_seed=5, data_order="stream")
    labels = jnp.arange(10, dtype=jnp.int32)
    state = jax.jit(model.init)(jax.random.PRNGKey(0))
    for _ in range(2):  # the second call resumes mid-epoch from the state's step
        state, metrics, _ = chunk(state, jnp.zeros((10, 28, 28, 1), jnp.uint8), labels, length=3)
        seen += np.asarray(metrics["label"]).ravel().tolist()
    key = jax.random.PRNGKey(5)
    want = np.concatenate([batching.epoch_permutation(key, e, 10) for e in range(3)])[:24]
    np.testing.assert_array_equal(seen, want)


def test_labelled_stream_draws_from_the_subset_only():
    subset = jnp.asarray([3, 7, 11])
    idx = np.asarray(batching.subset_batch_indices(jax.random.PRNGKey(0), subset, 64))
    assert set(idx.tolist()) == {3, 7, 11}


def test_independent_orders_draw_each_batch_from_key_and_step():
    key = jax.random.PRNGKey(1)
    draw = jax.jit(batching.independent_indices, static_argnums=(2, 3, 4))
    a = np.asarray(draw(key, 3, 100, 64, "random_subsets"))
    assert len(set(a.tolist())) == 64 and a.min() >= 0 and a.max() < 100  # randperm(100)[:64]
    np.testing.assert_array_equal(a, draw(key, 3, 100, 64, "random_subsets"))
    assert not np.array_equal(a, draw(key, 4, 100, 64, "random_subsets"))
    b = np.asarray(draw(key, 3, 10, 64, "with_replacement"))
    assert b.min() >= 0 and b.max() < 10 and len(set(b.tolist())) <= 10  # np.random.randint(0, 10, 64)
    # Over many draws every example is equally likely to be in a random subset.
    counts = np.bincount(np.concatenate([np.asarray(draw(key, s, 20, 5, "random_subsets")) for s in range(400)]),
                         minlength=20)
    assert counts.min() > 60 and counts.max() < 140  # 100 expected each


class _LabelRecorder(AAE):
    """A 'model' whose step only counts and reports its batch's labels (which name the examples)."""

    def train_step(self, state, batch):
        return state.replace(step=state.step + 1), {"label": batch["label"]}


@pytest.mark.parametrize("order", ["epochs", "stream", "random_subsets", "with_replacement"])
def test_carried_order_reads_the_batches_a_fresh_chunk_reads(order):
    """The loop's chunks carry the data order from one to the next (no permutation at a chunk's
    start); four chunks of 3 steps that do so read the same batches as chunks that derive the
    order from the state's step, and as one chunk of 12 (10 examples, batch 4: 2 or 3 steps an
    epoch, so the chunks start mid-epoch and on an epoch's start); so do the loop's shared
    program's chunks of 1, 3 and 2 units of 2 steps."""
    model = _LabelRecorder(tiny_aae_config(batch_size=4))
    chunk = trainer.make_train_chunk(model, 4, 10, data_seed=5, data_order=order)
    shared = trainer.make_train_chunk(model, 4, 10, data_seed=5, data_order=order, unit=2, capacity=4)
    images, labels = jnp.zeros((10, 28, 28, 1), jnp.uint8), jnp.arange(10, dtype=jnp.int32)

    def read(carry: bool, lengths, chunk=chunk) -> list:
        state, seen = jax.jit(model.init)(jax.random.PRNGKey(0)), []
        data_order = chunk.order_at(state)
        for length in lengths:
            if carry:
                state, metrics, _, data_order = chunk.carried(state, data_order, images, labels, length)
            else:
                state, metrics, _ = chunk(state, images, labels, length=length)
            seen += np.asarray(metrics["label"])[:length].ravel().tolist()
        return seen

    whole = read(False, [12])
    assert len(whole) == 48
    if order == "epochs":  # each epoch's 2 batches are 8 distinct examples, and epochs differ
        epochs = [whole[i:i + 8] for i in range(0, 48, 8)]
        assert all(len(set(e)) == 8 for e in epochs) and epochs[0] != epochs[1]
    assert read(True, [3] * 4) == read(False, [3] * 4) == read(True, [2, 6, 4], shared) == whole
