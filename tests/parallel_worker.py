"""Trains tiny runs in a fresh process whose device count comes from XLA_FLAGS (see
test_parallel.py) and saves their final parameters to an .npz for comparison across processes.

usage: python tests/parallel_worker.py OUT_DIR            (the device-count comparison runs)
       python tests/parallel_worker.py OUT_DIR multiprocess (one BiGAN run; with JAX_COORDINATOR_ADDRESS,
                                                             JAX_NUM_PROCESSES, JAX_PROCESS_ID: one process of several)
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["AAEJAX_OFFLINE"] = "1"
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import jax  # noqa: E402
import numpy as np  # noqa: E402

import aaejax  # noqa: E402
from aaejax.models import registry  # noqa: E402
from aaejax.run import parallel, trainer  # noqa: E402
from conftest import bars_dataset, tiny_aae_config, tiny_bigan_config  # noqa: E402


def flat(tree) -> dict:
    return {k: np.asarray(x) for k, x in flat_arrays(tree).items()}


def main(out: Path) -> None:
    bars = bars_dataset()
    n = jax.device_count()
    runs = {
        # data parallel: BatchNorm (BiGAN) statistics and gradients all-reduced over the devices
        "bigan_batch": tiny_bigan_config(num_steps=6, log_every=3, checkpoint_every=3, sample_every=6, shard="batch"),
        # 8 seeds, one model per device
        "aae_seeds": tiny_aae_config(num_steps=6, log_every=3, checkpoint_every=3, sample_every=6, num_seeds=8,
                                     shard="seeds"),
    }
    if n == 1:
        for c in runs.values():
            c.shard = "none"
    arrays = {}
    for name, config in runs.items():
        state = trainer.train(config, out / name, bars)
        leaf = jax.tree_util.tree_leaves(state.nets)[0]
        arrays[f"{name}/num_shards"] = np.array(len(leaf.sharding.device_set))
        arrays.update({f"{name}/{k}": v for k, v in flat(state.nets).items()})
    # Resume, sharded (1 device has nothing to shard): a copy of the BiGAN run loses its step-6
    # checkpoint (as if killed after step 3), and the same command resumes from step 3.
    if n > 1:
        shutil.copytree(out / "bigan_batch", out / "resumed")
        shutil.rmtree(out / "resumed" / "checkpoints" / "6")
        resumed = trainer.train(runs["bigan_batch"], out / "resumed", bars)
        arrays.update({f"resumed/{k}": v for k, v in flat(resumed.nets).items()})
    arrays["aae_seeds_stream_programs"] = np.array(chunk_programs(runs["aae_seeds"], bars))
    arrays["device_count"] = np.array(n)
    arrays["loaded_seed3"] = np.asarray(aaejax.load(out / "aae_seeds", seed_index=3).encode(np.zeros((1, 28, 28, 1))))
    np.savez(out / "params.npz", **arrays)


def chunk_programs(config, bars) -> int:
    """Programs compiled for four chunks of 1, 3, 2 and 4 units of 2 steps (the loop's shared
    program) at data order "stream", each given the order the one before returned: 1 when that
    order keeps the sharding of the first."""
    config = config.copy_and_resolve_references()
    config.data_order = "stream"
    model, layout = registry.build_model(config), parallel.Layout(config)
    images, labels = layout.put_replicated(bars.train_images), layout.put_replicated(bars.train_labels)
    keys = jax.random.split(jax.random.PRNGKey(0), config.num_seeds)
    state = jax.jit(jax.vmap(model.init), out_shardings=layout.state)(keys)
    chunk = trainer.make_train_chunk(model, config.batch_size, len(bars.train_images), list(range(config.num_seeds)),
                                     num_seeds=config.num_seeds, layout=layout, data_order="stream", unit=2,
                                     capacity=4)
    before, order = trainer.train_chunk._cache_size(), chunk.order_at(state)
    for length in (2, 6, 4, 8):
        state, _, _, order = chunk.carried(state, order, images, labels, length)
    return trainer.train_chunk._cache_size() - before


def multiprocess(out: Path) -> None:
    """The data-parallel BiGAN run, as one process of a multi-process job when the environment
    says so (the same call the command line makes first)."""
    from aaejax.run import parallel

    parallel.initialize_distributed()
    from jax.experimental import multihost_utils

    config = tiny_bigan_config(num_steps=6, log_every=3, checkpoint_every=3, sample_every=3, shard="batch")
    state = trainer.train(config, out / "run", bars_dataset())
    gathered = {k: multihost_utils.process_allgather(x, tiled=True) if jax.process_count() > 1 else x
                for k, x in flat_arrays(state.nets).items()}
    if jax.process_index() == 0:
        np.savez(out / "params.npz", process_count=np.array(jax.process_count()),
                 device_count=np.array(jax.device_count()), **{k: np.asarray(v) for k, v in gathered.items()})


def flat_arrays(tree) -> dict:
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


if __name__ == "__main__":
    if sys.argv[2:] == ["multiprocess"]:
        multiprocess(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]))
