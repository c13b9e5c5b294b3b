"""Sweeps: many runs of one imcsim command over configs x seeds, as tasks on Dask distributed.

A sweep file (JSON, or YAML with the ``dask`` extra, which brings PyYAML) names a base command
and the runs' parameters (docs/cluster.md)::

    {"command": "train",
     "out": "runs/results",
     "base": {"model": "small-cnn", "epochs": 8},
     "configs": {"a": {"label": "FP32", "imc": ""},
                 "b": {"label": "all on IMC", "imc": "all"}},
     "grid": {"seed": [0, 1, 2]}}

Every run is ``base``, overridden by one entry of ``configs`` (a mapping name -> overrides, or
a list; ``label`` is free text for the table), overridden by one point of the cartesian
``grid``; runs are named ``<config>-<key><value>...`` (``a-seed0``).  Parameters are checked
for every run before anything runs (:func:`plan_sweep`).

Execution (:func:`run_sweep`): every pending run is one task on a Dask client
(:func:`dask_client`: a ``LocalCluster`` with one single-threaded worker process per core by
default, or an existing scheduler); each task limits Numba's (and the BLAS') threads to its
share of the host's cores.  Each run writes its own folder ``OUT/<name>/`` and, once finished,
``OUT/<name>/result.json`` (written by the client, all-or-nothing).  A run whose
``result.json`` says ``ok`` with the same command and parameters is complete and is skipped
when the sweep runs again; a failed run (an exception, or a worker that died running it more
often than the scheduler's ``distributed.scheduler.allowed-failures``) is recorded as failed
and never stops the others.  :func:`write_table` gathers every run into ``OUT/results.csv``
and ``OUT/results.json``.

The commands (:data:`COMMANDS`): ``train`` (``imcsim.training``), ``mvm`` (``Macro.mvm`` on
seeded random operands) and ``energy`` (``imcsim.energy.energy_report``); a task calls the
library, never a subprocess, so a run in a sweep gives the result of the same run alone.
:func:`register_command` adds one.
"""
from imcsim.sweep.cluster import (
    SCHEDULER_TIMEOUT,
    available_cores,
    dask_client,
    probe_scheduler,
    scheduler_address,
    task_slots,
    worker_threads,
)
from imcsim.sweep.commands import COMMANDS, PER_LAYER_METRICS, Command, register_command
from imcsim.sweep.execute import SweepResult, execute_run, run_sweep, stored_result, task_threads
from imcsim.sweep.spec import (
    MAX_RUNS,
    RESULT_NAME,
    RUN_ORDERS,
    SPEC_KEYS,
    SWEEP_FORMAT,
    SWEEP_VERSION,
    TABLE_CSV,
    TABLE_JSON,
    Run,
    SweepPlan,
    check_sweep_size,
    load_spec,
    plan_sweep,
)
from imcsim.sweep.table import parse_assignments, read_table, table_rows, write_table

__all__ = ["SCHEDULER_TIMEOUT", "available_cores", "dask_client", "probe_scheduler",
           "scheduler_address", "task_slots", "worker_threads", "COMMANDS", "PER_LAYER_METRICS",
           "Command", "register_command", "SweepResult", "execute_run",
           "run_sweep", "stored_result", "task_threads", "MAX_RUNS", "RESULT_NAME", "RUN_ORDERS",
           "SPEC_KEYS", "SWEEP_FORMAT", "SWEEP_VERSION", "TABLE_CSV", "TABLE_JSON", "Run",
           "SweepPlan", "check_sweep_size", "load_spec", "plan_sweep", "parse_assignments",
           "read_table", "table_rows", "write_table"]
