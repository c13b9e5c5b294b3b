"""Dask for sweeps and sharded verification: clients, schedulers, worker threads (imcsim.sweep)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from imcsim.errors import typed_line
from imcsim.optional import require


# --- Dask ---------------------------------------------------------------------------------
def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                        # not on Linux
        return os.cpu_count() or 1


def _host_cores() -> tuple[str, int]:
    return socket.gethostname(), available_cores()


#: how long ``--scheduler`` waits for a scheduler to answer [s] (Dask's default is 30 s)
SCHEDULER_TIMEOUT = 20.0


def scheduler_address(scheduler: str) -> str:
    """The address of ``--scheduler``: the argument itself, or the ``address`` of a scheduler
    file (``.json``, or any existing file), read here.

    Dask's own reading of a scheduler file waits, without a word and without end, for the
    file to appear, and fails with an AssertionError on a JSON file without an address; a
    scheduler file is therefore read here, so that a wrong one fails at once with one line.
    """
    if not scheduler.strip():                     # Dask would start a LocalCluster instead
        raise ValueError("--scheduler: empty; give tcp://host:8786 or a scheduler file")
    path = Path(scheduler).expanduser()
    if not (scheduler.endswith(".json") or path.is_file()):
        return scheduler
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--scheduler: {scheduler}: no such scheduler file (`dask scheduler "
                         "--scheduler-file FILE` writes it)") from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise ValueError(f"--scheduler: {scheduler}: not a Dask scheduler file "
                         f"({typed_line(exc)})") from None
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"--scheduler: {scheduler}: not a Dask scheduler file (no 'address' "
                         "such as tcp://host:8786)")
    return address


def probe_scheduler(address: str, scheduler: str, timeout: float | None = None) -> None:
    """Refuse a tcp:// ``address`` where no Dask scheduler greets within ``timeout`` seconds
    (default :data:`SCHEDULER_TIMEOUT`).

    Dask bounds its connect but not the handshake after it: a server that accepts and stays
    silent holds ``distributed.Client`` forever.  A Dask scheduler writes its handshake as
    soon as it accepts, so a connection on which nothing arrives in time is not one.  Refused
    connections are retried until the deadline, as Dask does (a scheduler may be starting).
    Other schemes (tls://, ...) are left to Dask.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    try:
        scheme, loc = parse_address(address)
        host, port = parse_host_port(loc)
    except (ValueError, TypeError):
        return                                    # Dask's own message (caught by the caller)
    if scheme != "tcp":
        return
    timeout = SCHEDULER_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(0.1, deadline - time.monotonic())
            sock = socket.create_connection((host, port), timeout=left)
            break
        except OSError as exc:
            if time.monotonic() + 0.2 >= deadline:
                raise ValueError(f"--scheduler: {scheduler}: nothing answers at {address} "
                                 f"within {timeout:g} s ({typed_line(exc)})") from None
            time.sleep(0.2)
    with sock:
        sock.settimeout(max(0.5, deadline - time.monotonic()))
        try:
            greeting = sock.recv(1)
        except TimeoutError:
            raise ValueError(f"--scheduler: {scheduler}: {address} accepts connections but sent "
                             f"nothing in {timeout:g} s; a Dask scheduler greets at once") from None
        except OSError as exc:
            greeting, why = b"", f" ({typed_line(exc)})"
        else:
            why = ""
    if not greeting:
        raise ValueError(f"--scheduler: {scheduler}: {address} closed the connection without "
                         f"a Dask greeting{why}")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1, feature: str = "imcsim sweep") -> Iterator:
    """A ``distributed.Client``: on an existing scheduler, or on a new ``LocalCluster``.

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler (``tcp://host:8786``), or its scheduler file (a path
        ending in ``.json``, or any existing file; :func:`scheduler_address`); None starts a
        LocalCluster here, closed on exit.  A wrong one is a ValueError within
        :data:`SCHEDULER_TIMEOUT` seconds (:func:`probe_scheduler`), never a hang.
    workers : int or None
        LocalCluster worker processes (default one per available core).
    threads_per_worker : int
        LocalCluster threads per worker (tasks a worker runs at once).
    feature : str
        Named in the message when Dask is not installed.

    Yields
    ------
    distributed.Client
    """
    distributed = require("distributed", "dask", feature)
    if scheduler is not None:
        address = scheduler_address(scheduler)
        probe_scheduler(address, scheduler)
        try:
            client = distributed.Client(address=address, timeout=f"{SCHEDULER_TIMEOUT:g}s")
        except Exception as exc:
            # Dask reads whatever answers as its own frames: an HTTP server's reply becomes a
            # frame length of exabytes (MemoryError), a short reply an assertion or a decoding
            # error; none of them names the address
            raise ValueError(f"--scheduler: {scheduler}: no Dask scheduler answered at {address} "
                             f"({typed_line(exc)})") from None
        with client:
            yield client
        return
    import logging
    n = workers if workers is not None else available_cores()
    if n < 1 or threads_per_worker < 1:
        raise ValueError(f"workers: need at least one worker and thread, got {n} x "
                         f"{threads_per_worker}")
    # Numba's threads are set per task (numba.set_num_threads in execute_run), not through
    # NUMBA_NUM_THREADS: a spawned worker may import Numba before the Nanny applies its env
    # (spawn re-imports the main module, e.g. the imcsim script), and Numba refuses a changed
    # value once its threads run; setting it before the spawn would change this process too.
    # Dask's nanny.pre-spawn-environ already starts workers with OMP/MKL/OPENBLAS threads 1.
    with distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                  processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def worker_threads(client) -> dict[str, int]:
    """Numba/BLAS threads per task on each worker: its host's cores over the task slots
    (worker threads) of every worker on that host, at least 1.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    dict
        Worker address -> threads.
    """
    info = _workers(client)
    hosts = client.run(_host_cores)               # address -> (hostname, cores)
    slots: dict[str, int] = {}
    for addr, (host, _) in hosts.items():
        slots[host] = slots.get(host, 0) + int(info.get(addr, {}).get("nthreads", 1))
    return {addr: max(1, cores // max(1, slots[host])) for addr, (host, cores) in hosts.items()}


def _workers(client) -> dict:
    """Worker address -> the scheduler's information on it (every worker)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:                             # distributed before 2025
        return client.scheduler_info()["workers"]


def task_slots(client) -> int:
    """Tasks the cluster runs at once now: the sum of its workers' threads (at least 1)."""
    return max(1, sum(int(w.get("nthreads", 1)) for w in _workers(client).values()))
