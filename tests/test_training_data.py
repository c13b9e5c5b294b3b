"""Datasets, normalisation, augmentation and batching (training/data.py)."""
from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct

import numpy as np
import pytest

from imcsim.training.data import (
    Dataset,
    augment_crop_flip,
    channel_stats,
    iterate_batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    normalize,
)


# ----------------------------------------------------------------------------------------------
# Dataset validation
# ----------------------------------------------------------------------------------------------
def _tiny(**overrides):
    kw = dict(x_train=np.zeros((4, 2, 2, 1), np.float32), y_train=np.array([0, 1, 0, 1]),
              x_test=np.zeros((2, 2, 2, 1), np.float32), y_test=np.array([1, 0]),
              n_classes=2, name="tiny")
    kw.update(overrides)
    return Dataset(**kw)


def test_dataset_validation():
    ds = _tiny()
    assert ds.image_shape == (2, 2, 1) and ds.n_train == 4 and ds.n_test == 2
    with pytest.raises(ValueError, match="x_train"):
        _tiny(x_train=np.zeros((4, 2, 2, 1), np.float64))
    with pytest.raises(ValueError, match="x_test"):
        _tiny(x_test=np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="y_train"):
        _tiny(y_train=np.array([0, 1, 0, 1], np.int32))
    with pytest.raises(ValueError, match="labels"):
        _tiny(y_test=np.array([1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        _tiny(y_train=np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="x_test images"):
        _tiny(x_test=np.zeros((2, 3, 2, 1), np.float32))
    with pytest.raises(ValueError, match="n_classes"):
        _tiny(n_classes=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # frozen


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_shapes_and_range(digits):
    ds = digits
    assert ds.name == "digits" and ds.n_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_test.shape[1:] == (8, 8, 1)
    assert ds.n_train + ds.n_test == 1797
    assert abs(ds.n_test / 1797 - 0.2) < 0.01
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    # values are k / 16
    np.testing.assert_array_equal(ds.x_train * 16, np.round(ds.x_train * 16))


def test_digits_split_deterministic_and_seeded(digits):
    again = load_digits()
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    np.testing.assert_array_equal(digits.y_test, again.y_test)
    other = load_digits(seed=1)
    assert not np.array_equal(digits.x_test, other.x_test)
    # same images overall: the two splits partition the data
    from sklearn.datasets import load_digits as sk
    total = np.asarray(sk().images, np.float64).sum() / 16
    assert np.isclose(digits.x_train.sum(dtype=np.float64) + digits.x_test.sum(dtype=np.float64),
                      total)


def test_digits_split_is_stratified(digits):
    train_counts = np.bincount(digits.y_train, minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    frac = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(frac - 0.2) < 0.01)
    ds = load_digits(test_fraction=0.5, seed=3)
    frac = np.bincount(ds.y_test, minlength=10) / (
        np.bincount(ds.y_test, minlength=10) + np.bincount(ds.y_train, minlength=10))
    assert np.all(np.abs(frac - 0.5) < 0.01)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, "0.2"])
def test_digits_bad_fraction(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_load_dataset_dispatch(tmp_path):
    assert load_dataset().name == "digits"
    assert load_dataset("digits", folder="/nonexistent").name == "digits"
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="folder"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (fake batches with the real pickle layout)
# ----------------------------------------------------------------------------------------------
CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar(folder, per_batch=10, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in CIFAR_NAMES:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        batches[name] = (data, labels)
    return batches


def test_cifar_loader_pixel_placement(tmp_path):
    batches = _write_cifar(tmp_path / "cifar")
    ds = load_cifar10(tmp_path / "cifar")
    assert ds.name == "cifar10" and ds.n_classes == 10
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    # channel c, row r, column q of image i lives at byte c*1024 + r*32 + q of its row
    c, r, q = 2, 5, 17
    data2, labels2 = batches["data_batch_2"]
    i = 3
    assert ds.x_train[10 + i, r, q, c] == np.float32(data2[i, c * 1024 + r * 32 + q] / 255.0)
    assert ds.y_train[10 + i] == labels2[i]
    data_t, labels_t = batches["test_batch"]
    np.testing.assert_array_equal(ds.y_test, labels_t)
    full = data_t.reshape(10, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(ds.x_test, full)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_cifar_marked_pixel(tmp_path):
    """A single bright pixel in the green plane lands at (row, col, channel 1)."""
    batches = _write_cifar(tmp_path)
    data = np.zeros((10, 3072), np.uint8)
    data[0, 1 * 1024 + 7 * 32 + 30] = 255
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": batches["test_batch"][1]}, f)
    ds = load_cifar10(str(tmp_path))
    assert ds.x_test[0, 7, 30, 1] == 1.0
    assert ds.x_test.sum() == 1.0


def test_cifar_missing_folder_and_batch(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_cifar10(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_cifar10(tmp_path / "afile")
    folder = tmp_path / "c"
    _write_cifar(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(ValueError, match="data_batch_4") as exc:
        load_cifar10(folder)
    assert str(folder) in str(exc.value)


@pytest.mark.parametrize("content, match", [
    (b"this is not a pickle", "not a readable pickle"),
    (pickle.dumps([1, 2, 3]), "expected a dict"),
    (pickle.dumps({b"data": np.zeros((10, 3072), np.uint8)}), "lacks"),
    (pickle.dumps({b"data": np.zeros((10, 1024), np.uint8), b"labels": [0] * 10}), "3072"),
    (pickle.dumps({b"data": np.zeros((10, 3072), np.float32), b"labels": [0] * 10}), "uint8"),
    (pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}), "labels"),
    (pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [10] * 10}),
     r"\[0, 10\)"),
], ids=["not-pickle", "not-dict", "no-labels", "short-rows", "float-data", "label-count",
        "label-range"])
def test_cifar_malformed_batch(tmp_path, content, match):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(ValueError, match=match) as exc:
        load_cifar10(tmp_path)
    assert "data_batch_3" in str(exc.value)


def test_cifar_via_load_dataset(tmp_path):
    _write_cifar(tmp_path, per_batch=2)
    assert load_dataset("cifar10", tmp_path).x_train.shape == (10, 32, 32, 3)


# ----------------------------------------------------------------------------------------------
# MNIST (fake IDX files)
# ----------------------------------------------------------------------------------------------
def _idx_images(images):
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels):
    return struct.pack(">II", 2049, len(labels)) + np.asarray(labels, np.uint8).tobytes()


def _write_mnist(folder, n_train=6, n_test=4, side=28, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        raw = _idx_images(arr) if arr.ndim == 3 else _idx_labels(arr)
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.n_classes == 10
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(
        ds.x_train[..., 0], arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    img = arrays["t10k-images-idx3-ubyte"]
    assert ds.x_test[2, 11, 3, 0] == np.float32(img[2, 11, 3] / 255.0)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert load_dataset("MNIST", tmp_path).n_train == 6


def test_mnist_missing_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_mnist(tmp_path / "none")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_mnist_malformed_files(tmp_path):
    _write_mnist(tmp_path)
    name = "train-images-idx3-ubyte"
    good = (tmp_path / name).read_bytes()
    # wrong magic (a labels header in an images file)
    (tmp_path / name).write_bytes(struct.pack(">I", 2049) + good[4:])
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        load_mnist(tmp_path)
    # truncated body
    (tmp_path / name).write_bytes(good[:-5])
    with pytest.raises(ValueError, match="data bytes") as exc:
        load_mnist(tmp_path)
    assert name in str(exc.value)
    # truncated header
    (tmp_path / name).write_bytes(good[:6])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path)
    (tmp_path / name).write_bytes(good)
    # label count mismatch
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_labels([1, 2, 3]))
    with pytest.raises(ValueError, match="6 images but 3 labels"):
        load_mnist(tmp_path)
    # label out of range
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_labels([1, 2, 3, 4, 5, 10]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        load_mnist(tmp_path)


def test_mnist_bad_gzip(tmp_path):
    _write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------------------------
# normalize
# ----------------------------------------------------------------------------------------------
def test_normalize_uses_training_statistics():
    rng = np.random.default_rng(0)
    x_train = rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 3.0], size=(40, 4, 4, 3)).astype(np.float32)
    x_test = rng.normal(0.0, 1.0, size=(10, 4, 4, 3)).astype(np.float32)
    x_train[..., 2] = 7.0  # constant channel: std treated as 1
    ds = Dataset(x_train, rng.integers(0, 3, 40), x_test, rng.integers(0, 3, 10), 3, "n")
    out = normalize(ds)
    assert out is not ds and out.name == "n" and out.x_train.dtype == np.float32
    np.testing.assert_allclose(out.x_train[..., :2].mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.x_train[..., :2].std(axis=(0, 1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(out.x_train[..., 2], 0.0)
    mean, std = channel_stats(ds.x_train)
    np.testing.assert_allclose(out.x_test, (x_test - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(ds.x_train[..., 2], 7.0)  # input untouched


# ----------------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------------
def test_augment_shapes_and_determinism():
    x = np.random.default_rng(0).random((16, 8, 8, 3)).astype(np.float32)
    a = augment_crop_flip(x, np.random.default_rng(5))
    b = augment_crop_flip(x, np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment_crop_flip(x, np.random.default_rng(6)))


def test_flip_really_flips():
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    seen_flip = seen_plain = False
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = augment_crop_flip(x, rng, pad=0)
        for i in range(2):
            if np.array_equal(out[i], x[i, :, ::-1, :]):
                seen_flip = True
            else:
                np.testing.assert_array_equal(out[i], x[i])
                seen_plain = True
    assert seen_flip and seen_plain


def test_crop_shifts_content():
    """One bright pixel: its output position reveals the (dy, dx, flip) draw exactly."""
    h = w = 8
    pad = 2
    x = np.zeros((200, h, w, 1), np.float32)
    x[:, 3, 4, 0] = 1.0
    rng = np.random.default_rng(123)
    out = augment_crop_flip(x, rng, pad=pad)
    # replay the documented draws
    ref = np.random.default_rng(123)
    offsets = ref.integers(0, 2 * pad + 1, size=(200, 2))
    flips = ref.random(200) < 0.5
    shifts = set()
    for i in range(200):
        dy, dx = offsets[i]
        r, c = 3 - (dy - pad), 4 - (dx - pad)   # out[r, c] = x[r + dy - pad, c + dx - pad]
        if flips[i]:
            c = w - 1 - c
        expected = np.zeros((h, w), np.float32)
        if 0 <= r < h and 0 <= c < w:
            expected[r, c] = 1.0
        np.testing.assert_array_equal(out[i, :, :, 0], expected)
        shifts.add((dy - pad, dx - pad))
    assert len(shifts) == 25  # every shift in [-2, 2]^2 occurred
    # content shifted off the edge is replaced by zero padding
    y = np.ones((50, 4, 4, 1), np.float32)
    outs = augment_crop_flip(y, np.random.default_rng(0), pad=2)
    assert outs.min() == 0.0 and outs.max() == 1.0


def test_augment_bad_arguments():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="pad"):
        augment_crop_flip(x, np.random.default_rng(0), pad=-1)
    with pytest.raises(ValueError, match="rng"):
        augment_crop_flip(x, 0)
    with pytest.raises(ValueError, match="x must"):
        augment_crop_flip(x[0], np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, bs", [(10, 3), (9, 3), (1, 5), (0, 4)])
def test_batches_cover_every_index_once(n, bs):
    rng = np.random.default_rng(0)
    batches = list(iterate_batches(n, bs, rng))
    assert all(b.dtype == np.int64 for b in batches)
    assert all(len(b) == bs for b in batches[:-1])
    flat = np.concatenate(batches) if batches else np.array([], np.int64)
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))
    assert len(batches) == -(-n // bs)


def test_batches_shuffle_drop_last_and_determinism():
    a = [b.tolist() for b in iterate_batches(10, 4, np.random.default_rng(1))]
    b = [b.tolist() for b in iterate_batches(10, 4, np.random.default_rng(1))]
    assert a == b
    rng = np.random.default_rng(1)
    e1 = np.concatenate(list(iterate_batches(100, 10, rng)))
    e2 = np.concatenate(list(iterate_batches(100, 10, rng)))
    assert not np.array_equal(e1, e2) and not np.array_equal(e1, np.arange(100))
    dropped = list(iterate_batches(10, 4, np.random.default_rng(1), drop_last=True))
    assert [len(x) for x in dropped] == [4, 4]
    ordered = list(iterate_batches(5, 2, None, shuffle=False))
    assert [x.tolist() for x in ordered] == [[0, 1], [2, 3], [4]]


def test_batches_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(10, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n must"):
        iterate_batches(-1, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        iterate_batches(10, 2, None)
