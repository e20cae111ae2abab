"""Chaos check of resume: `python -m tools.chaos [--kills=20] [--steps=2000] [--seed=0]`.

Trains the AAE seed config once without interruption, then again in another work dir while
killing it with SIGKILL --kills times (each life resumed by the same command). The lives cycle
through: killed mid-chunk at a seeded random moment; killed mid-save (as soon as orbax's
temporary checkpoint folder appears); killed mid-chunk, then 8 bytes of a random file of the
newest checkpoint overwritten (the next life must fall back to an older one, saying so in one
line); killed during start-up. Checks that the final parameters are bit-identical to the
uninterrupted run's and every logged step appears once. Prints one JSON line per life and a
summary line. Not a CI test: it takes minutes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_integer("kills", 20, "SIGKILLs to send.")
flags.DEFINE_integer("steps", 2000, "Training steps of the AAE seed config.")
flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
flags.DEFINE_string("workdir", None, "Folder for the two runs (default: a temporary folder, removed).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's INFO lines while loading the two runs
    import numpy as np

    root = Path(FLAGS.workdir or tempfile.mkdtemp(prefix="aaejax_chaos_"))
    root.mkdir(parents=True, exist_ok=True)
    args = [f"--steps={FLAGS.steps}", "--config.log_every=50", "--config.checkpoint_every=100", "--config.checkpoint_seconds=0",
            "--config.sample_every=1000000"]
    command = lambda workdir: [sys.executable, "-m", "experiments.aae", f"--workdir={workdir}"] + args
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    startup_s, full_s = _time_uninterrupted(command(root / "full"), env, root / "full" / "metrics.jsonl")
    # Every fourth life ends during start-up (imports, data, restore); the others once the life has
    # logged its first step, at a moment up to a run's training time divided by the number of kills
    # (mid-chunk, mid-save): the kills spread over the whole run, which is unfinished at the last one.
    train_window = (full_s - startup_s) / FLAGS.kills
    rng, killed, finished_early = random.Random(FLAGS.seed), root / "killed", 0
    metrics = killed / "metrics.jsonl"
    flipped = 0
    for i in range(FLAGS.kills):
        logged = metrics.read_text().count("\n") if metrics.exists() else 0
        t0 = time.perf_counter()
        log = root / f"life_{i + 1}.log"
        with log.open("w") as f:
            proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=f)
        kind = ("mid_chunk", "mid_save", "flip", "startup")[i % 4]
        if kind == "startup":
            time.sleep(rng.uniform(0.0, startup_s))
        else:
            while proc.poll() is None and (metrics.read_text().count("\n") if metrics.exists() else 0) <= logged:
                time.sleep(0.02)
            if kind == "mid_save":
                while proc.poll() is None and not _saving(killed / "checkpoints"):
                    time.sleep(0.002)
            else:
                time.sleep(rng.uniform(0.0, train_window))
        wait = time.perf_counter() - t0
        finished = proc.poll() is not None
        finished_early += finished
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()) \
            if (killed / "checkpoints").exists() else []
        where = _flip(killed / "checkpoints" / str(steps[-1]), rng) if kind == "flip" and len(steps) > 1 else None
        flipped += where is not None
        print(json.dumps({"life": i + 1, "kind": kind, "after_s": round(wait, 2), "already_finished": finished,
                          "checkpoints": steps[-3:], "flipped": f"{steps[-1]}/{where}" if where else None}), flush=True)
    done = subprocess.run(command(killed), env=env, capture_output=True, text=True)
    # Each fallback from a checkpoint whose bytes changed, as the lives said it (one line each).
    stderr = "".join(p.read_text() for p in sorted(root.glob("life_*.log"))) + done.stderr
    fallbacks = stderr.count("trying an older one")
    if done.returncode:
        sys.exit(f"the final resume failed: {done.stderr.strip().splitlines()[-1]}")

    import aaejax

    a, b = aaejax.load(root / "full").state, aaejax.load(killed).state
    import jax

    same = all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    in_order = logged == list(range(50, FLAGS.steps + 1, 50))
    print(json.dumps({"kills": FLAGS.kills, "steps": FLAGS.steps, "uninterrupted_s": round(full_s, 1),
                      "startup_s": round(startup_s, 1), "killed_while_running": FLAGS.kills - finished_early,
                      "checkpoints_flipped": flipped, "flips_not_trusted": fallbacks,
                      "bit_identical": same, "every_step_logged_once": in_order}), flush=True)
    if not FLAGS.workdir:
        shutil.rmtree(root)
    if not (same and in_order and not finished_early):
        sys.exit(1)


def _saving(checkpoints: Path) -> bool:
    """Whether orbax is writing a checkpoint (its temporary folder exists)."""
    try:
        return any("tmp" in p.name for p in checkpoints.iterdir())
    except OSError:
        return False


def _flip(step_dir: Path, rng: random.Random) -> str | None:
    """Overwrites 8 bytes at a random offset of a random file of `step_dir` (a bad sector, a bad
    copy); returns the file's path within the step, or None when the step has no file."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size >= 8)
    if not files:
        return None
    target = rng.choice(files)
    with target.open("r+b") as f:
        f.seek(rng.randrange(target.stat().st_size - 7))
        f.write(b"\xff" * 8)
    return str(target.relative_to(step_dir))


def _time_uninterrupted(command, env, metrics: Path) -> tuple[float, float]:
    """Runs `command` to the end; returns (seconds to its first logged step, seconds in all)."""
    t0 = time.perf_counter()
    log = metrics.parent.parent / "uninterrupted.log"  # a file, not a pipe nobody reads while it runs
    with log.open("w") as f:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=f)
    startup = None
    while proc.poll() is None:
        if startup is None and metrics.exists() and metrics.stat().st_size:
            startup = time.perf_counter() - t0
        time.sleep(0.05)
    if proc.returncode:
        sys.exit(f"the uninterrupted run failed: {log.read_text().strip()[-500:]}")
    full = time.perf_counter() - t0
    return (full if startup is None else startup), full


if __name__ == "__main__":
    app.run(main)
