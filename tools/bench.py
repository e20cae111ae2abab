"""`make bench`: training throughput of aaejax's real training path against PyTorch eager.

Prints one JSON line per measurement:
- {"bench": "train", model, batch_size, impl: "aaejax"|"torch", steps_per_sec, images_per_sec,
   sec_per_epoch, device, ...} and the aaejax/torch ratio; aaejax's row also gives XLA's GFLOP per
   step, the GFLOP/s that makes, and the device's rate on a plain matmul of the widest layer
   (`step_cost`);
- {"bench": "first_step", cache: "cold"|"warm", seconds}: a fresh process from start to the
  first trained chunk, with an empty and then a filled persistent compilation cache;
- with --loop, {"bench": "loop", model, variant, ...}: the CPU stand-in for a fast device (every
  width 8, batch 8, so a step costs microseconds) through the real loop (`trainer.train`) at the
  variant's own cadences and length, against the same run as one chunk with no intermediate
  grids or checkpoints: a first (compiling) run of each, then --loop_rounds more, alternated, and
  the ratio of their medians; and each default run's first ETA against the time it then took;
- with --chunk_lengths=L1,L2,..., {"bench": "chunks", model, variant, length, steps, seconds}: the
  loop stand-in's whole run (its variant's num_steps, at its data order) as chunks of each fixed
  length, each chunk's metrics fetched, no logging: what a chunk costs besides its steps.

The aaejax side runs `trainer.make_train_chunk(...).carried` at the variant's data order -- the
very call `make train` uses -- on a device-resident uint8 dataset of MNIST's size. Contents do not change the speed, so random bytes
stand in when MNIST is not at hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_list("models", ["aae", "bigan"], "Models to measure.")
flags.DEFINE_string("variant", "seed", "The variant of each model measured by the throughput and seed benches "
                    "(e.g. paper_semi_100 with --models=aae).")
flags.DEFINE_list("batch_sizes", ["128", "32"], "Batch sizes.")
flags.DEFINE_float("seconds", 10.0, "Approximate measuring time per configuration and implementation.")
flags.DEFINE_bool("torch", True, "Also measure the PyTorch eager reference (needs the bench extra).")
flags.DEFINE_bool("first_step", True, "Measure cold/warm-cache time to the first trained step.")
flags.DEFINE_list("seed_counts", [], "Also measure num_seeds vmapped models at these counts (e.g. 1,4,16,64), "
                  "at the first batch size; model-steps/s and the speed-up over one model.")
flags.DEFINE_bool("stop", False, "Only the stop latency: SIGINT to named configs' real runs, seconds to exit.")
flags.DEFINE_bool("loop", False, "Only the loop stand-in (aae:seed, bigan:official at width 8, batch 8).")
flags.DEFINE_integer("loop_rounds", 3, "With --loop: runs of each of the two after a first (compiling) run of each.")
flags.DEFINE_list("chunk_lengths", [], "Only the stand-in's run in chunks of each of these lengths (see above).")
flags.DEFINE_string("_first_step_child", None, "Internal: run one first step for this model and exit.")
FLAGS = flags.FLAGS

N_TRAIN = 60000


def _config(model: str, batch_size: int):
    import importlib

    c = importlib.import_module(f"experiments.{model}").get_config(FLAGS.variant if FLAGS.is_parsed() else "seed")
    c.batch_size = batch_size
    return c


def _labels(n: int = N_TRAIN, seed: int = 1):
    """[n] random labels, so that a semi-supervised variant finds examples of every class."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int32)


def _make_chunk(model, config, labels, seeds=(0,), layout=None):
    """The loop's chunk function for the variant, as `make train` builds it: its data order, and
    the labelled streams its model draws from `labels` (numpy), one set per seed."""
    from aaejax.run import trainer

    seeds = list(seeds)
    return trainer.make_train_chunk(model, config.batch_size, N_TRAIN, seeds if len(seeds) > 1 else seeds[0],
                                    trainer.stacked_streams(model, labels, seeds), num_seeds=len(seeds),
                                    layout=layout, data_order=config.data_order)


class _Chunks:
    """A chunk function driven as the loop drives it (`carried`): the state and the data order go
    from one call to the next. `run(length)` -> (metrics, finite) of that chunk, dispatched."""

    def __init__(self, chunk, state, images, labels):
        self.chunk, self.state, self.images, self.labels = chunk, state, images, labels
        self.order = chunk.order_at(state)

    def run(self, length: int):
        self.state, metrics, finite, self.order = self.chunk.carried(self.state, self.order, self.images, self.labels,
                                                                     length)
        return metrics, finite


def _dataset(n: int = N_TRAIN, seed: int = 0):
    """[n, *IMAGE_SHAPE] random uint8 images (contents do not change the speed)."""
    import numpy as np

    from aaejax.models.nets import IMAGE_SHAPE

    return np.random.default_rng(seed).integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)


def step_cost(model, config) -> dict:
    """XLA's count of one train step's floating-point operations (one model), and this device's
    rate on a plain matmul of the config's widest hidden layer at its batch size: a step whose
    GFLOP/s come near that rate is compute-bound, and no change of the loop makes it faster."""
    import jax
    import jax.numpy as jnp

    from aaejax.models.nets import IMAGE_SHAPE

    def examples(n):  # shapes only: lowering needs no arrays
        return jax.ShapeDtypeStruct((n, *IMAGE_SHAPE), jnp.uint8), jax.ShapeDtypeStruct((n,), jnp.int32)

    batch = dict(zip(("image", "label"), examples(config.batch_size)))
    for name, (_, size) in model.labelled_streams(_labels(), 0).items():
        batch.update(zip((f"{name}_image", f"{name}_label"), examples(size)))
    state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    cost = jax.jit(model.train_step).lower(state, batch).compile().cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"]  # a list of one in older jax
    b = config.batch_size
    width = max(w for k, v in config.items() if k.endswith("hidden") and isinstance(v, tuple) for w in v)
    a, w = jnp.ones((b, width)), jnp.ones((width, width))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, w))
    n, t = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t < 1.0:
        out, n = matmul(a, w), n + 1
        jax.block_until_ready(out)
    return {"gflop_per_step": flops / 1e9, "matmul_width": width,
            "matmul_gflop_per_sec": 2 * b * width * width * n / (time.perf_counter() - t) / 1e9}


def bench_aaejax(model_name: str, batch_size: int, seconds: float) -> dict:
    import jax
    import jax.numpy as jnp

    from aaejax.models import registry

    config = _config(model_name, batch_size)
    model = registry.build_model(config)
    images, labels = jax.device_put(_dataset()), _labels()
    steps_per_epoch = N_TRAIN // batch_size
    chunk = _make_chunk(model, config, labels)
    labels = jnp.asarray(labels)
    t = time.perf_counter()
    chunks = _Chunks(chunk, model.init(jax.random.PRNGKey(0)), images, labels)
    jax.block_until_ready(chunks.run(steps_per_epoch))
    first = time.perf_counter() - t
    # The first call includes compilation; time whole epochs after it.
    epochs, t = 0, time.perf_counter()
    while True:
        jax.block_until_ready(chunks.run(steps_per_epoch))
        epochs += 1
        if time.perf_counter() - t > seconds:
            break
    dt = time.perf_counter() - t
    sps = epochs * steps_per_epoch / dt
    cost = step_cost(model, config)
    return {"steps_per_sec": sps, "images_per_sec": sps * batch_size, "sec_per_epoch": dt / epochs,
            "first_epoch_incl_compile_s": first, **cost, "gflop_per_sec": sps * cost["gflop_per_step"],
            "device": str(jax.devices()[0].device_kind), "jax": jax.__version__}


def bench_torch(model_name: str, batch_size: int, seconds: float) -> dict:
    import torch

    from tests.references import torch_reference as tr

    from tests.references import torch_bigan

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = torch.from_numpy(_dataset().reshape(N_TRAIN, 784)).to(device)
    if model_name == "aae":
        model = tr.TorchAAE(device, batch_size=batch_size)
        run = lambda n: tr.run_epoch_steps(model, data, n, batch_size, True)
    else:  # the seed BiGAN program itself (the code tests/test_torch_reference.py checks)
        nets, optimizers, schedulers = torch_bigan.build(device)
        train_x = data.float() / 255.0
        run = lambda n: [torch_bigan.program_step(nets, optimizers, schedulers, train_x, i, batch_size, device)
                         for i in range(n)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    run(20)  # warm-up
    sync()
    steps, t = 0, time.perf_counter()
    block = 50
    while time.perf_counter() - t < seconds:
        run(block)
        sync()
        steps += block
    dt = time.perf_counter() - t
    sps = steps / dt
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"steps_per_sec": sps, "images_per_sec": sps * batch_size, "sec_per_epoch": (N_TRAIN // batch_size) / sps,
            "device": name, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def bench_seeds(model_name: str, batch_size: int, num_seeds: int, seconds: float, steps: int = 50) -> dict:
    """num_seeds models in one vmapped chunk, sharded over the devices like `make train` does."""
    import jax

    from aaejax.run import parallel
    from aaejax.models import registry

    config = _config(model_name, batch_size)
    config.num_seeds = num_seeds
    model = registry.build_model(config)
    layout = parallel.Layout(config)
    labels_np = _labels()
    images, labels = layout.put_replicated(_dataset()), layout.put_replicated(labels_np)
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    if num_seeds == 1:
        state = jax.jit(model.init, out_shardings=layout.state)(keys[0])
    else:
        state = jax.jit(jax.vmap(model.init), out_shardings=layout.state)(keys)
    chunk = _make_chunk(model, config, labels_np, range(num_seeds), layout)
    chunks = _Chunks(chunk, state, images, labels)
    jax.block_until_ready(chunks.run(steps))
    n, t = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t < seconds:
        jax.block_until_ready(chunks.run(steps))
        n += steps
    sps = n / (time.perf_counter() - t)
    return {"bench": "seeds", "model": model_name, "batch_size": batch_size, "num_seeds": num_seeds,
            "shard": layout.mode, "steps_per_sec": round(sps, 2), "model_steps_per_sec": round(sps * num_seeds, 2),
            "device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count()}


def _first_step_child(model_name: str) -> None:
    """In a fresh process, as `make train` does it: imports, data to the device, init, compile,
    then the first chunk. Prints the time to the compiled chunk and to the first trained step
    (compiled + one step's share of the first chunk)."""
    t0 = time.perf_counter()
    from aaejax.run import cli

    cli.enable_compilation_cache()
    import jax

    from aaejax.models import registry

    config = _config(model_name, 128 if model_name == "bigan" else 32)
    model = registry.build_model(config)
    images = jax.device_put(_dataset())
    labels_np = _labels()
    labels = jax.device_put(labels_np)
    state = jax.jit(model.init)(jax.random.PRNGKey(0))
    chunk = _make_chunk(model, config, labels_np)
    compiled = chunk.compile(state, images, labels, length=config.log_every)
    t_compiled = time.perf_counter() - t0
    state, m, _ = compiled(state, images, labels)
    jax.block_until_ready(m)
    t_chunk = time.perf_counter() - t0
    print(json.dumps({"to_compiled_s": t_compiled, "first_chunk_s": t_chunk,
                      "first_step_s": t_compiled + (t_chunk - t_compiled) / config.log_every}))


def bench_first_step(model_name: str) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, AAEJAX_JAX_CACHE=cache)
        for label in ("cold", "warm"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "tools.bench", f"--_first_step_child={model_name}"],
                                  env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            inner = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append({"bench": "first_step", "model": model_name, "cache": label,
                        "process_wall_s": round(wall, 2),
                        **{k: round(v, 2) for k, v in inner.items()}})
    return out


LOOP_VARIANTS = {"aae": "seed", "bigan": "official"}


def _standin(model_name: str):
    """The variant at width 8, batch 8 (its cadences and length unchanged)."""
    import importlib

    c = importlib.import_module(f"experiments.{model_name}").get_config(LOOP_VARIANTS[model_name])
    for field in ("hidden", "disc_hidden", "g_hidden", "e_hidden", "d_hidden"):
        if field in c:
            c[field] = (8, 8)
    c.batch_size = 8
    if "bn_eval_batches" in c:
        c.bn_eval_batches = min(int(c.bn_eval_batches), 8)
    return c


def bench_loop(model_name: str, rounds: int) -> dict:
    """The real loop on the stand-in, at the variant's cadences ("default") and as one chunk: a
    first run of each (compiling), then `rounds` more of each, alternated (which goes first
    alternates too). Each run's seconds are the loop's, from its "training" log record to its
    "trained to step" record (their times, not the line's 0.1 s figure); the ratio is of the
    medians of the later runs, whose programs come from memory, so it is what the loop adds, not
    what compiling costs. first_eta_error_pct: the later default runs' first ETA against the time
    they then took (first_run_eta_error_pct: the compiling run's)."""
    import logging
    import statistics

    from aaejax.data import datasets as data_lib
    from aaejax.run import trainer

    ds = data_lib.Dataset("mnist", _dataset(), _labels(), _dataset(10000, seed=2), _labels(10000, seed=3),
                          source="random bytes")
    messages, times = [], []
    handler = logging.Handler()
    handler.emit = lambda record: (messages.append(record.getMessage()), times.append(time.perf_counter()))
    logging.getLogger("aaejax").addHandler(handler)
    logging.getLogger("aaejax").setLevel(logging.INFO)
    out = {"bench": "loop", "model": model_name, "variant": LOOP_VARIANTS[model_name], "rounds": rounds}
    seconds = {"one_chunk": [], "default": []}
    try:
        for i in range(rounds + 1):
            for name in ("one_chunk", "default") if i % 2 == 0 else ("default", "one_chunk"):
                c = _standin(model_name)
                if name == "one_chunk":
                    c.log_every = c.sample_every = c.checkpoint_every = c.num_steps
                messages.clear()
                times.clear()
                with tempfile.TemporaryDirectory() as workdir:
                    trainer.train(c, workdir, dataset=ds)
                t_end = times[next(j for j, m in enumerate(messages) if m.startswith("trained to step"))]
                t_start = times[next(j for j, m in enumerate(messages) if m.startswith("training "))]
                seconds[name].append(round(t_end - t_start, 3))
                j = next((j for j, m in enumerate(messages) if m.startswith("ETA: ")), None)
                if name == "default" and j is not None:  # the first ETA (steps to go / the rate it names)
                    left, rate = re.search(r"(\d+) steps to go, about .* at ([\d.]+) steps/s", messages[j]).groups()
                    eta = int(left) / float(rate)
                    error = round(100 * (eta / (t_end - times[j]) - 1), 1)
                    if i:
                        out.setdefault("first_eta_error_pct", []).append(error)
                    else:
                        out["first_run_eta_error_pct"] = error
        out["steps"] = int(c.num_steps)
        for name, values in seconds.items():
            out[f"{name}_first_s"], out[f"{name}_s"] = values[0], values[1:]
        if rounds:
            out["default_over_one_chunk"] = round(statistics.median(seconds["default"][1:])
                                                  / statistics.median(seconds["one_chunk"][1:]), 3)
    finally:
        logging.getLogger("aaejax").removeHandler(handler)
    return out


def bench_chunks(model_name: str, length: int) -> dict:
    """The stand-in's num_steps as chunks of `length` (`carried`, a program of that length), fetching
    each chunk's metrics; seconds scaled to the whole run, after a warm-up chunk of that length."""
    import jax
    import jax.numpy as jnp

    from aaejax.models import registry

    c = _standin(model_name)
    model, total = registry.build_model(c), int(c.num_steps)
    chunks = _Chunks(_make_chunk(model, c, _labels()), model.init(jax.random.PRNGKey(0)), jnp.asarray(_dataset()),
                     jnp.asarray(_labels()))
    jax.block_until_ready(chunks.run(length))  # compiles
    n = max(total // length, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        jax.device_get(chunks.run(length))
    seconds = (time.perf_counter() - t0) * total / (n * length)
    return {"bench": "chunks", "model": model_name, "variant": LOOP_VARIANTS[model_name], "length": length,
            "steps": total, "seconds": round(seconds, 2)}


STOP_CONFIGS = (("aae", "seed"), ("aae", "semi_supervised_plus"), ("aae", "paper_cluster_16"),
                ("bigan", "official"), ("aae", "paper_semi_100"))


def bench_stop(model_name: str, variant: str, delay: float) -> dict:
    """A real run of the named config (MNIST by the usual route) in a fresh work dir: SIGINT
    `delay` s after its first chunk; the seconds until the process exits, and where it stopped."""
    import signal

    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen([sys.executable, "-m", f"experiments.{model_name}",
                                 f"--config=experiments/{model_name}.py:{variant}", f"--workdir={workdir}"],
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith("first chunk"):
                break
        time.sleep(delay)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait()
        stopped = [x for x in rest.splitlines() if "stopped by signal" in x]
        return {"bench": "stop", "model": model_name, "variant": variant, "signal_after_first_chunk_s": round(delay, 2),
                "exit_s": round(time.perf_counter() - t0, 2), "returncode": proc.returncode,
                "said": stopped[-1] if stopped else rest.strip().splitlines()[-1:]}


def main(argv):
    del argv
    if FLAGS._first_step_child:
        _first_step_child(FLAGS._first_step_child)
        return
    from aaejax.run import cli

    cli.enable_compilation_cache()
    if FLAGS.stop:
        import random

        rng = random.Random(0)
        for model_name, variant in STOP_CONFIGS:
            print(json.dumps(bench_stop(model_name, variant, rng.uniform(0.5, 4.0))), flush=True)
        return
    if FLAGS.chunk_lengths:
        for model_name in FLAGS.models:
            for length in map(int, FLAGS.chunk_lengths):
                print(json.dumps(bench_chunks(model_name, length)), flush=True)
        return
    if FLAGS.loop:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
        for model_name in FLAGS.models:
            print(json.dumps(bench_loop(model_name, FLAGS.loop_rounds)), flush=True)
        return
    for model_name in FLAGS.models:
        for bs in map(int, FLAGS.batch_sizes):
            rows = {"aaejax": bench_aaejax(model_name, bs, FLAGS.seconds)}
            if FLAGS.torch and FLAGS.variant == "seed":  # the PyTorch side is the seed programs only
                rows["torch"] = bench_torch(model_name, bs, FLAGS.seconds)
            for impl, r in rows.items():
                print(json.dumps({"bench": "train", "model": model_name, "batch_size": bs, "impl": impl,
                                  **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}}),
                      flush=True)
            if "torch" in rows:
                ratio = rows["aaejax"]["steps_per_sec"] / rows["torch"]["steps_per_sec"]
                print(json.dumps({"bench": "ratio", "model": model_name, "batch_size": bs,
                                  "aaejax_over_torch": round(ratio, 3)}), flush=True)
    for model_name in FLAGS.models if FLAGS.seed_counts else []:
        base = None
        for count in map(int, FLAGS.seed_counts):
            row = bench_seeds(model_name, int(FLAGS.batch_sizes[0]), count, FLAGS.seconds)
            if count == 1:
                base = row["model_steps_per_sec"]
            if base:
                row["speedup_over_one_model"] = round(row["model_steps_per_sec"] / base, 2)
            print(json.dumps(row), flush=True)
    if FLAGS.first_step:
        for model_name in FLAGS.models:
            for row in bench_first_step(model_name):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)
