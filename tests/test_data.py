"""Data route: TFDS (mocked), the IDX files, validation, the fast missing-data error."""

import gzip
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from aaejax import data as data_lib

REPO = Path(__file__).resolve().parents[1]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0) -> None:
    ndim = array.ndim
    magic = (0x800 | ndim) if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if cut:
        raw = raw[:-cut]
    with gzip.open(path, "wb") as f:
        f.write(raw)


def write_fake_mnist(folder: Path, n_train=60000, n_test=10000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_tfds_mock_route_shapes_and_dtypes():
    with tfds.testing.mock_data(num_examples=20):
        ds = data_lib.load("mnist")
    assert ds.source.startswith("tfds:")
    chex.assert_shape(ds.train_images, (20, 28, 28, 1))
    chex.assert_shape(ds.test_images, (20, 28, 28, 1))
    chex.assert_type([ds.train_images, ds.test_images], np.uint8)
    chex.assert_type([ds.train_labels, ds.test_labels], np.int32)
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() <= 9


def test_tfds_mock_route_fashion_mnist():
    with tfds.testing.mock_data(num_examples=8):
        ds = data_lib.load("fashion_mnist")
    chex.assert_shape(ds.train_images, (8, 28, 28, 1))


def test_idx_route_reads_and_validates(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv(data_lib.IDX_ENV, str(tmp_path))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    # Fake files are not the originals: the SHA-256 check must refuse them...
    with pytest.raises(data_lib.DataError, match="SHA-256"):
        data_lib.load("mnist")
    # ...while the parser itself accepts them.
    ds = data_lib.load_idx("mnist", tmp_path / "mnist", verify=False)
    chex.assert_shape(ds.train_images, (60000, 28, 28, 1))
    chex.assert_shape(ds.test_labels, (10000,))
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)


@pytest.mark.parametrize("fault,match", [
    (dict(magic=0x00000804), "wrong magic"),
    (dict(cut=100), "truncated"),
])
def test_idx_bad_file_refused(tmp_path, fault, match):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((10, 28, 28)), **fault)
    with pytest.raises(data_lib.DataError, match=match):
        data_lib.read_idx(path)


def test_idx_corrupt_gzip_refused(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(data_lib.DataError, match="corrupt"):
        data_lib.read_idx(path)


def test_idx_wrong_count_refused(tmp_path):
    write_fake_mnist(tmp_path / "mnist", n_train=100)
    with pytest.raises(data_lib.DataError, match="expected 60000"):
        data_lib.load_idx("mnist", tmp_path / "mnist", verify=False)


def test_missing_data_fails_fast_and_names_the_variable(tmp_path):
    env = dict(os.environ, AAEJAX_IDX_DIR=str(tmp_path / "empty"), TFDS_DATA_DIR=str(tmp_path / "tfds"),
               JAX_PLATFORMS="cpu")
    env.pop("AAEJAX_OFFLINE", None)  # the real network probe must be fast too
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "experiments.aae", f"--workdir={tmp_path / 'run'}", "--steps=1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "AAEJAX_IDX_DIR" in proc.stderr
    assert elapsed < 10, f"missing-data error took {elapsed:.1f}s"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_dataset():
    with pytest.raises(data_lib.DataError, match="unknown dataset"):
        data_lib.load("cifar10")


def _real_idx_dir():
    for folder in data_lib.idx_candidates("mnist"):
        if folder.is_dir():
            return folder
    return None


@pytest.mark.skipif(_real_idx_dir() is None, reason="real MNIST IDX files not found")
def test_real_mnist_idx_label_counts():
    ds = data_lib.load_idx("mnist", _real_idx_dir())
    chex.assert_shape([ds.train_images, ds.test_images], [(60000, 28, 28, 1), (10000, 28, 28, 1)])
    np.testing.assert_array_equal(np.bincount(ds.train_labels, minlength=10), MNIST_TRAIN_COUNTS)


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    key = jax.random.PRNGKey(3)
    p0, p0b, p1 = (data_lib.epoch_permutation(key, e, 100) for e in (0, 0, 1))
    np.testing.assert_array_equal(p0, p0b)
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(np.sort(np.asarray(p0)), np.arange(100))
    idx = jax.jit(data_lib.batch_indices, static_argnums=2)(p0, jnp.int32(2), 10)
    np.testing.assert_array_equal(idx, p0[20:30])


def test_random_shift_translates_each_image_within_bounds():
    """Every output is its input moved by some (dy, dx) with |dy|, |dx| <= max_shift, zeros filling
    the border; the draws differ between images; max_shift 0 is the identity."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 9, 9, 1), dtype=np.uint8)  # no zero pixel: a shift is unambiguous
    out = np.asarray(jax.jit(data_lib.random_shift, static_argnums=2)(jax.random.PRNGKey(1), images, 2))
    chex.assert_shape(out, images.shape)
    assert out.dtype == images.dtype
    seen = set()
    for x, y in zip(images, out):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
                if np.array_equal(padded[2 - dy:11 - dy, 2 - dx:11 - dx], y):
                    matches.append((dy, dx))
        assert len(matches) == 1, matches
        seen.add(matches[0])
    assert len(seen) > 10  # 25 possible shifts over 64 images
    np.testing.assert_array_equal(data_lib.random_shift(jax.random.PRNGKey(1), images, 0), images)


def test_rotate_known_answers():
    """A quarter turn is np.rot90 (counter-clockwise as displayed) exactly, a half turn rot180, and 0 the
    identity; float images keep their dtype."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 9, 9, 1), dtype=np.uint8)
    rotate = jax.jit(data_lib.rotate)
    quarter = np.asarray(rotate(images, jnp.full((3,), np.pi / 2)))
    np.testing.assert_array_equal(quarter, np.rot90(images, 1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate(images, jnp.full((3,), np.pi)), np.rot90(images, 2, axes=(1, 2)))
    np.testing.assert_array_equal(rotate(images, jnp.zeros((3,))), images)
    floats = images.astype(np.float32) / 255.0
    out = rotate(floats, jnp.asarray([0.0, np.pi / 2, 0.0]))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[1], np.rot90(floats[1], 1), atol=1e-6)


def test_random_affine_turns_each_image_by_its_own_bounded_angle():
    """One bright pixel right of the centre: its centroid turns by at most max_degrees (plus the
    bilinear spread), by different angles in different images; max_degrees 0 is the identity."""
    images = np.zeros((64, 15, 15, 1), np.float32)
    images[:, 7, 13] = 1.0  # 6 pixels right of the centre (7, 7): angle 0
    out = np.asarray(jax.jit(data_lib.random_affine, static_argnums=2)(jax.random.PRNGKey(0), images, 30.0))
    chex.assert_shape(out, images.shape)
    ii, jj = np.mgrid[:15, :15]
    mass = out[..., 0].sum((1, 2))
    ci = (out[..., 0] * ii).sum((1, 2)) / mass - 7
    cj = (out[..., 0] * jj).sum((1, 2)) / mass - 7
    angles = np.degrees(np.arctan2(-ci, cj))  # counter-clockwise as displayed: rows grow downwards
    assert np.all(np.abs(angles) <= 30.0 + 3.0), angles
    assert np.std(angles) > 8.0 and (angles > 5).any() and (angles < -5).any()
    np.testing.assert_array_equal(data_lib.random_affine(jax.random.PRNGKey(0), images, 0.0), images)


def _centroids(images):
    """[N, H, W, 1] -> row and column offsets [N] of each image's centroid from the centre."""
    _, h, w, _ = images.shape
    ii, jj = np.mgrid[:h, :w]
    mass = images[..., 0].sum((1, 2))
    return ((images[..., 0] * ii).sum((1, 2)) / mass - (h - 1) / 2,
            (images[..., 0] * jj).sum((1, 2)) / mass - (w - 1) / 2)


def test_random_affine_shears_and_zooms_within_bounds():
    """Shear moves a pixel 6 rows below the centre sideways by at most 6 * max_shear, either way,
    and keeps its row; zoom moves a pixel 6 columns right of the centre along its row to 6 * f,
    f within 1 +- max_scale; rotation alone is rotate by angles drawn from the key itself; no warp is the identity."""
    key = jax.random.PRNGKey(0)
    affine = jax.jit(data_lib.random_affine, static_argnums=(2, 3, 4))
    below = np.zeros((64, 15, 15, 1), np.float32)
    below[:, 13, 7] = 1.0
    ci, cj = _centroids(np.asarray(affine(key, below, 0.0, 0.5, 0.0)))
    np.testing.assert_allclose(ci, 6.0, atol=1e-4)
    assert np.all(np.abs(cj) <= 6 * 0.5 + 1e-4) and (cj > 1).any() and (cj < -1).any(), cj
    right = np.zeros((64, 15, 15, 1), np.float32)
    right[:, 7, 13] = 1.0
    ci, cj = _centroids(np.asarray(affine(key, right, 0.0, 0.0, 0.2)))
    np.testing.assert_allclose(ci, 0.0, atol=1e-4)
    assert np.all((cj >= 6 * 0.8 - 1e-4) & (cj <= 6 * 1.2 + 1e-4)) and np.std(cj) > 0.3, cj
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    limit = np.deg2rad(20.0)
    angles = jax.random.uniform(key, (8,), minval=-limit, maxval=limit)
    np.testing.assert_array_equal(affine(key, images, 20.0, 0.0, 0.0), data_lib.rotate(images, angles))
    assert not np.array_equal(affine(key, images, 20.0, 0.2, 0.0), affine(key, images, 20.0, 0.0, 0.0))
    np.testing.assert_array_equal(data_lib.random_affine(key, images), images)
