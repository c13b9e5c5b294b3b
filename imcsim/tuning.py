"""Tuning constants of the fast paths, in one place (they change speed, never results)."""

#: Planes with at most this fraction of active rows take the CPU row gather instead of the
#: dense popcount: an estimate from instruction counts (a gathered row costs about C/32
#: vector adds, a 64-row word about 4 C scalar operations), not a tuned value.
GATHER_FRACTION = 0.25

#: CPU, cell or row-DAC mismatch: tile operations whose sub-planes have at least this fraction
#: of the tile's rows active on average take their charges from exact float64 matrix products
#: (``imcsim.charges``) instead of the row-by-row sum; below it the row gather, whose cost
#: follows the active rows, is cheaper (see docs/performance.md).
GEMM_CHARGE_FRACTION = 0.5

#: CUDA: threads per block of the count/ADC kernel and of the NMC kernel.
CUDA_THREADS_PER_BLOCK = 128

#: CUDA: the most input planes a cycle kernel keeps in registers (every format has <= 16).
CUDA_MAX_PLANES = 16

#: CPU: parallel chunks of vectors per Numba thread (several per thread balance the load when
#: sparse planes make vectors unequal in cost); at least MIN_PARALLEL_CHUNKS.
CHUNKS_PER_THREAD = 8
MIN_PARALLEL_CHUNKS = 32


def parallel_chunks() -> int:
    """How many chunks a parallel CPU kernel splits its batch into, for the current threads."""
    from numba import get_num_threads
    return max(MIN_PARALLEL_CHUNKS, CHUNKS_PER_THREAD * get_num_threads())


def vector_chunks(batch: int, bytes_per_vector: int, budget: int) -> list[tuple[int, int]]:
    """[b0, b1) chunks of a batch of ``batch`` vectors, in order, each holding at most
    ``budget`` bytes of per-vector scratch (at least one vector a chunk)."""
    step = max(1, budget // max(1, bytes_per_vector))
    return [(b, min(batch, b + step)) for b in range(0, batch, step)]
