"""Data route: TFDS (mocked), the IDX files, validation, the fast missing-data error."""

import gzip
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from aaejax.data import datasets as data_lib

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


SMALL = {"train": 60, "test": 10}


def write_fake_mnist(folder: Path, n_train=60, n_test=10) -> None:
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
    ds = data_lib.load_idx("mnist", tmp_path / "mnist", verify=False, sizes=SMALL)
    chex.assert_shape(ds.train_images, (60, 28, 28, 1))
    chex.assert_shape(ds.test_labels, (10,))
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6] * 10)


def test_unprepared_tfds_lookup_leaves_no_temp_dir(tmp_path, monkeypatch):
    # TFDS's DatasetInfo.initialize_from_bucket makes a mkdtemp dir on every lookup of a dataset
    # that is not prepared, and never removes it: one per run under /tmp.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    ds = data_lib.load_idx("mnist", tmp_path / "mnist", verify=False, sizes=SMALL)
    monkeypatch.setattr(data_lib, "load_idx", lambda name, folder: ds)
    monkeypatch.setenv(data_lib.IDX_ENV, str(tmp_path))
    assert data_lib.load("mnist") is ds  # the TFDS route was tried and failed
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("fault,match", [
    (dict(magic=0x00000804), "wrong magic"),
    (dict(cut=100), "truncated"),
])
def test_idx_bad_file_refused(tmp_path, fault, match):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((10, 28, 28)), **fault)
    with pytest.raises(data_lib.DataError, match=match):
        data_lib.read_idx(path)


@pytest.mark.parametrize("damage", ["header", "deflate stream"])
def test_idx_corrupt_gzip_refused(tmp_path, damage):
    path = tmp_path / "x.gz"
    if damage == "header":
        path.write_bytes(b"\x1f\x8b\x08garbage")
    else:  # the deflate stream's first byte (after the 10-byte header and the name "x\0"): zlib.error
        write_idx(path, np.arange(6000) % 10)
        data = bytearray(path.read_bytes())
        data[12] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(data_lib.DataError, match="corrupt"):
        data_lib.read_idx(path)


def test_idx_wrong_count_refused(tmp_path):
    write_fake_mnist(tmp_path / "mnist", n_train=50)
    with pytest.raises(data_lib.DataError, match="expected 60 examples"):
        data_lib.load_idx("mnist", tmp_path / "mnist", verify=False, sizes=SMALL)


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


def test_idx_sibling_of_the_repository_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(data_lib.IDX_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_lib.idx_candidates("mnist") == [REPO.parent / "shared" / "datasets" / "mnist",
                                                tmp_path.parent / "shared" / "datasets" / "mnist"]


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
