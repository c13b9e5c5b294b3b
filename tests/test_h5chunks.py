"""imcsim.verify.h5chunks: the trace writer's own shuffle (a compiled kernel, against a plain
Python twin here) and its chunk appender (against HDF5's own filters reading back)."""
import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.verify.h5chunks import ChunkAppender, shuffle_bytes

DTYPES = ["u1", "i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"]


def reference_shuffle(values: np.ndarray) -> bytes:
    """HDF5's shuffle filter in plain Python: byte 0 of every element, then byte 1, ..."""
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    size = values.dtype.itemsize
    return bytes(raw[i * size + j] for j in range(size) for i in range(len(raw) // size))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(DTYPES), st.integers(0, 70), st.data())
def test_shuffle_equals_the_reference(dtype, n, data):
    info = np.iinfo(np.dtype(dtype))
    # the extremes of the type as well as the values between
    values = data.draw(st.lists(st.sampled_from([info.min, info.max, 0, -1 if info.min else 1])
                                | st.integers(int(info.min), int(info.max)),
                                min_size=n, max_size=n))
    array = np.array(values, dtype=dtype)
    assert shuffle_bytes(array).tobytes() == reference_shuffle(array)
    assert shuffle_bytes(array.reshape(-1, 1)).tobytes() == reference_shuffle(array)


def test_shuffle_refuses_what_the_kernel_does_not_read():
    with pytest.raises(ValueError, match="little-endian"):
        shuffle_bytes(np.arange(4, dtype=">i4"))
    with pytest.raises(ValueError, match="little-endian"):
        shuffle_bytes(np.zeros(4, dtype="V3"))


def write_rows(path, blocks, threads):
    """Append ``blocks`` (lists of {name: rows}) to a fresh file's datasets; the data read back
    through HDF5's own unshuffle and inflate."""
    with h5py.File(path, "w") as f:
        f.create_dataset("wide", shape=(0, 3, 2), maxshape=(None, 3, 2), chunks=(4, 3, 2),
                         dtype=np.int64, shuffle=True, compression="gzip")
        f.create_dataset("flat", shape=(0,), maxshape=(None,), chunks=(5,), dtype=np.uint16,
                         shuffle=True, compression="gzip")
        appender = ChunkAppender(f, ["wide", "flat"], threads=threads)
        for block in blocks:
            appender.append(block)
        appender.close()
    with h5py.File(path) as f:
        return {name: f[name][()] for name in ("wide", "flat")}


@pytest.mark.parametrize("threads", [1, 3])
def test_appender_writes_every_row_in_order_and_the_same_bytes(tmp_path, threads):
    """Blocks shorter than a chunk, spanning several, and empty; the file's bytes do not
    depend on the thread count (HDF5 sees the same calls in the same order)."""
    rng = np.random.default_rng(threads)
    sizes = [3, 0, 11, 1, 4, 17, 2]
    blocks = [{"wide": rng.integers(-2**62, 2**62, (n, 3, 2)),
               "flat": rng.integers(0, 2**16, n).astype(np.uint16)} for n in sizes]
    expected = {name: np.concatenate([b[name] for b in blocks]) for name in ("wide", "flat")}
    got = write_rows(tmp_path / "a.h5", blocks, threads)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
    write_rows(tmp_path / "one.h5", blocks, 1)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "one.h5").read_bytes()
