"""HDF5's shuffle filter, compiled: the byte planes of an integer array.

HDF5 stores a shuffled chunk as byte 0 of every element, then byte 1 of every element, and so
on (little-endian element bytes, as every platform imcsim runs on stores them).  Reading byte
j of element i as ``(value >> 8 j) & 0xFF`` of the unsigned view keeps every load a whole
element, which the compiler vectorises; the NumPy form (a transposed copy of the bytes) runs
at about a third of the speed on the 2-core VM, and the trace writer shuffles every byte it
writes.  ``nogil``: the writer's threads shuffle chunks in parallel.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def shuffle_into(values, out):
    """Byte planes of ``values``.

    values : uint16, uint32 or uint64 (n,), an integer array's unsigned view;
    out : uint8 (n * itemsize,), written: ``out[j * n + i]`` is byte j (little-endian) of
    element i.
    """
    n = values.size
    for j in range(values.itemsize):
        base = j * n
        shift = 8 * j
        for i in range(n):
            out[base + i] = np.uint8((values[i] >> shift) & 0xFF)
