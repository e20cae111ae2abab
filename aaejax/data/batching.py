"""Which examples make each step's batch, computed on the device inside the compiled chunk.

Orders (config.data_order): "epochs" walks a permutation per epoch derived from (key, epoch)
alone -- so a resumed run sees the same order -- and drops the remainder; "stream" reads the
shuffled epochs as one stream, so batches straddle epoch ends (the official BiGAN code's data
provider); "random_subsets" draws each batch on its own, distinct examples within it
(`randperm(N)[:B]`, the PyTorch seed BiGAN); "with_replacement" draws each index on its own
(`np.random.randint`, the Keras seed AAE). Every draw is a function of (key, step). The semi-supervised AAE's labelled batches are drawn with replacement from a fixed,
class-balanced subset chosen by the seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np



def epoch_permutation(key, epoch, n: int):
    """The example order of `epoch`: derived from (key, epoch) alone, so a resumed run matches."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def batch_indices(perm, index, batch_size: int):
    """Indices of batch `index` of an epoch: perm [N] -> [batch_size], sliced on the device."""
    return jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)


def stream_indices(perm, next_perm, start, batch_size: int):
    """Indices [batch_size] of the batch at position `start` of an epoch of N examples read as a
    stream: positions past N continue into the next epoch's order `next_perm`. perm, next_perm [N]."""
    n = perm.shape[0]
    pos = start + jnp.arange(batch_size)
    return jnp.where(pos < n, perm[jnp.minimum(pos, n - 1)], next_perm[jnp.maximum(pos - n, 0)])


def independent_indices(key, step, n: int, batch_size: int, order: str):
    """The batch of `step` for the orders that draw each batch on its own: "random_subsets"
    (batch_size distinct examples, uniformly: the top batch_size of n uniform keys) or
    "with_replacement"."""
    key = jax.random.fold_in(key, step)
    if order == "random_subsets":
        return jax.lax.top_k(jax.random.uniform(key, (n,)), batch_size)[1]
    return jax.random.randint(key, (batch_size,), 0, n)


def labelled_subset(labels: np.ndarray, num_labels: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of `num_labels` examples, num_labels / num_classes of each class, chosen by `seed`
    (the semi-supervised AAE's labelled set). Sorted int32 [num_labels]."""
    from aaejax.data.datasets import DataError

    per_class = num_labels // num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} examples, fewer than the {per_class} labels asked for")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def subset_batch_indices(key, subset, batch_size: int):
    """A batch drawn with replacement from a subset of indices [L] -> [batch_size]."""
    return subset[jax.random.randint(key, (batch_size,), 0, subset.shape[0])]
