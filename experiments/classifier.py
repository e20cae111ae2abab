"""Trains (or loads) the cached MNIST judge: `python -m experiments.classifier [--dataset=mnist]`."""

import logging
import time

from absl import app, flags

flags.DEFINE_string("dataset", "mnist", "mnist or fashion_mnist.")
flags.DEFINE_string("cache_dir", None, "Cache folder (default $AAEJAX_CACHE_DIR/classifier or ~/.cache/aaejax/classifier).")
flags.DEFINE_bool("retrain", False, "Train again even when cached.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.getLogger("aaejax").setLevel(logging.INFO)
    from aaejax.eval import classifier
    from aaejax.data import datasets

    t = time.perf_counter()
    ds = datasets.load(FLAGS.dataset)
    params = classifier.load_or_train(FLAGS.dataset, FLAGS.cache_dir, retrain=FLAGS.retrain, dataset=ds)
    acc = classifier.accuracy(params, ds.test_images, ds.test_labels)
    print(f"{FLAGS.dataset} classifier: test accuracy {acc:.4f} ({time.perf_counter() - t:.0f} s, "
          f"cache {classifier.cache_dir(FLAGS.cache_dir)})")


if __name__ == "__main__":
    app.run(main)
