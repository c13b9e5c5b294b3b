"""VCD dumps as signal tables: signal-name maps and sampling on a strobe or a clock.

A VCD is sampled when ``valid`` (default ``eoc``, the trace export's) rises, or at rising
``clock`` edges while valid is 1; ``--map`` names the VCD signal of each table signal (one per
column with ``{c}``, or one bus split into elements of the expected width).  x/z values are
missing values, never numbers.  Every error names the dump (or the map entry).
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imcsim.verify.golden import SIGNALS
from imcsim.verify.table import SignalTable, signal_kind
from imcsim.verify.vcd import read_vcd

DEFAULT_VCD_MAP = {"valid": "eoc", "code": "code_{c}", "active_rows": "active_rows",
                   "full_scale": "full_scale"}


def parse_signal_map(items: Iterable[str] | None) -> dict[str, str]:
    """``name=signal`` pairs and/or JSON files -> {name: vcd signal}."""
    out = {}
    for item in items or ():
        p = Path(item)
        if "=" not in item and (p.suffix == ".json" or p.is_file()):
            try:
                data = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"map: cannot read {item} as JSON ({exc})") from None
            if not isinstance(data, dict):
                raise ValueError(f"map: {item} must hold an object {{name: signal}}")
            out.update({str(k): str(v) for k, v in data.items()})
            continue
        name, sep, sig = item.partition("=")
        if not sep or not name.strip() or not sig.strip():
            raise ValueError(f"map: expected name=signal or a JSON file, got {item!r}")
        out[name.strip()] = sig.strip()
    for name in out:
        if name not in ("valid", "clock") and name not in SIGNALS:
            raise ValueError(f"map: unknown name {name!r}; use valid, clock or one of "
                             f"{', '.join(SIGNALS)}")
    return out


def load_vcd_dump(path, signal_map, expected: SignalTable) -> SignalTable:
    """ACTUAL as VCD, sampled per ``signal_map`` (bus widths from ``expected``); every
    message names the dump."""
    try:
        return _vcd_table(path, signal_map, expected)
    except ValueError as exc:                         # every message names the dump
        if str(path) in str(exc) or str(exc).startswith("map:"):
            raise
        raise ValueError(f"{path}: {exc}") from None


def _vcd_table(path, signal_map, expected: SignalTable) -> SignalTable:
    changes = read_vcd(path)
    user = bool(signal_map)
    smap = dict(signal_map) if user else dict(DEFAULT_VCD_MAP)
    smap.setdefault("valid", "eoc")
    series = {name: ([t for t, _ in ch], [v for _, v in ch]) for name, ch in changes.items()}

    def need(sig):
        if sig not in series:
            raise ValueError(f"{path}: VCD has no signal {sig!r} (map it with --map)")
        return series[sig]

    vt, vv = need(smap["valid"])
    if "clock" in smap:                               # sample at rising clock edges, valid=1
        ct, cv = need(smap["clock"])
        edges = [t for i, (t, v) in enumerate(zip(ct, cv)) if v == 1 and (i == 0 or cv[i - 1] != 1)]
        samples = [t for t in edges if _value_before(vt, vv, t) == 1]
        at = _value_before
    else:                                             # sample when valid rises
        samples = [t for i, (t, v) in enumerate(zip(vt, vv)) if v == 1 and (i == 0 or vv[i - 1] != 1)]
        at = _value_at
    n = len(samples)
    tab = SignalTable(max(n, 1), source=str(path))
    tab.n = n
    for name, sig in smap.items():
        if name in ("valid", "clock"):
            continue
        kind = signal_kind(name)
        spec, _, width_txt = sig.partition(":")
        try:
            width = int(width_txt) if width_txt else expected.widths.get(name, 64)
        except ValueError:
            raise ValueError(f"map: {name}={sig}: the width after ':' must be an integer"
                             ) from None
        if not 1 <= width <= 64:
            raise ValueError(f"map: {name}={sig}: the width must lie in [1, 64]")
        if name not in expected.values:
            raise ValueError(f"map: {name}: EXPECTED has no signal {name}")
        signed = expected.signed.get(name, False)
        count = 1 if kind == "scalar" else expected.values[name].shape[1]
        if "{" in spec:                               # one VCD signal per column / output
            try:
                names = [spec.format(c=i, g=i, i=i) for i in range(count)]
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"map: {name}={sig}: use {{c}} (or {{g}}, {{i}}) for the "
                                 "column / output index") from None
            present = [nm in series for nm in names]
            if not any(present):
                if user:
                    raise ValueError(f"{path}: VCD has none of {names[0]} .. {names[-1]}")
                continue
            vals = np.zeros((n, count), dtype=np.int64)
            pres = np.zeros((n, count), dtype=bool)
            for i, nm in enumerate(names):
                if not present[i]:
                    continue
                st, sv = series[nm]
                for j, t in enumerate(samples):
                    v = at(st, sv, t)
                    # x/z (read as -1) or no value yet: not a value -- a missing one, never
                    # the number -1 (which a tolerance could pass, or a signed signal hold)
                    if v is not None and v >= 0:
                        vals[j, i] = _signed(v, width, signed)
                        pres[j, i] = True
        else:
            if spec not in series:
                if user:
                    need(spec)
                continue
            st, sv = series[spec]
            vals = np.zeros((n, count), dtype=np.int64)
            pres = np.zeros((n, count), dtype=bool)
            for j, t in enumerate(samples):
                v = at(st, sv, t)
                if v is not None and v >= 0:              # x/z or no value: missing, as above
                    v = _signed(v, 64, False)
                    for i in range(count):
                        vals[j, i] = _signed((v >> (i * width)) & ((1 << width) - 1), width,
                                             signed)
                    pres[j] = True
        tab.add(name, vals, pres)
    if not tab.values:
        raise ValueError(f"{path}: no mapped signal found in the VCD")
    return tab


def _value_at(times, values, t):
    i = bisect.bisect_right(times, t) - 1
    return values[i] if i >= 0 else None


def _value_before(times, values, t):
    i = bisect.bisect_left(times, t) - 1
    return values[i] if i >= 0 else None


def _signed(v, width, signed):
    if v is None or v < 0:
        return -1
    if isinstance(v, float):                          # a real VCD value: integers only
        if v != int(v):
            raise ValueError(f"VCD value {v} is not an integer (codes and counts are "
                             "integers)")
        v = int(v)
    if signed and width < 64 and v >> (width - 1):
        return v - (1 << width)
    return v


__all__ = ["DEFAULT_VCD_MAP", "load_vcd_dump", "parse_signal_map"]
