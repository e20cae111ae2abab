"""MNIST / Fashion-MNIST: where the data comes from, and reading it (no TensorFlow needed).

Route, first that works wins (see README, "Data"):

1. A prepared TFDS data dir (`data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`),
   read with `tfds.data_source` (array_record).
2. The four original IDX `.gz` files in `$AAEJAX_IDX_DIR/<name>/` (or, when that variable is
   unset, a sibling `../shared/datasets/<name>/`). These are the very files TFDS's own `mnist`
   builder parses; their `.gz` wrappers may differ from TFDS's registered checksums, so we parse
   them directly and verify the SHA-256 of the *uncompressed* bytes instead.
3. The same four files downloaded (aaejax/data/download.py) from the URLs TFDS registers for its
   builders, or from a mirror (`$AAEJAX_DATA_MIRROR` / config.data_mirror), into
   ~/.cache/aaejax/downloads/<name>/, then read as in 2. Skipped when $AAEJAX_OFFLINE is set.
4. Otherwise a `DataError` naming what was tried, within seconds.

Whatever the route: uint8 images `[60000, 28, 28, 1]` / `[10000, 28, 28, 1]`, int32 labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from aaejax.configs import DATASETS
from aaejax.run import console
from aaejax.data import download

IDX_ENV = "AAEJAX_IDX_DIR"
SPLIT_SIZES = {"train": 60000, "test": 10000}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# SHA-256 of the uncompressed original files (the .gz wrappers may be recompressed).
IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # labels, images (ubyte)


class DataError(RuntimeError):
    """Data missing, unreadable or not what it should be."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Host-side arrays. images: uint8 [N, 28, 28, 1]; labels: int32 [N]."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # which route produced it, for the log and the run's config


def _check(images: np.ndarray, labels: np.ndarray, n: int | None, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise DataError(f"{what}: images must be uint8 [N, 28, 28, 1], got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{what}: {labels.shape[0]} labels for {images.shape[0]} images")
    if n is not None and images.shape[0] != n:
        raise DataError(f"{what}: expected {n} examples, found {images.shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{what}: labels outside 0..9")


# ----------------------------------------------------------------------------- IDX route


def read_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Parses one IDX file (plain or .gz) with full validation; returns a uint8 array."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream
        raise DataError(f"{path}: cannot read ({e}); the file is missing or corrupt") from e
    if len(raw) < 8:
        raise DataError(f"{path}: truncated ({len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != b"\0\0" or dtype_code != 0x08 or _IDX_MAGIC.get(ndim) != magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}; not an IDX ubyte file")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(
            f"{path}: truncated or padded: header says {dims} ({size} bytes), file holds {len(raw) - header}"
        )
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise DataError(f"{path}: SHA-256 of the uncompressed bytes is {digest[:12]}…, expected "
                            f"{expected_sha256[:12]}…; the file is not the original")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: {stem}.gz is missing")


def load_idx(name: str, folder: str | os.PathLike, verify: bool = True, sizes: dict = SPLIT_SIZES) -> Dataset:
    """Reads the four original IDX files of `name` from `folder` (`sizes`: the example count each
    split must have)."""
    folder = Path(folder)
    arrays = {}
    for split, (img_stem, lbl_stem) in _FILES.items():
        sums = IDX_SHA256.get(name, {}) if verify else {}
        images = read_idx(_idx_file(folder, img_stem), sums.get(img_stem))
        labels = read_idx(_idx_file(folder, lbl_stem), sums.get(lbl_stem))
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{folder}/{img_stem}: expected 28x28 images, got {images.shape[1:]}")
        images, labels = images[..., None], labels.astype(np.int32)
        _check(images, labels, sizes[split], f"{folder} ({split})")
        arrays[split] = (images, labels)
    return Dataset(name, *arrays["train"], *arrays["test"], source=f"idx:{folder}")


def idx_candidates(name: str) -> list[Path]:
    """Folders that may hold `name`'s IDX files: $AAEJAX_IDX_DIR alone when set, else siblings."""
    env = os.environ.get(IDX_ENV)
    if env:
        return [Path(env) / name]
    repo = Path(__file__).resolve().parents[2]  # aaejax/data/datasets.py -> the repository
    roots = [repo.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    out = []
    for r in roots:
        if (r / name) not in out:
            out.append(r / name)
    return out


# ----------------------------------------------------------------------------- TFDS routes


def _tfds_data_dir(data_dir: str | None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


class _TempfileIn:
    """`tempfile` as TFDS's dataset_info module sees it during a lookup: folders made inside
    `folder`; everything else is tempfile's own."""

    def __init__(self, folder: str):
        self.folder = folder

    def mkdtemp(self, suffix=None, prefix=None, dir=None):
        return tempfile.mkdtemp(suffix, prefix, dir or self.folder)

    def __getattr__(self, name):
        return getattr(tempfile, name)


@contextlib.contextmanager
def _scratch_tempdir():
    """TFDS's `DatasetInfo.initialize_from_bucket` makes a `mkdtemp` folder (with internet, GCS
    metadata in it) on each lookup of an unprepared dataset and never removes it, so every run
    would leave one in /tmp. For the lookup, its module makes them in a folder removed on exit
    (only its module: other threads' temporary files stay where tempfile puts them)."""
    from tensorflow_datasets.core import dataset_info

    with tempfile.TemporaryDirectory(prefix="aaejax-tfds-") as scratch:
        previous, dataset_info.tempfile = dataset_info.tempfile, _TempfileIn(scratch)
        try:
            yield
        finally:
            dataset_info.tempfile = previous


def _read_tfds(name: str, data_dir: str | None) -> Dataset:
    """Reads a prepared (or mocked) TFDS dataset through `tfds.data_source`: no TensorFlow.

    Raises whatever TFDS raises when the dataset is not prepared as array_record (download=False:
    never a silent download attempt here).
    """
    import tensorflow_datasets as tfds

    arrays = {}
    for split in ("train", "test"):
        # TFDS warns "Variant folder ... has no dataset_info.json" whenever it looks for a dataset
        # that is not prepared there: on every run that does not use this route. Not actionable.
        with console.without_log_messages("absl", "has no dataset_info.json"), _scratch_tempdir():
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        n = len(source)
        images = np.empty((n, 28, 28, 1), np.uint8)
        labels = np.empty((n,), np.int32)
        for i in range(n):
            ex = source[i]
            images[i] = ex["image"]
            labels[i] = ex["label"]
        _check(images, labels, None, f"tfds:{name}/{split}")
        arrays[split] = (images, labels)
    return Dataset(name, *arrays["train"], *arrays["test"], source=f"tfds:{data_dir}")


def official_split(n: int = SPLIT_SIZES["train"]) -> tuple[np.ndarray, np.ndarray]:
    """(train indices [n - n // 6], held-out indices [n // 6]) of the official BiGAN code's split
    of MNIST-train (50 000 / 10 000): `load.mnist_with_valid_set` shuffles the 60 000 with
    `sklearn.utils.shuffle(..., random_state=RandomState(42))` (no other draw comes first), i.e.
    `RandomState(42).shuffle(arange(60000))`, and keeps the first 50 000 for training."""
    holdout = n // 6
    order = np.arange(n)
    np.random.RandomState(42).shuffle(order)
    return order[:n - holdout], order[n - holdout:]


def load(name: str = "mnist", data_dir: str | None = None, mirror: str | None = None) -> Dataset:
    """Loads `name` ('mnist' or 'fashion_mnist') by the route in the module docstring."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    tfds_dir = _tfds_data_dir(data_dir)
    tried = []
    try:
        return _read_tfds(name, tfds_dir)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - not prepared (or unreadable): try the next route
        tried.append(f"no prepared TFDS array_record dataset in {tfds_dir} ({type(e).__name__})")
    for folder in idx_candidates(name):
        if folder.is_dir():
            return load_idx(name, folder)  # broken files raise DataError: no silent fallback
        tried.append(f"no IDX files in {folder}")
    if os.environ.get("AAEJAX_OFFLINE"):
        tried.append("download skipped ($AAEJAX_OFFLINE is set)")
    else:
        try:
            folder = download.fetch(name, mirror=mirror, raw_sha256=IDX_SHA256.get(name))
            return dataclasses.replace(load_idx(name, folder), source=f"download:{folder}")
        except download.DownloadError as e:
            tried.append(f"download failed: {e}")
    raise DataError(
        f"cannot find the {name} data. Set {IDX_ENV} to a folder holding {name}/ with the four "
        f"original IDX .gz files (train-images-idx3-ubyte.gz, ...), point ${download.MIRROR_ENV} at a mirror "
        f"of them, or prepare a TFDS data dir. Tried: " + "; ".join(tried)
    )


def training_examples(dataset: Dataset, config) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a run trains on: all of the training split, or (data_split
    "official") the official BiGAN code's 50 000 of them."""
    if config.data_split == "official":
        idx, _ = official_split(len(dataset.train_images))
        return dataset.train_images[idx], dataset.train_labels[idx]
    return dataset.train_images, dataset.train_labels
