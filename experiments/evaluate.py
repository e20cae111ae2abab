"""Report card of a run: `python -m experiments.evaluate --workdir=DIR`.

Writes DIR/eval.json, prints a short table, and draws figures into DIR/eval/: sample grid,
reconstruction grid, 2-D latent scatter coloured by label (PCA when the latent is wider), latent
interpolations, loss curves from metrics.jsonl.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports: a Ctrl-C from the first instant is one line, exit 130
    from aaejax.run.console import exit_on_signal

    exit_on_signal()

import sys
from pathlib import Path

from absl import app, flags

from aaejax.eval import report

flags.DEFINE_string("workdir", None, "Run directory to evaluate.", required=True)
flags.DEFINE_integer("num_samples", 10000, "Samples for the classifier metrics and fd_lenet.")
flags.DEFINE_bool("classifier", True, "Compute the classifier-based sample metrics.")
flags.DEFINE_bool("knn_pixels", True, "Also compute the 1-NN baseline on raw pixels (slowest metric).")
flags.DEFINE_string("classifier_cache", None, "Classifier cache folder (default ~/.cache/aaejax/classifier).")
flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step (default: the newest); 0 = the run's "
                     "initial state, recreated from its seed. eval.json is then eval_<step>.json.")
flags.DEFINE_bool("curve", False, "Only the curve the run logged as it trained (metrics.jsonl eval_*: the paper "
                  "variants' table metric every eval_every steps): a table, DIR/curve.json and DIR/eval/curve.png.")
flags.register_validator("num_samples", lambda n: n >= 1, "must be at least 1")
FLAGS = flags.FLAGS


def _curve_main(workdir: Path) -> None:
    rows = report.curve(workdir)
    if not rows:
        sys.exit(f"error: {workdir}/metrics.jsonl holds no eval_* entries (a paper_* variant logs them every "
                 f"eval_every steps)")
    keys = [k for k in rows[-1] if k.startswith("eval_")]
    print("epoch".rjust(7), *(k.removeprefix("eval_").rjust(26) for k in keys))
    for r in rows:
        print(f"{r['epoch']:7.1f}", *(f"{r[k]['mean']:.4f} ± {r[k]['std']:.4f}".rjust(26) if k in r else " " * 26
                                      for k in keys))
    report.write_curve(workdir, rows)
    print(f"wrote {workdir / 'curve.json'} and {workdir / 'eval' / 'curve.png'}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
    from aaejax.run.checkpoint import CheckpointError
    from aaejax.configs import ConfigError
    from aaejax.data.datasets import DataError
    from aaejax.api import TooLarge
    from aaejax.run.files import WriteError, failure_line

    try:
        if FLAGS.curve:
            return _curve_main(Path(FLAGS.workdir))
        out = report.evaluate(FLAGS.workdir, FLAGS.num_samples, FLAGS.classifier, FLAGS.knn_pixels,
                              FLAGS.classifier_cache, step=FLAGS.step)
    except WriteError as e:
        sys.exit(f"error: {failure_line(e.what or e.path.name, e.path, e.reason)} (the run itself is untouched)")
    except (CheckpointError, DataError, ConfigError, TooLarge, OSError) as e:
        sys.exit(f"error: {e}")
    if "mean" in out:
        for k, v in out["mean"].items():
            print(f"{k:>26}  {v:.4f} ± {out['std'][k]:.4f}  (over {out['num_seeds']} seeds)")
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k:>26}  {v:.4f}")
    name = "eval.json" if FLAGS.step is None else f"eval_{FLAGS.step}.json"
    print(f"evaluated step {out['step']} of {FLAGS.workdir}" + ("" if FLAGS.step is not None else " (its newest readable checkpoint)"))
    print(f"wrote {Path(FLAGS.workdir) / name}" + (f" and {Path(FLAGS.workdir) / 'eval'}/" if FLAGS.step is None else ""))


if __name__ == "__main__":
    app.run(main)
