"""Running a sweep: one run as a task, the skip-and-resume rules, the loop over a client
(imcsim.sweep)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from imcsim.atomic import write_text_atomic
from imcsim.errors import typed_line
from imcsim.optional import require
from imcsim.sweep._util import _json_default
from imcsim.sweep.cluster import task_slots, worker_threads
from imcsim.sweep.commands import COMMANDS, Command
from imcsim.sweep.spec import RESULT_NAME, SWEEP_FORMAT, SWEEP_VERSION, Run, SweepPlan
from imcsim.version import __version__


# --- results of runs ----------------------------------------------------------------------
def stored_result(run: Run, command: str) -> dict | None:
    """The complete result of ``run`` left by an earlier sweep, else None.

    Complete: ``<folder>/result.json`` exists, says ``ok`` and holds the same command and
    parameters.
    """
    path = run.folder / RESULT_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(doc, dict) and doc.get("status") == "ok" and doc.get("command") == command
            and isinstance(doc.get("params"), dict)):
        return None
    if doc["params"] == run.params:
        return doc
    # written by an older imcsim whose commands had fewer parameters: the same run if its
    # parameters, completed with today's defaults, are this run's
    try:
        if COMMANDS[command].normalize(dict(doc["params"])) == run.params:
            return doc
    except (ValueError, TypeError, KeyError):
        pass
    return None


def _record(run: Run, command: str, status: str, **extra) -> dict:
    doc = {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "name": run.name,
           "config": run.config, "label": run.label, "grid": run.grid, "command": command,
           "params": run.params, "status": status, "result": None, "error": None,
           "seconds": None, "worker": None, "imcsim_version": __version__}
    doc.update(extra)
    return doc


def _this_worker() -> str:
    """This task's Dask worker address, else host:pid."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def task_threads(threads: int | Mapping | None) -> Iterator[int | None]:
    """Limit Numba's and the BLAS' threads in this (task) thread, restoring them on exit.

    Parameters
    ----------
    threads : int or mapping or None
        Threads; or a mapping worker address -> threads (:func:`worker_threads`), looked up
        with this task's worker (1 if absent); None leaves everything as it is.

    Yields
    ------
    int or None
        The limit applied.
    """
    if isinstance(threads, Mapping):
        threads = threads.get(_this_worker(), 1)
    if not threads:
        yield None
        return
    import numba
    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield n
        else:
            with threadpool_limits(limits=n):
                yield n
    finally:
        numba.set_num_threads(before)


def execute_run(command: Command, run: Run, threads: int | Mapping | None = None) -> dict:
    """Run one run here and return its record (a failure is a record, never an exception).

    Parameters
    ----------
    command : Command
        The sweep's command.
    run : Run
        The run; its folder is created.
    threads : int or mapping or None
        Numba/BLAS threads for this run: an int, a mapping worker address -> int (looked up
        with this task's worker), or None to leave the process's settings alone.

    Returns
    -------
    dict
        The record: name, config, label, grid, command, params, status ("ok" or "failed"),
        result, error (one line), traceback, seconds (wall time of the run) and worker.
    """
    worker = _this_worker()
    t0 = time.perf_counter()
    try:
        run.folder.mkdir(parents=True, exist_ok=True)
        with task_threads(threads):
            result = command.run(run.params, run.folder)
        result = json.loads(json.dumps(result, default=_json_default))
    except Exception as exc:                      # the run failed: report it, lose nothing else
        return _record(run, command.name, "failed", error=typed_line(exc),
                       traceback=traceback.format_exc(), seconds=time.perf_counter() - t0,
                       worker=worker)
    return _record(run, command.name, "ok", result=result, seconds=time.perf_counter() - t0,
                   worker=worker)



# --- running a sweep ----------------------------------------------------------------------
@dataclass
class SweepResult:
    """Records of every run of a plan, in plan order; ``skipped``: names found complete."""

    plan: SweepPlan
    records: list[dict]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        """Records of the runs that failed."""
        return [r for r in self.records if r["status"] != "ok"]


def run_sweep(plan: SweepPlan, *, client=None, processes: int | None = None,
              rerun: bool = False,
              on_result: Callable[[dict, int, int], None] | None = None) -> SweepResult:
    """Run every pending run of a plan: as Dask tasks on ``client``, in ``processes`` local
    processes, or here one by one.

    Parameters
    ----------
    plan : SweepPlan
        From :func:`plan_sweep`.
    client : distributed.Client or None
        Where the tasks run (see :func:`dask_client`); None runs them here.
    processes : int or None
        Without a client: run this many runs at a time, each in a fresh process of its own
        (spawned, so each can open its own CUDA context: on a GPU machine several runs share
        the GPU), with ``cores // processes`` Numba/BLAS threads each; no Dask needed.  None
        runs them in this process, one after another, with the process's thread settings (a
        baseline, and for debugging).
    rerun : bool
        Run complete runs again instead of skipping them.
    on_result : callable(record, done, total) or None
        Called on this thread after every run that finishes (and once per skipped run):
        ``done`` of ``total`` runs are done.

    Returns
    -------
    SweepResult
        Every run's record in plan order; each finished run's record is also in
        ``<run folder>/result.json`` (written as it arrives, all-or-nothing).

    Notes
    -----
    On a client, as many runs are in flight as the cluster has worker threads (re-read as runs
    finish, so workers that join get work): a run never waits behind another on a busy
    worker, and a worker that dies takes only its own run with it.  Dask reschedules that run
    on another worker; after ``distributed.scheduler.allowed-failures`` deaths (default 3) it
    is recorded as failed (``KilledWorker``).
    """
    t0 = time.perf_counter()
    command = COMMANDS[plan.command]
    plan.out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    skipped = []
    if not rerun:
        for run in plan.runs:
            doc = stored_result(run, plan.command)
            if doc is not None:
                records[run.name] = doc
                skipped.append(run.name)
    total = len(plan.runs)
    done = 0
    for name in skipped:
        done += 1
        if on_result is not None:
            on_result(records[name], done, total)
    pending = [r for r in plan.execution_order() if r.name not in records]

    def finish(run: Run, doc: dict) -> None:
        nonlocal done
        run.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.folder / RESULT_NAME,
                          json.dumps(doc, indent=1, default=_json_default) + "\n", RESULT_NAME)
        records[run.name] = doc
        done += 1
        if on_result is not None:
            on_result(doc, done, total)

    if client is None and processes:
        _run_in_processes(command, pending, processes, finish)
    elif client is None:
        for run in pending:
            finish(run, execute_run(command, run, None))
    elif pending:
        distributed = require("distributed", "dask", "imcsim sweep")
        threads = worker_threads(client)
        queue = list(pending)
        inflight: dict = {}
        running = distributed.as_completed()

        def submit_more() -> None:                 # one task per worker thread, no more
            while queue and len(inflight) < task_slots(client):
                run = queue.pop(0)
                fut = client.submit(execute_run, command, run, threads, pure=False,
                                    key=f"imcsim-sweep-{run.name}-{os.getpid()}-"
                                        f"{time.time_ns()}")
                inflight[fut] = run
                running.add(fut)

        try:
            submit_more()
            for fut in running:
                run = inflight.pop(fut)
                if fut.status == "finished":
                    doc = fut.result()
                else:                              # the task never returned: a worker died
                    try:
                        exc = fut.exception()
                    except Exception as e:         # cancelled futures raise here
                        exc = e
                    doc = _record(run, plan.command, "failed", error=typed_line(exc))
                fut.release()
                finish(run, doc)
                submit_more()
        except BaseException:
            client.cancel(list(inflight))
            raise
    ordered = [records[r.name] for r in plan.runs]
    return SweepResult(plan, ordered, skipped, time.perf_counter() - t0)


def _run_in_processes(command: Command, pending: list[Run], processes: int,
                      finish: Callable[[Run, dict], None]) -> None:
    """Run ``pending`` in plan order, ``processes`` at a time, each in a fresh spawned process
    (one run per process: a run's compiled state, CUDA context and memory leave with it)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // processes)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=context,
                               **({"max_tasks_per_child": 1} if _POOL_RECYCLES else {}))
    try:
        futures = {pool.submit(execute_run, command, run, threads): run for run in pending}
        for fut in as_completed(futures):
            run = futures[fut]
            try:
                doc = fut.result()
            except Exception as exc:                # the process died (BrokenProcessPool)
                doc = _record(run, command.name, "failed", error=typed_line(exc))
            finish(run, doc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: ProcessPoolExecutor's max_tasks_per_child exists from Python 3.11; on 3.10 a process runs
#: several runs in turn (their results are the same: a run sets its own seeds and threads)
_POOL_RECYCLES = sys.version_info >= (3, 11)
