"""Datasets for the training engine: NHWC float32 images and int64 labels.

Three sources are supported:

* ``digits``  -- the 8x8 handwritten digits scikit-learn bundles, shipped with imcsim
  (``data/digits``, no download, no extra), 8x8x1;
* ``digits32`` -- the same digits and split as CIFAR-shaped 32x32x3 images (each pixel
  repeated 4x4 and copied to three channels: :func:`load_digits32`), so that CIFAR-sized
  models such as VGG-lite run with their paper layer sizes on data that ships with a package;
* ``cifar10`` -- the standard CIFAR-10 *python* batches (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``) in a local folder, 32x32x3;
* ``mnist``   -- the four MNIST IDX files (optionally gzipped) in a local folder, 28x28x1.

Every loader returns a :class:`Dataset` whose images are float32 in ``[0, 1]`` with layout
``(N, H, W, C)`` and whose labels are int64 ``(N,)``.  :func:`normalize` standardises the
channels with training-set statistics; :func:`augment_crop_flip` and :func:`iterate_batches`
are the deterministic (given a ``numpy.random.Generator``) augmentation and batching helpers.
They also take device (CuPy) arrays: the random numbers are still drawn on the host from the
NumPy generator, in the same order, and only then moved, so both devices see the same stream.
Nothing here downloads anything.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcsim.training.xp import is_array, namespace_of

__all__ = ["Dataset", "load_digits", "load_digits32", "load_cifar10", "load_mnist", "load_dataset",
           "DATASET_NAMES", "channel_stats", "normalize", "augment_crop_flip",
           "iterate_batches"]

DATASET_NAMES = ("digits", "digits32", "cifar10", "mnist")

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = 10
_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = 10
IDX_IMAGES_MAGIC = 2051   # 0x00000803: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049   # 0x00000801: unsigned byte, 1 dimension


# ----------------------------------------------------------------------------------------------
# Dataset container
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """A train/test split of images and labels.

    Attributes
    ----------
    x_train : np.ndarray, float32, shape (N, H, W, C)
        Training images, NHWC.
    y_train : np.ndarray, int64, shape (N,)
        Training labels in ``[0, n_classes)``.
    x_test : np.ndarray, float32, shape (M, H, W, C)
        Test images; same H, W, C as ``x_train``.
    y_test : np.ndarray, int64, shape (M,)
        Test labels in ``[0, n_classes)``.
    n_classes : int
        Number of classes (>= 2).
    name : str
        Short dataset name (e.g. ``"digits"``).

    Notes
    -----
    The container is frozen but the arrays are ordinary NumPy arrays; treat them as read-only.
    Shapes, dtypes and the label range are validated on construction (``ValueError``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Dataset name must be a non-empty string, got {self.name!r}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)):
            raise ValueError(f"n_classes must be an int, got {self.n_classes!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
                raise ValueError(
                    f"x_{split} must be a float32 array of shape (N, H, W, C), got "
                    f"{_describe(x)}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise ValueError(
                    f"y_{split} must be an int64 array of shape (N,), got {_describe(y)}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} images but y_{split} has "
                                 f"{y.shape[0]} labels")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"y_{split} labels must lie in [0, {self.n_classes}), got "
                                 f"range [{y.min()}, {y.max()}]")
        if self.x_train.shape[0] == 0:
            raise ValueError("x_train must hold at least one image")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"x_train images are {self.x_train.shape[1:]} (H, W, C) but x_test "
                             f"images are {self.x_test.shape[1:]}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------
def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no download.

    Parameters
    ----------
    test_fraction : float
        Fraction of each class put in the test split, in ``(0, 1)``.  Per class,
        ``round(test_fraction * class_count)`` images (at least 1, at most ``count - 1``) go to
        the test split.
    seed : int
        Seed of the split.  The split is a deterministic function of ``(test_fraction, seed)``
        and is stratified: every class has the same proportion in both splits.

    Returns
    -------
    Dataset
        ``x_*`` float32 ``(N, 8, 8, 1)`` in ``[0, 1]`` (pixel values 0..16 divided by 16),
        ``y_*`` int64, ``n_classes=10``, ``name="digits"``.  Both splits are in ascending order
        of the original sample index (shuffle with :func:`iterate_batches`).
    """
    if not (isinstance(test_fraction, (int, float, np.floating))
            and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    images, labels = digits_arrays()
    images = images.astype(np.float64)                            # (1797, 8, 8), 0..16
    x = (images / 16.0).astype(np.float32)[..., None]            # (N, 8, 8, 1)

    rng = np.random.default_rng(seed)
    test_idx = []
    for cls in np.unique(labels):                                 # ascending: deterministic
        members = np.flatnonzero(labels == cls)
        n_test = int(round(float(test_fraction) * members.size))
        n_test = min(max(n_test, 1), members.size - 1)
        test_idx.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_idx))
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[test_idx] = True
    train_idx = np.flatnonzero(~is_test)
    return Dataset(x_train=np.ascontiguousarray(x[train_idx]), y_train=labels[train_idx],
                   x_test=np.ascontiguousarray(x[test_idx]), y_test=labels[test_idx],
                   n_classes=10, name="digits")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The packaged digits (``data/digits/digits.npz``; source and licence in its README):
    images uint8 (1797, 8, 8) with values 0..16, labels int64 (1797,), scikit-learn's order."""
    from importlib import resources
    with resources.files("imcsim.data").joinpath("digits/digits.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            return np.asarray(z["images"]), np.asarray(z["target"], dtype=np.int64)


#: side of the CIFAR-shaped digits and how many times each 8x8 pixel is repeated per axis
DIGITS32_SIDE = 32
DIGITS32_REPEAT = DIGITS32_SIDE // 8


def load_digits32(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The digits of :func:`load_digits` (same images, labels and split) as 32x32x3 images.

    The resize is exact and deterministic: every 8x8 pixel becomes a 4x4 block of the same
    value (nearest-neighbour upsampling by an integer factor, no interpolation, so no value is
    invented), and the grey image is copied to the three colour channels.  This gives
    CIFAR-10's input shape, so VGG-lite runs with its paper layer sizes (Table I: 1152 to 2304
    rows per column in the hidden convolutions) on data that ships with scikit-learn.

    Returns
    -------
    Dataset
        ``x_*`` float32 ``(N, 32, 32, 3)`` in ``[0, 1]``, ``y_*`` int64 as in
        :func:`load_digits`, ``name="digits32"``.
    """
    small = load_digits(test_fraction, seed)

    def grow(x):                                                  # (N, 8, 8, 1) -> (N, 32, 32, 3)
        big = np.repeat(np.repeat(x, DIGITS32_REPEAT, axis=1), DIGITS32_REPEAT, axis=2)
        return np.ascontiguousarray(np.repeat(big, 3, axis=3))

    return dataclasses.replace(small, x_train=grow(small.x_train), x_test=grow(small.x_test),
                               name="digits32")


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------
def _check_folder(folder: str | os.PathLike, what: str) -> Path:
    if folder is None:
        raise ValueError(f"{what} needs a folder, got None")
    path = Path(folder)
    if not path.exists():
        raise ValueError(f"{what} folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{what} folder {str(path)!r} is not a directory")
    return path


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch -> (uint8 (N, 3072) CHW rows, int64 (N,) labels)."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... all mean "malformed"
        raise ValueError(f"CIFAR-10 file {str(path)!r} is not a readable pickle: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR-10 file {str(path)!r} holds a {type(batch).__name__}, "
                         f"expected a dict with b'data' and b'labels'")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"CIFAR-10 file {str(path)!r} lacks b'data' or b'labels' "
                         f"(keys: {sorted(map(repr, batch.keys()))})")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        raise ValueError(f"CIFAR-10 file {str(path)!r}: b'data' must be uint8 of shape "
                         f"(N, {_CIFAR_ROW}), got {_describe(data)}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:
        raise ValueError(f"CIFAR-10 file {str(path)!r}: b'labels' is not a list of ints") \
            from exc
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] \
            or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"CIFAR-10 file {str(path)!r}: b'labels' must be {data.shape[0]} "
                         f"integers, got {_describe(labels)}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR10_CLASSES):
        raise ValueError(f"CIFAR-10 file {str(path)!r}: labels must lie in [0, 10), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return data, labels


def _cifar_rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """uint8 (N, 3072) rows, each 1024 R then 1024 G then 1024 B (row-major 32x32),
    -> float32 (N, 32, 32, 3) in [0, 1]."""
    chw = rows.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)
    return np.ascontiguousarray(chw.transpose(0, 2, 3, 1)).astype(np.float32) / np.float32(255)


def load_cifar10(folder: str | os.PathLike) -> Dataset:
    """CIFAR-10 from the standard *python* batches in ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the contents of
        ``cifar-10-batches-py``).  All six are required.  Each is a pickled dict with
        ``b'data'``: uint8 ``(N, 3072)`` (channel-major: 1024 red, 1024 green, 1024 blue values,
        each a row-major 32x32 plane) and ``b'labels'``: N ints in ``[0, 10)``.

    Returns
    -------
    Dataset
        ``x_*`` float32 ``(N, 32, 32, 3)`` in ``[0, 1]`` (uint8 / 255), ``y_*`` int64,
        ``n_classes=10``, ``name="cifar10"``.  The training split is the five batches
        concatenated in order.

    Raises
    ------
    ValueError
        Naming the folder or file when the folder is missing, a batch is missing, a file is not
        a pickle, or its arrays have the wrong shape/dtype/label range.

    Notes
    -----
    The files are read with :func:`pickle.load` (``encoding='bytes'``), which can execute code:
    only load CIFAR files from a trusted source.
    """
    path = _check_folder(folder, "CIFAR-10")
    names = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise ValueError(f"CIFAR-10 folder {str(path)!r} is missing {', '.join(missing)} "
                         f"(need {', '.join(names)} from cifar-10-batches-py)")
    train = [_load_cifar_batch(path / n) for n in CIFAR10_TRAIN_FILES]
    test_rows, test_labels = _load_cifar_batch(path / CIFAR10_TEST_FILE)
    x_train = _cifar_rows_to_nhwc(np.concatenate([d for d, _ in train]))
    y_train = np.concatenate([lab for _, lab in train])
    return Dataset(x_train=x_train, y_train=y_train, x_test=_cifar_rows_to_nhwc(test_rows),
                   y_test=test_labels, n_classes=CIFAR10_CLASSES, name="cifar10")


# ----------------------------------------------------------------------------------------------
# MNIST (IDX)
# ----------------------------------------------------------------------------------------------
def _find_idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise ValueError(f"MNIST folder {str(folder)!r} is missing {stem} (or {stem}.gz)")


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (optionally gzipped) -> uint8 array of its dims."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"MNIST file {str(path)!r} could not be read: "
                         f"{type(exc).__name__}: {exc}") from exc
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"MNIST file {str(path)!r} is truncated: {len(raw)} bytes, shorter "
                         f"than its {header_len}-byte IDX header")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise ValueError(f"MNIST file {str(path)!r} has IDX magic number {got_magic}, expected "
                         f"{magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header_len
    if body != expected:
        raise ValueError(f"MNIST file {str(path)!r}: header dims {dims} need {expected} data "
                         f"bytes, file has {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _load_mnist_split(folder: Path, images_stem: str, labels_stem: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx_file(folder, images_stem)
    labels_path = _find_idx_file(folder, labels_stem)
    images = _read_idx(images_path, IDX_IMAGES_MAGIC, 3)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST files {str(images_path)!r} and {str(labels_path)!r} disagree: "
                         f"{images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() >= MNIST_CLASSES:
        raise ValueError(f"MNIST file {str(labels_path)!r}: labels must lie in [0, 10), got "
                         f"max {labels.max()}")
    x = (images.astype(np.float32) / np.float32(255))[..., None]
    return x, labels


def load_mnist(folder: str | os.PathLike) -> Dataset:
    """MNIST from the four IDX files in ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``; each may instead carry a
        ``.gz`` suffix (the uncompressed file wins when both exist).  Image files start with
        the big-endian magic 2051 and dims (N, H, W); label files with 2049 and (N,).

    Returns
    -------
    Dataset
        ``x_*`` float32 ``(N, H, W, 1)`` in ``[0, 1]`` (uint8 / 255; H = W = 28 for real
        MNIST), ``y_*`` int64, ``n_classes=10``, ``name="mnist"``.

    Raises
    ------
    ValueError
        Naming the folder or file for a missing folder/file, a bad magic number, a truncated
        file, inconsistent image/label counts or out-of-range labels.
    """
    path = _check_folder(folder, "MNIST")
    x_train, y_train = _load_mnist_split(path, MNIST_FILES["train_images"],
                                         MNIST_FILES["train_labels"])
    x_test, y_test = _load_mnist_split(path, MNIST_FILES["test_images"],
                                       MNIST_FILES["test_labels"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"MNIST folder {str(path)!r}: train images are {x_train.shape[1:3]} "
                         f"but test images are {x_test.shape[1:3]}")
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   n_classes=MNIST_CLASSES, name="mnist")


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------
def load_dataset(name: str = "digits", folder: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : {'digits', 'digits32', 'cifar10', 'mnist'}
        Case-insensitive.  ``'digits'`` and ``'digits32'`` ignore ``folder`` and use the
        default split of :func:`load_digits`; the other two require ``folder``.
    folder : str or path-like, optional
        Folder with the dataset's files (see :func:`load_cifar10`, :func:`load_mnist`).

    Returns
    -------
    Dataset
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key == "digits":
        return load_digits()
    if key == "digits32":
        return load_digits32()
    if key in ("cifar10", "mnist"):
        if folder is None:
            what = ("the CIFAR-10 python batches (data_batch_1 .. 5, test_batch)"
                    if key == "cifar10" else "the four MNIST IDX files")
            raise ValueError(f"--data {key} needs --data-folder: a folder with {what}; "
                             "nothing is downloaded")
        return load_cifar10(folder) if key == "cifar10" else load_mnist(folder)
    raise ValueError(f"unknown dataset name {name!r}; choose one of {', '.join(DATASET_NAMES)}")


# ----------------------------------------------------------------------------------------------
# Normalisation, augmentation, batching
# ----------------------------------------------------------------------------------------------
def channel_stats(x: np.ndarray, reproducible: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of NHWC images.

    Parameters
    ----------
    x : np.ndarray, shape (N, H, W, C)

    Returns
    -------
    mean, std : np.ndarray, float32, shape (C,)
        Population statistics (computed in float64).  A channel with zero spread gets
        ``std = 1`` so dividing by it is safe.  ``reproducible``: float64 sums in index order
        (``training.repro``) instead of NumPy's reductions.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"x must be an (N, H, W, C) array, got {_describe(x)}")
    x64 = x.astype(np.float64, copy=False)
    if reproducible:
        from imcsim.training.repro import mean_rows
        mean = mean_rows(x64)
        std = np.sqrt(mean_rows((x64 - mean) ** 2))
    else:
        mean = x64.mean(axis=(0, 1, 2))
        std = x64.std(axis=(0, 1, 2))
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(dataset: Dataset, reproducible: bool = False) -> Dataset:
    """Standardise each channel with the *training* set's mean and std.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    Dataset
        A new Dataset (same labels, n_classes, name) with
        ``x = (x - mean[c]) / std[c]`` applied to both splits, float32.  The statistics are
        available again through ``channel_stats(dataset.x_train)``.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a Dataset, got {type(dataset).__name__}")
    mean, std = channel_stats(dataset.x_train, reproducible)
    return dataclasses.replace(
        dataset,
        x_train=((dataset.x_train - mean) / std).astype(np.float32),
        x_test=((dataset.x_test - mean) / std).astype(np.float32))


def augment_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop (with zero padding) and random horizontal flip, independently per image.

    Each image is zero-padded by ``pad`` pixels on every side, a window of the original size
    is cut at a uniformly random offset ``(dy, dx)`` in ``[0, 2 * pad]^2``, and with
    probability 1/2 the window is mirrored left-right.  Offset ``(pad, pad)`` without flip is
    the identity.  Output pixel ``(i, j)`` is ``x[i + dy - pad, j' + dx - pad]`` (zero outside
    the image) with ``j' = j`` or ``W - 1 - j`` when flipped.

    Parameters
    ----------
    x : array, shape (N, H, W, C)
        Images (any dtype; float32 in this engine), NumPy or a device array; the result is in
        the same namespace.  Not modified.
    rng : numpy.random.Generator
        Source of randomness; the result is a deterministic function of the generator state.
        Draws, in order: ``rng.integers(0, 2*pad+1, size=(N, 2))`` then ``rng.random(N)``,
        always on the host.
    pad : int
        Padding / maximum shift in pixels, >= 0.  ``pad=0`` only flips.

    Returns
    -------
    array, same dtype, shape and namespace as ``x``
    """
    if not is_array(x) or x.ndim != 4:
        raise ValueError(f"x must be an (N, H, W, C) array, got {_describe(x)}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    n, h, w, _ = x.shape
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    if n == 0:
        return x.copy()
    xp = namespace_of(x)
    offsets, flips = xp.asarray(offsets), xp.asarray(flips)
    padded = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    rows = offsets[:, 0:1] + xp.arange(h)                    # (N, H)
    cols = offsets[:, 1:2] + xp.arange(w)                    # (N, W)
    cols = xp.where(flips[:, None], cols[:, ::-1], cols)
    out = padded[xp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return xp.ascontiguousarray(out)


def iterate_batches(n: int, batch_size: int, rng: np.random.Generator | None = None,
                    shuffle: bool = True, drop_last: bool = False,
                    xp=np) -> Iterator[np.ndarray]:
    """Index arrays for one epoch of minibatches.

    Parameters
    ----------
    n : int
        Number of samples, >= 0.
    batch_size : int
        Samples per batch, >= 1.
    rng : numpy.random.Generator, optional
        Required when ``shuffle`` is true; the order is ``rng.permutation(n)`` (one draw per
        call), so it is deterministic given the generator state.
    shuffle : bool
        Shuffle the order; otherwise ``0 .. n-1`` in order.
    drop_last : bool
        Drop the final batch when it is smaller than ``batch_size``.
    xp : module
        Namespace of the yielded index arrays (``numpy``, or ``cupy`` to index data kept on
        the GPU).  The order is drawn on the host and moved once per call.

    Yields
    ------
    array of ``xp``, int64, shape (B,)
        Sample indices; over the epoch every index appears exactly once (except those of a
        dropped last batch).  Arguments are validated when this is called, not on first
        iteration.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator when shuffle=True, got "
                             f"{type(rng).__name__}")
        order = rng.permutation(int(n)).astype(np.int64)
    else:
        order = np.arange(int(n), dtype=np.int64)
    stop = (n // batch_size) * batch_size if drop_last else n
    if xp is not np:
        order = xp.asarray(order)
    return (order[i:i + batch_size] for i in range(0, stop, batch_size))
