"""Print the `imcsim train` argument lists of a training sweep's runs of one seed, one per line.

Used where the sweep's runs go out without Dask: scripts/device_check.sh runs Table III's configs
in parallel on a GPU machine (which has no Dask), and a CPU queue can pin each run to a core.
The flags are derived from the sweep file, not written a second time, so a run started this way
has the sweep's parameters and ``imcsim sweep SPEC`` later recognises it as its own.

Usage::

    python scripts/sweep_commands.py SPEC SEED [--set KEY=VALUE ...]

Each line is ``NAME<TAB>ARGS`` where NAME is the sweep's run name (``<config>-seed<SEED>``) and
ARGS the shell-quoted options of ``imcsim train`` (without ``--out``).
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

#: sweep keys whose CLI flag is not the key with '-' for '_'
FLAG_OF = {"dataset": "--data"}
#: keys that label a run and are no parameter
NOT_PARAMETERS = {"label"}


def train_args(params: dict) -> list[str]:
    """The option list of ``imcsim train`` for one run's merged sweep parameters."""
    args: list[str] = []
    for key, value in params.items():
        if key in NOT_PARAMETERS:
            continue
        flag = FLAG_OF.get(key, "--" + key.replace("_", "-"))
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path, help="a sweep file of command 'train' (JSON)")
    ap.add_argument("seed", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter in every run (VALUE is JSON, else a string)")
    args = ap.parse_args()
    spec = json.loads(args.spec.read_text())
    if spec.get("command") != "train":
        ap.error(f"{args.spec}: not a training sweep (command {spec.get('command')!r})")
    overrides = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            ap.error(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    for name, config in spec["configs"].items():
        params = {**spec["base"], **config, "seed": args.seed, **overrides}
        print(f"{name}-seed{args.seed}\t{shlex.join(train_args(params))}")


if __name__ == "__main__":
    main()
