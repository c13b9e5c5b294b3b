"""Rows appended to chunked, shuffled and deflated HDF5 datasets, chunks compressed in parallel.

HDF5 compresses a dataset's chunks one at a time in the writing thread, which made the deflate
filter most of a trace's writing time (about 25 MB/s of raw records on the 2-core VM).  Here
each full chunk goes through the same two filters the datasets declare (shuffle, then
deflate) in a thread pool (the compressors release the GIL) and is stored with
``write_direct_chunk``, so readers see ordinary shuffled, deflated datasets.  Each chunk is
encoded on its own, so the file's bytes do not depend on the number of threads.

The deflate stream comes from ISA-L (``isal.isal_zlib``, extra ``trace``) when it is installed:
it writes the same zlib format (any zlib, and so HDF5's deflate filter, reads it) about five
times faster than zlib at level 1 for the same size (traces of the 2-core VM: 610-630 against
119 MB/s of shuffled records, 5.3 times smaller either way).  Without it, ``zlib`` encodes.
The bytes differ between the two encoders; the data read back does not.
"""
from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imcsim.kernels.shuffle import shuffle_into

#: deflate level of the chunks: on the traces of the 2-core VM, level 1 encoded 1.8 times
#: faster than level 4 for 12 % more bytes (2.13 against 1.89 MB per 11.4 MB of records)
DEFLATE_LEVEL = 1
#: most compression threads (beyond this the writer, not compression, limits)
MAX_THREADS = 16
#: ISA-L's level for the same job: its level 2 is as fast as its level 1 here and as small
#: as zlib's level 1 (5.31 against 5.34 times smaller on the VM's traces)
ISAL_LEVEL = 2


def deflate_encoder():
    """(name, compress(data, level)) of the fastest deflate encoder installed: ISA-L's
    ``isal_zlib`` (extra ``trace``), else the standard library's ``zlib``."""
    try:
        from isal import isal_zlib
    except ImportError:
        return "zlib", zlib.compress
    return "isal", lambda data, _level: isal_zlib.compress(data, ISAL_LEVEL)


#: unsigned view of each element size the shuffle kernel takes
_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def shuffle_bytes(chunk: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter: byte 0 of every element, then byte 1, ...

    Returns uint8 (chunk.nbytes,), a new array (the compressors read it as a buffer, so it is
    never copied into ``bytes``); 1-byte elements are returned as they are (the filter leaves
    them alone).  Little-endian elements of 1, 2, 4 or 8 bytes (every dataset of a trace).
    """
    flat = np.ascontiguousarray(chunk).reshape(-1)
    size = flat.dtype.itemsize
    if size == 1:
        return flat.view(np.uint8)
    if size not in _UNSIGNED or flat.dtype.byteorder == ">":
        raise ValueError(f"shuffle: {flat.dtype} is not a little-endian 2-, 4- or 8-byte type")
    out = np.empty(flat.nbytes, dtype=np.uint8)
    shuffle_into(flat.view(_UNSIGNED[size]), out)
    return out


def encode_chunk(chunk: np.ndarray, level: int = DEFLATE_LEVEL, compress=zlib.compress) -> bytes:
    """One chunk through the datasets' filter pipeline: shuffle, then deflate (``compress``,
    a zlib-format encoder: ``deflate_encoder``)."""
    return compress(shuffle_bytes(chunk), level)


def default_threads() -> int:
    return max(1, min(MAX_THREADS, os.cpu_count() or 1))


class ChunkAppender:
    """Appends rows to the datasets ``names`` of an h5py group.

    The datasets must be 1-row-extendible (``maxshape=(None, ...)``), chunked along rows
    only, and declared with ``shuffle=True, compression="gzip"``.  Rows wait until they fill a
    chunk; ``close`` writes each dataset's last partial chunk, padded with zeros (past the
    dataset's extent, so never read).
    """

    def __init__(self, group, names, threads: int | None = None,
                 level: int = DEFLATE_LEVEL) -> None:
        self.datasets = {name: group[name] for name in names}
        for name, ds in self.datasets.items():
            if ds.chunks is None or ds.chunks[1:] != ds.shape[1:]:
                raise ValueError(f"{name}: expected chunks of whole rows, got {ds.chunks}")
        self.level = level
        _, self.compress = deflate_encoder()
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self.pending_rows = dict.fromkeys(names, 0)
        self.written = dict.fromkeys(names, 0)
        self.pool = ThreadPoolExecutor(threads or default_threads())

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Append n rows to every dataset (``rows``: name -> (n,) + row shape)."""
        jobs = []
        for name, ds in self.datasets.items():
            data = np.asarray(rows[name], dtype=ds.dtype)
            ds.resize(ds.shape[0] + data.shape[0], axis=0)
            self.pending[name].append(data)
            self.pending_rows[name] += data.shape[0]
            per_chunk = ds.chunks[0]
            if self.pending_rows[name] < per_chunk:
                continue
            pending = self.pending[name]
            # one pending block (the common case: blocks span many chunks) is not copied
            data = pending[0] if len(pending) == 1 else np.concatenate(pending)
            full = data.shape[0] // per_chunk * per_chunk
            jobs += [(ds, self.written[name] + k, data[k:k + per_chunk])
                     for k in range(0, full, per_chunk)]
            self.written[name] += full
            rest = data[full:].copy()        # less than a chunk; the caller may reuse its rows
            self.pending[name] = [rest] if rest.shape[0] else []
            self.pending_rows[name] = rest.shape[0]
        self._write(jobs)

    def _write(self, jobs) -> None:
        encoded = self.pool.map(lambda job: encode_chunk(job[2], self.level, self.compress), jobs)
        for (ds, offset, chunk), data in zip(jobs, encoded):
            ds.id.write_direct_chunk((offset,) + (0,) * (chunk.ndim - 1), data)

    def close(self) -> None:
        """Write the last partial chunks and stop the threads."""
        jobs = []
        for name, ds in self.datasets.items():
            if self.pending_rows[name]:
                data = np.concatenate(self.pending[name])
                padded = np.zeros(ds.chunks, dtype=ds.dtype)
                padded[:data.shape[0]] = data
                jobs.append((ds, self.written[name], padded))
                self.written[name] += data.shape[0]
                self.pending[name], self.pending_rows[name] = [], 0
        try:
            self._write(jobs)
        finally:
            self.pool.shutdown()

    def abort(self) -> None:
        self.pool.shutdown(cancel_futures=True)
