"""Fingerprints of every named config: `python -m tools.fingerprint [--steps=200]`.

Trains each variant of each experiment for --steps steps on MNIST (through the real trainer, in a
temporary work dir) and prints one JSON line per config: the SHA-256 of its final parameters and
BatchNorm statistics (every leaf's bytes, in tree order) and their sum. A change meant to keep
behaviour (a refactor) must leave every line as it was on the same machine and JAX version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile

from absl import app, flags

flags.DEFINE_integer("steps", 200, "Training steps per config.")
flags.DEFINE_list("only", [], "Configs to run (e.g. aae:seed,bigan:official); default all.")
FLAGS = flags.FLAGS


def fingerprint(state) -> dict:
    import jax
    import numpy as np

    digest = hashlib.sha256()
    total = 0.0
    for name in sorted(state.nets):
        net = state.nets[name]
        for leaf in jax.tree_util.tree_leaves((net.params, net.batch_stats)):
            leaf = np.asarray(leaf)
            digest.update(leaf.tobytes())
            total += float(np.sum(leaf, dtype=np.float64))
    return {"params_sha256": digest.hexdigest()[:16], "params_sum": total}


def main(argv):
    del argv
    logging.getLogger("aaejax").setLevel(logging.WARNING)
    from aaejax.data import datasets as data_lib
    from aaejax.run import trainer
    from experiments import aae, bigan

    dataset = data_lib.load("mnist")
    for module, model in ((aae, "aae"), (bigan, "bigan")):
        for variant in module.VARIANTS:
            name = f"{model}:{variant}"
            if FLAGS.only and name not in FLAGS.only:
                continue
            config = module.get_config(variant)
            config.num_steps = config.log_every = FLAGS.steps
            config.sample_every = config.checkpoint_every = 10 * FLAGS.steps
            config.keep_steps = ()
            with tempfile.TemporaryDirectory() as workdir:
                state = trainer.train(config, workdir, dataset)
            print(json.dumps({"config": name, "steps": FLAGS.steps, **fingerprint(state)}), flush=True)


if __name__ == "__main__":
    app.run(main)
