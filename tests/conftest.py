"""Shared fixtures and helpers: tiny configs, a small learnable dataset, the real CLI on mock data."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["AAEJAX_OFFLINE"] = "1"  # never probe the network from tests
# One persistent compilation cache for every test process and CLI subprocess: the tiny configs
# compile the same programs in many tests, and a cache hit takes milliseconds.
os.environ.setdefault("AAEJAX_JAX_CACHE", str(REPO / ".pytest_cache" / "jax"))
# The tests compile hundreds of tiny programs, each run a few times: XLA's backend optimisations
# cost more than they save there (a third of test_steps.py's CPU time), and XLA:CPU's newer fusion
# emitters compile random-number draws 2.5x slower than the classic ones (12 normal draws: 1.1 s
# vs 0.4 s), and splitting a program's code generation into parallel parts costs CPU time (a tiny
# AAE and BiGAN run from an empty cache: 8.3 -> 7.1 CPU s). Subprocesses inherit these flags.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aaejax.run import cli as cli_lib  # noqa: E402
from aaejax.data import datasets as data_lib  # noqa: E402
from experiments import aae as aae_exp  # noqa: E402
from experiments import bigan as bigan_exp  # noqa: E402

cli_lib.enable_compilation_cache()


def tiny_aae_config(**overrides):
    c = aae_exp.get_config()
    c.hidden, c.disc_hidden, c.latent_dim = (64, 64), (32, 32), 4
    c.batch_size, c.num_steps = 16, 40
    c.log_every, c.sample_every, c.checkpoint_every = 10, 20, 20
    c.checkpoint_seconds = 0.0  # every checkpoint_every boundary saves, however fast the run
    c.update(overrides)
    return c


def tiny_variant(variant, **overrides):
    """An AAE variant (experiments/aae.py) at test size."""
    c = aae_exp.get_config(variant)
    c.hidden, c.disc_hidden = (64, 64), (32, 32)
    c.batch_size, c.num_steps = 16, 40
    c.log_every, c.sample_every, c.checkpoint_every = 10, 20, 20
    c.checkpoint_seconds = 0.0  # every checkpoint_every boundary saves, however fast the run
    if c.aae_kind == "categorical":
        c.style_dim = 3
        c.labelled_batch_size = 8
        c.num_labels = 20 if variant == "semi_supervised_plus" else 0
    elif c.latent_dim != 2:
        c.latent_dim = 4
    c.update(overrides)
    return c


def tiny_bigan_config(variant="official", **overrides):
    c = bigan_exp.get_config(variant)
    c.g_hidden = c.e_hidden = c.d_hidden = (64, 64)
    c.latent_dim, c.batch_size, c.num_steps = 8, 16, 40
    c.bn_eval_batches = 4
    c.log_every, c.sample_every, c.checkpoint_every = 10, 20, 20
    c.checkpoint_seconds = 0.0  # every checkpoint_every boundary saves, however fast the run
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


def batch_of(ds: data_lib.Dataset, n: int, labelled: int = 0) -> dict:
    """The first n training examples as a train_step batch (+ `labelled` labelled ones)."""
    batch = {"image": jnp.asarray(ds.train_images[:n]), "label": jnp.asarray(ds.train_labels[:n])}
    if labelled:
        batch.update(labelled_image=jnp.asarray(ds.train_images[-labelled:]),
                     labelled_label=jnp.asarray(ds.train_labels[-labelled:]))
    return batch


# Flags that make the real command lines train tiny networks.
TINY_FLAGS = {
    "aae": ["--config.hidden=(32,32)", "--config.disc_hidden=(16,16)", "--config.latent_dim=3",
            "--config.checkpoint_seconds=0"],
    "bigan": ["--config.g_hidden=(32,32)", "--config.e_hidden=(32,32)", "--config.d_hidden=(32,32)",
              "--config.latent_dim=4", "--config.bn_eval_batches=2", "--config.batch_size=16",
              "--config.checkpoint_seconds=0"],
}


def cli_code(module: str, args, num_examples: int = 96) -> str:
    """Python source that runs `python -m <module> <args>` with TFDS's mock data as MNIST."""
    return textwrap.dedent(f"""
        import runpy, sys
        import tensorflow_datasets as tfds
        sys.argv = [{module!r}] + {list(args)!r}
        with tfds.testing.mock_data(num_examples={num_examples}):
            runpy.run_module({module!r}, run_name="__main__")
    """)


def checkpoint_steps(workdir) -> list[int]:
    """The step directories a run left in workdir/checkpoints, as on disk (not through orbax)."""
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def assert_documented(out: dict) -> None:
    """docs/eval.md defines every key `evaluate` wrote."""
    documented = set(re.findall(r"^\| `([\w.]+)`", (REPO / "docs" / "eval.md").read_text(), re.M))
    keys = (set(out) - {"seconds"}) | {f"seconds.{k}" for k in out["seconds"]}
    assert keys <= documented, sorted(keys - documented)


def cli_env(tmp_path, devices: int | None = None, **extra) -> dict:
    """The environment of a test subprocess; `devices`: that many CPU devices (XLA_FLAGS)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", AAEJAX_OFFLINE="1", **extra)
    if devices:
        env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"
    return env


def run_cli(module: str, args, tmp_path, num_examples: int = 96, timeout: int = 300, prelude: str = ""):
    """Runs `python -m <module> <args>` for real (a subprocess), with TFDS's mock data as MNIST;
    `prelude`: Python source run first in that process."""
    return subprocess.run([sys.executable, "-c", prelude + cli_code(module, args, num_examples)], cwd=REPO,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def pytest_collection_modifyitems(items):
    """The slow tests first: with `pytest -n N` (make test) they start at once instead of
    leaving one worker alone with the longest at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def bars():
    return bars_dataset()


@pytest.fixture
def retrace():
    """For a test that patches what a jitted program calls: the trainer's programs take the model
    as a static argument (equal configs share a trace in a process), so JAX's caches are cleared
    before the test (the patch takes effect) and after it (no later test runs the patched trace)."""
    jax.clear_caches()
    yield
    jax.clear_caches()
