"""``imcsim sweep SPEC``: every run of a sweep file as a task on Dask (docs/cluster.md).

The click command object is ``sweep_command``; the main CLI registers it as ``sweep``.
"""
from __future__ import annotations

import click

from imcsim.cli.common import MismatchFound, cli_errors


def scheduler_option(fn):
    """``--scheduler ADDRESS``: join a running Dask scheduler instead of a LocalCluster."""
    return click.option(
        "--scheduler", metavar="ADDRESS",
        help="Address of a running Dask scheduler (tcp://host:8786) or its scheduler file "
             "(.json, which must exist); default: a LocalCluster here, one worker per core.")(fn)


def processes_option(fn):
    """``--processes N``: N runs at a time in local processes, without Dask."""
    return click.option(
        "--processes", type=click.IntRange(min=1),
        help="Run N runs at a time here, each in a process of its own, without Dask (a "
             "machine without the dask extra; on a GPU machine the runs share the GPU).")(fn)


def local_mode(sequential: bool, processes: int | None, scheduler, workers) -> None:
    """Refuse contradictory choices of where runs go (one line, exit 2)."""
    if sequential and processes:
        raise ValueError("--processes: runs N at a time; drop --sequential")
    if (sequential or processes) and (scheduler or workers):
        flag = "--sequential" if sequential else "--processes"
        raise ValueError(f"{flag}: runs here without Dask; drop --scheduler/--workers")
    if scheduler and workers:
        raise ValueError("--workers: sets the LocalCluster's workers; drop it with --scheduler")


@click.command("sweep")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: the sweep file's 'out', else runs/<file stem>).")
@scheduler_option
@click.option("--workers", type=click.IntRange(min=1),
              help="LocalCluster worker processes (default: one per core).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a parameter in every run (VALUE is JSON, else a string), e.g. "
                   "--set epochs=2; repeatable.")
@click.option("--rerun", is_flag=True, help="Run complete runs again instead of skipping them.")
@click.option("--dry-run", is_flag=True, help="List the runs and which are complete; run nothing.")
@click.option("--sequential", is_flag=True,
              help="Run here, one run after another, without Dask (debugging, baselines).")
@processes_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def sweep_command(spec, out_dir, scheduler, workers, assignments, rerun, dry_run, sequential,
                  processes, quiet):
    """Run every run of the sweep file SPEC (JSON or YAML) as a Dask task.

    Each run writes OUT/<run>/ (its own outputs and result.json); the table of all runs goes
    to OUT/results.csv and OUT/results.json.  Complete runs are skipped when the sweep runs
    again.  Exit status 1 when a run failed (the others still ran; the table lists them).
    """
    from imcsim.sweep import (
        dask_client,
        load_spec,
        parse_assignments,
        plan_sweep,
        run_sweep,
        stored_result,
        write_table,
    )
    local_mode(sequential, processes, scheduler, workers)
    plan = plan_sweep(load_spec(spec), out=out_dir, overrides=parse_assignments(assignments),
                      spec_path=spec)
    if dry_run:
        for run in plan.runs:
            done = not rerun and stored_result(run, plan.command) is not None
            click.echo(f"{run.name:<28} {'complete' if done else 'pending':<8} {run.folder}")
        click.echo(f"{len(plan.runs)} runs of {plan.command}; table: {plan.table_paths[0]}")
        return
    if not (sequential or processes):                # without the extra: one line, exit 2
        from imcsim.optional import require
        require("distributed", "dask", "imcsim sweep")
    bar = _progress(len(plan.runs), quiet)
    try:
        if sequential or processes:
            result = run_sweep(plan, processes=processes, rerun=rerun, on_result=bar)
        else:
            with dask_client(scheduler, workers) as client:
                result = run_sweep(plan, client=client, rerun=rerun, on_result=bar)
    finally:
        bar.close()
    csv_path, json_path = write_table(result, inputs=[spec])
    ok = len(result.records) - len(result.failed)
    click.echo(f"{plan.command} sweep: {ok}/{len(result.records)} runs ok "
               f"({len(result.skipped)} complete before), {result.seconds:.1f} s; "
               f"table {csv_path}, {json_path}")
    for doc in result.failed:
        click.echo(f"  failed {doc['name']}: {doc['error']}")
    if result.failed:
        raise MismatchFound(f"{len(result.failed)} of {len(result.records)} runs failed")


class _progress:
    """Finished runs on a progress bar: on a terminal only (``imcsim.progress.Progress``),
    silent in a pipe (the summary lines still say what ran)."""

    def __init__(self, total: int, quiet: bool):
        from imcsim.progress import Progress
        self.bar = Progress(total, "sweep", "run", enabled=not quiet)

    def __call__(self, doc: dict, done: int, total: int) -> None:
        self.bar.update(1, f"{doc['name']} {doc['status']}")

    def close(self) -> None:
        self.bar.close()
