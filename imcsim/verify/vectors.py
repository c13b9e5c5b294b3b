"""Test vectors for RTL and silicon: stimulus and expected response of every array cycle.

``make_operands`` builds seeded random operands with corner cases; ``write_vectors`` runs the
golden model (``imcsim.verify.golden``) over them and writes a vectors folder:

- ``vectors.h5``   every field of every array cycle (HDF5, unpacked), plus operands and results;
- ``*.hex``        one file per field, one line per array cycle (``weights.hex``: one line per
                   stored row), for Verilog ``$readmemh``;
- ``manifest.json`` every hex file's depth and word width, and each field's bit position
                   (lsb), width, element count, signedness and meaning.

File formats: docs/golden-model.md.  The folder's files are written all-or-nothing
(``imcsim.atomic``): a failed run leaves the folder as it was.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imcsim.atomic import (
    AtomicOutputs,
    H5Writer,
    check_schema_version,
    partial_parts,
    remove_stale_partials_in,
)
from imcsim.mapping import select_full_scale
from imcsim.operands import random_operands
from imcsim.verify.golden import GoldenModel, pack_decisions
from imcsim.version import __version__

VECTORS_FORMAT = "imcsim-vectors"
VECTORS_VERSION = "1.0"
H5_NAME = "vectors.h5"
MANIFEST_NAME = "manifest.json"


# --- operands ----------------------------------------------------------------------------
@dataclass
class Operands:
    """X (B x M), W (M x N) and a label per vector saying which case it exercises."""

    X: np.ndarray
    W: np.ndarray
    labels: list[str] = field(default_factory=list)


def _values_with_plane_bit(x_format, plane):
    """For a binary format: (values whose bit in ``plane`` is 0, values whose bit is 1)."""
    lim = x_format.max_value
    values = np.arange(-lim, lim + 1)
    bits, _ = x_format.encode(values)
    return values[bits[:, plane] == 0], values[bits[:, plane] == 1]


def _code_boundary_counts(active: int, full_scale: int, top: int) -> list:
    """Counts in [1, active] on ADC code boundaries: first those exactly on one
    (count * L == F * code, where the comparator's >= decides), largest first, then the first
    count of every other reachable code."""
    exact = [k for k in range(active, 0, -1) if (k * top) % full_scale == 0]
    firsts = sorted({-(-j * full_scale // top) for j in range(1, top + 1)}
                    - set(exact), reverse=True)
    return exact + [k for k in firsts if k <= active] or [active]


def corner_case_vectors(golden: GoldenModel, rng: np.random.Generator,
                        n_boundary: int = 6) -> list[tuple[str, np.ndarray]]:
    """Corner-case input vectors for a golden model's geometry and Vref mode.

    Returns [(label, x)]: all rows masked (zero vector), all rows active, exactly L / L+1 (and,
    in dual mode, dual_low / dual_low+1) active rows, column counts on ADC code boundaries
    (count * L == F * code, where the comparator's >= decides) and just below them, and
    vectors aligned with (and against) one output's weights, which drive its NMC accumulator
    to its extremes (saturation when ``acc_bits`` is small).
    """
    c, xf = golden.config, golden.x_format
    M = golden.plan.inner
    R = min(M, c.rows)                             # rows of row tile 0
    radix4 = xf.kind == "radix4"
    vref = golden.vref if golden.vref is not None else c.vref
    L = c.top_code
    top_e = xf.exponent_planes - 1 if radix4 else None
    # multi-level rows (docs/hardware-model.md 4.8): a cycle's A and counts are level sums,
    # so the active-row and code-boundary constructions below (binary rows) do not apply
    binary_rows = not xf.multi_level
    out = []

    def radix4_value(plane, sign):
        return sign * float(4.0 ** plane) / xf.denominator

    def nonzero_binary(n):
        v = rng.integers(1, xf.max_value + 1, n)
        return v * rng.choice([-1, 1], n)

    # 1. every row masked: radix-4 zero is masked in every plane; binary zero only with
    #    mask_zero_inputs (otherwise it is the all-(-1)/all-(+1) pattern of the encoding).
    out.append(("all_masked" if radix4 or c.mask_zero_inputs or xf.multi_level else "zero",
                np.zeros(M)))
    # 2. every row active
    if radix4:
        x = np.array([radix4_value(top_e, s) for s in rng.choice([-1, 1], M)])
    else:
        x = nonzero_binary(M).astype(np.float64)
    out.append(("all_active", x))
    # 3. exactly A active rows for the thresholds of the ADC and the Vref modes
    if binary_rows and (radix4 or c.mask_zero_inputs):
        counts = {L: "active_L", L + 1: "active_L_plus_1"}
        if vref.mode.value == "dual":
            counts.setdefault(vref.dual_low, "active_dual_low")
            counts.setdefault(vref.dual_low + 1, "active_dual_low_plus_1")
        for a, label in sorted(counts.items()):
            if a > R:
                continue
            rows = rng.permutation(R)[:a]
            x = np.zeros(M)
            if radix4:
                plane = int(rng.integers(0, xf.n_planes))
                x[rows] = [radix4_value(plane, s) for s in rng.choice([-1, 1], a)]
            else:
                x[rows] = nonzero_binary(a)
            out.append((f"{label}={a}", x))
    # 3b. multi-level rows: every row at the DAC's top level of cycle 0, and cycle 0's level
    #     sum A exactly L and L + 1 (the variable Vref's threshold), from top-level and
    #     level-1 rows
    if not binary_rows:
        D = xf.top_level
        if radix4:
            top_value = 4.0 ** (xf.per_cycle - 1) / xf.denominator    # exponent E-1: level D
            unit_value = 1.0 / xf.denominator                          # exponent 0: level 1
        else:
            top_value = float(min(D, xf.max_value))
            unit_value = 1.0
        signs = rng.choice([-1, 1], M)
        out.append(("all_top_level", signs * top_value))
        for a, label in ((L, "level_sum_L"), (L + 1, "level_sum_L_plus_1")):
            n_top, rest = divmod(a, int(round(top_value / unit_value)))   # a top row's level
            if n_top + rest > R:
                continue
            rows = rng.permutation(R)[:n_top + rest]
            x = np.zeros(M)
            x[rows[:n_top]] = top_value
            x[rows[n_top:]] = unit_value
            out.append((f"{label}={a}", x * rng.choice([-1, 1], M)))
    # 4. column counts on code boundaries (and one below), targeted at one column and plane
    wcols = golden.stored_columns(0, 0)             # (R, C)
    n_cols = wcols.shape[1]
    for i in range(n_boundary if binary_rows else 0):
        col = int(rng.integers(0, n_cols))
        plane = int(rng.integers(0, xf.n_planes))
        a = R                                      # active rows of tile 0 in this plane
        if (radix4 or c.mask_zero_inputs) and i % 3:
            a = min(R, L) if i % 3 == 1 else int(rng.integers(1, R + 1))
        fs = int(select_full_scale(np.array([a]), vref, L)[0])
        boundary = _code_boundary_counts(a, fs, L)
        k = boundary[i // 2] if i // 2 < len(boundary) else int(rng.choice(boundary))
        if i % 2 == 1:
            k = max(0, k - 1)                      # just below the boundary
        active = np.zeros(R, dtype=bool)
        active[rng.permutation(R)[:a]] = True
        match = np.zeros(R, dtype=bool)
        match[rng.permutation(np.nonzero(active)[0])[:k]] = True
        want = np.where(match, wcols[:, col], 1 - wcols[:, col]).astype(np.uint8)
        x = np.zeros(M)
        if radix4:
            x[:R] = [radix4_value(plane, 1 if b else -1) if on else 0.0
                     for b, on in zip(want, active)]
        else:
            zeros, ones = _values_with_plane_bit(xf, plane)
            if c.mask_zero_inputs:
                zeros, ones = zeros[zeros != 0], ones[ones != 0]
            x[:R] = np.where(want == 1, rng.choice(ones, R), rng.choice(zeros, R))
            x[:R][~active] = 0
        if M > R:
            x[R:] = x[rng.integers(0, R, M - R)]
        out.append((f"code_boundary:col={col},plane={plane},count={k},F={fs}", x))
    # 5. aligned / anti-aligned with an output's weights: extreme accumulators (saturation)
    W = golden.weights
    wvals = W.values                               # (M, N) stored values
    for n, sign in ((0, 1), (golden.plan.outputs - 1, -1)):
        s = np.where(wvals[:, n] >= 0, 1, -1) * sign
        x = (np.array([radix4_value(top_e, v) for v in s]) if radix4
             else (s * xf.max_value).astype(np.float64))
        out.append((f"nmc_extreme:output={n},sign={'+' if sign > 0 else '-'}", x))
    return out


def make_operands(config, x_format, w_format, *, inner: int, outputs: int, n_random: int = 8,
                  seed: int = 0, corners: bool = True, density: float | None = None,
                  vref=None, W: np.ndarray | None = None,
                  X: np.ndarray | None = None) -> Operands:
    """Seeded random operands plus corner cases (docs/golden-model.md).

    W and X may be given (arrays); what is missing is drawn from ``seed``.  Corner cases are
    appended only when ``corners`` (they need W, which is drawn first).
    """
    rng = np.random.default_rng(seed)
    if density is None:
        density = 0.3 if x_format.kind == "radix4" else 1.0
    if W is None:
        _, W = random_operands(rng, x_format, w_format, 1, inner, outputs, density)
    W = np.asarray(W)
    labels, rows = [], []
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
        rows.extend(X)
        labels.extend(["given"] * X.shape[0])
    if corners:
        golden = GoldenModel(config, W, w_format, x_format, vref=vref)
        for label, x in corner_case_vectors(golden, rng):
            labels.append(label)
            rows.append(np.asarray(x, dtype=np.float64))
    if X is None and n_random > 0:
        Xr, _ = random_operands(rng, x_format, w_format, n_random, W.shape[0], W.shape[1],
                                density)
        rows.extend(np.asarray(Xr, dtype=np.float64))
        labels.extend(["random"] * n_random)
    if not rows:
        raise ValueError("vectors: no input vectors (give X, random vectors or corner cases)")
    return Operands(np.stack(rows), W, labels)


# --- hex packing ---------------------------------------------------------------------------
def pack_words(values, width: int) -> list[int]:
    """Pack rows of integers (n, k) into one Python int per row: element i at bits
    [i*width, (i+1)*width), two's complement for negative values."""
    arr = np.asarray(values, dtype=np.int64)
    arr = arr.reshape(arr.shape[0], -1)
    mask = (1 << width) - 1
    out = []
    for row in arr.tolist():
        word = 0
        for i, v in enumerate(row):
            word |= (int(v) & mask) << (i * width)
        out.append(word)
    return out


def unpack_words(words: Sequence[int], count: int, width: int,
                 signed: bool = False) -> np.ndarray:
    """Inverse of ``pack_words``: int64 (n, count)."""
    out = np.zeros((len(words), count), dtype=np.int64)
    mask = (1 << width) - 1
    for j, word in enumerate(words):
        for i in range(count):
            v = (int(word) >> (i * width)) & mask
            if signed and v >> (width - 1):
                v -= 1 << width
            out[j, i] = v
    return out


def signed_width(values) -> int:
    """Bits of a two's-complement register that holds every value (at least 2)."""
    arr = np.asarray(values, dtype=np.int64)
    if not arr.size:
        return 2
    hi = max(int(arr.max()), -int(arr.min()) - 1, 0)
    return max(2, hi.bit_length() + 1)


def read_hex(path) -> list[int]:
    """Words of a $readmemh file (comments and blank lines skipped).

    A file that is not text or a line that is not one hex word raises ValueError naming the
    file (and the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text hex file (byte 0x{exc.object[exc.start]:02x} at "
                         f"offset {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    words = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("//", 1)[0].strip()
        if line:
            try:
                words.append(int(line.replace("_", ""), 16))
            except ValueError:
                raise ValueError(f"{path}: line {number}: {line[:40]!r} is not a hex word "
                                 "(x and z digits are not supported)") from None
    return words


def _write_hex(path: Path, words: list[int], word_bits: int, comment: str) -> int:
    digits = max(1, -(-word_bits // 4))
    with open(path, "w") as fh:
        fh.write(f"// {comment}\n")
        fh.writelines(f"{w:0{digits}x}\n" for w in words)
    return digits


# --- the vectors folder ---------------------------------------------------------------------
def run_golden(config, W, X, x_format, w_format, *, seed: int = 0, vref=None,
               vector_offset: int = 0) -> tuple[GoldenModel, list[dict[str, Any]]]:
    """Run the golden model over every vector; returns (golden, records).

    ``vector_offset`` is the global index of X's first vector (the noise is keyed by it), for
    a shard of a larger X (``imcsim.verify.shard``).
    """
    golden = GoldenModel(config, W, w_format, x_format, seed=seed, vref=vref,
                         vector_offset=vector_offset)
    golden.load_vectors(X)
    return golden, golden.run()


def cycle_table(golden: GoldenModel, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Records -> dict of int arrays, one row per array cycle, padded to full tiles.

    Padding: rows past the tile's rows are 0 (inactive); columns past ``n_columns`` and
    outputs with ``output_index`` -1 are 0.
    """
    c, plan = golden.config, golden.plan
    n = len(records)
    R = min(plan.inner, c.rows)
    G = min(plan.outputs_per_tile, plan.outputs)
    Kw, Nb = plan.weight_planes, c.adc_bits
    C = G * Kw
    tab = {k: np.zeros(n, dtype=np.int64) for k in
           ("cycle", "tile_row", "tile_col", "vector", "plane", "tile_cycle", "clear",
            "group_done", "x_plane_weight", "scale_fx", "active_rows", "full_scale",
            "n_columns", "clipped")}
    tab["row_input"] = np.zeros((n, R), dtype=np.uint8)
    tab["row_mask"] = np.zeros((n, R), dtype=np.uint8)
    tab["row_level"] = np.zeros((n, R), dtype=np.uint8)
    tab["level_sum"] = np.zeros(n, dtype=np.int64)
    for name in ("column_count", "column_value", "code", "sar_decision_packed"):
        tab[name] = np.zeros((n, C), dtype=np.int64)
    tab["sar_trial"] = np.zeros((n, C, Nb), dtype=np.int64)
    tab["sar_decision"] = np.zeros((n, C, Nb), dtype=np.uint8)
    tab["output_index"] = np.full((n, G), -1, dtype=np.int64)
    tab["nmc_acc"] = np.zeros((n, G), dtype=np.int64)
    tab["nmc_steps"] = np.zeros((n, G, Kw), dtype=np.int64)
    tab["y_int"] = np.zeros((n, G), dtype=np.int64)
    for i, r in enumerate(records):
        for k in ("cycle", "tile_row", "tile_col", "vector", "plane", "tile_cycle", "clear",
                  "group_done", "x_plane_weight", "scale_fx", "active_rows", "full_scale",
                  "clipped"):
            tab[k][i] = int(r[k])
        cols, rows, outs = len(r["code"]), len(r["row_input"]), len(r["output_index"])
        tab["n_columns"][i] = cols
        tab["row_input"][i, :rows] = r["row_input"]
        tab["row_mask"][i, :rows] = r["row_mask"]
        tab["row_level"][i, :rows] = r["row_level"]
        tab["level_sum"][i] = int(r["level_sum"])
        tab["column_count"][i, :cols] = r["column_count"]
        tab["column_value"][i, :cols] = r["column_value"]
        tab["code"][i, :cols] = r["code"]
        tab["sar_trial"][i, :cols] = r["sar_trial"]
        tab["sar_decision"][i, :cols] = r["sar_decision"]
        tab["sar_decision_packed"][i, :cols] = pack_decisions(r["sar_decision"])
        tab["output_index"][i, :outs] = r["output_index"]
        tab["nmc_acc"][i, :outs] = r["nmc_acc"]
        tab["nmc_steps"][i, :outs] = r["nmc_steps"]
        if r["y_int_group"] is not None:
            tab["y_int"][i, :outs] = r["y_int_group"]
    return tab


def _field(name, lsb, width, meaning, count=1, signed=False):
    return {"name": name, "lsb": lsb, "width": width, "count": count, "stride": width,
            "signed": signed, "meaning": meaning}


def hex_layout(golden: GoldenModel, tab: dict[str, np.ndarray]) -> list[tuple]:
    """The hex files: [(file, direction, fields, per-line data {field: (n, count) array})]."""
    c, plan = golden.config, golden.plan
    R = tab["row_input"].shape[1]
    C = tab["code"].shape[1]
    G = tab["nmc_acc"].shape[1]
    Nb = c.adc_bits
    top_level = golden.x_format.top_level            # level units (hardware-model.md 4.8)
    cnt_bits = (c.rows * top_level).bit_length()     # counts 0..rows*D: $clog2(rows*D + 1)
    fs_bits = max(1, (c.rows * top_level).bit_length())
    scale_bits = max(1, int(tab["scale_fx"].max(initial=1)).bit_length())
    pw_bits = max(1, int(golden.x_plane_weights.max()).bit_length() - 1).bit_length()
    x_shift = np.array([int(w).bit_length() - 1 for w in tab["x_plane_weight"]])
    cv_bits = signed_width(tab["column_value"])
    files = []

    # ctrl word: clear | group_done | plane | x_shift | tile_row | tile_col | vector
    plane_bits = max(1, (golden.n_planes - 1).bit_length())
    t_bits = max(1, (plan.row_tiles - 1).bit_length())
    u_bits = max(1, (plan.col_tiles - 1).bit_length())
    v_bits = max(1, int(tab["vector"].max(initial=0)).bit_length())
    ctrl, lsb = [], 0
    for name, width, meaning, data in (
            ("clear", 1, ("1: the group's accumulators start from 0 in this cycle "
                          "(first row tile, plane 0 of a vector)"), tab["clear"]),
            ("group_done", 1, ("1: after this cycle the group's outputs of this vector are "
                               "final (last row tile, last plane); y_int.hex is valid"),
             tab["group_done"]),
            ("plane", plane_bits, "input plane p (serial cycle within the vector)", tab["plane"]),
            ("x_shift", pw_bits, "log2 of the input plane weight pw_x[p] (the NMC's shift)",
             x_shift),
            ("tile_row", t_bits, "row tile t (which stored rows)", tab["tile_row"]),
            ("tile_col", u_bits, "column tile u (which outputs)", tab["tile_col"]),
            ("vector", v_bits, "global vector index b", tab["vector"])):
        ctrl.append((_field(name, lsb, width, meaning), data))
        lsb += width
    files.append(("ctrl.hex", "stimulus", ctrl))
    files.append(("row_input.hex", "stimulus", [(
        _field("row_input", 0, 1, "row input bit of row r at bit r (1 = +1, 0 = -1); rows "
               "past the tile's rows are 0", count=R), tab["row_input"])]))
    files.append(("row_mask.hex", "stimulus", [(
        _field("row_mask", 0, 1, "row r active (1) or masked (0) at bit r", count=R),
        tab["row_mask"])]))
    if top_level > 1:
        files.append(("row_level.hex", "stimulus", [(
            _field("row_level", 0, c.input_bits, "row r's DAC level d at bits "
                   "[r*width, (r+1)*width), width = the config's input_bits (0 = masked; "
                   "docs/hardware-model.md 4.8)", count=R), tab["row_level"])]))
        files.append(("level_sum.hex", "expected", [(
            _field("level_sum", 0, cnt_bits, "A: the sum of the row levels (the cycle's "
                   "reach, in level units; the NMC subtracts it)"), tab["level_sum"])]))
    files.append(("active_rows.hex", "expected", [(
        _field("active_rows", 0, c.rows.bit_length(), "number of active rows (A for binary "
               "rows; with multi-level rows the rows driven at a non-zero level, A is "
               "level_sum.hex)"), tab["active_rows"])]))
    files.append(("full_scale.hex", "expected", [(
        _field("full_scale", 0, fs_bits, "F: ADC full scale of the cycle in rows, or level "
               "units with multi-level rows (Vref,p = F * vdd / (rows * D))"),
        tab["full_scale"])]))
    files.append(("scale_fx.hex", "expected", [(
        _field("scale_fx", 0, scale_bits, f"NMC scale ((F << (S+1)) + L) // (2L), "
               f"S = {c.nmc.scale_frac_bits}"), tab["scale_fx"])]))
    files.append(("column_count.hex", "expected", [(
        _field("column_count", 0, cnt_bits, "column c: active cells with XNOR = 1 (weighted "
               "by their row levels with multi-level rows), element c at bits "
               "[c*width, (c+1)*width)", count=C), tab["column_count"])]))
    files.append(("column_value.hex", "expected", [(
        _field("column_value", 0, cv_bits, "column c: charge-shared sampled value in rows * "
               "2**-20 (ideal: count << 20)", count=C, signed=True), tab["column_value"])]))
    files.append(("code.hex", "expected", [(
        _field("code", 0, Nb, "column c: ADC code", count=C), tab["code"])]))
    files.append(("sar_decision.hex", "expected", [(
        _field("sar_decision", 0, Nb, "column c: comparator decisions, bit Nb-1-s = step s "
               "(MSB first); equals the code of an ideal conversion", count=C),
        tab["sar_decision_packed"])]))
    files.append(("sar_trial.hex", "expected", [(
        _field("sar_trial", 0, Nb, "element c*Nb + s: trial code of SAR step s of column c",
               count=C * Nb), tab["sar_trial"].reshape(len(tab["cycle"]), -1))]))
    files.append(("nmc_acc.hex", "expected", [(
        _field("nmc_acc", 0, c.nmc.acc_bits, "output g of the group (columns g*Kw .. "
               "g*Kw+Kw-1): NMC accumulator after this cycle, two's complement", count=G,
               signed=True), tab["nmc_acc"])]))
    files.append(("y_int.hex", "expected", [(
        _field("y_int", 0, c.nmc.out_bits, "output g: output register y_int (valid when "
               "ctrl.group_done, else 0), two's complement", count=G, signed=True),
        tab["y_int"])]))
    return files


def cross_check_device(golden, X, W, x_format, w_format, seed, vref, device: str,
                       expected: np.ndarray | None = None) -> None:
    """Run the fast path on ``device``; RuntimeError unless it equals the golden outputs
    (``expected`` y_int, default the golden model's)."""
    from imcsim.macro import Macro
    fast = Macro(golden.config, device=device).mvm(np.asarray(X), np.asarray(W), x_format,
                                                    w_format, seed=seed, vref=vref)
    if expected is None:
        expected = golden.expected_outputs()["y_int"]
    got = np.asarray(fast.y_int if not hasattr(fast.y_int, "get") else fast.y_int.get())
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)[0]
        raise RuntimeError(f"device {device}: fast path y_int{tuple(bad)} = {got[tuple(bad)]} "
                           f"differs from the golden model's {expected[tuple(bad)]}")


def write_vectors(outdir, config, W, X, x_format, w_format, *, seed: int = 0, vref=None,
                  labels: Iterable[str] | None = None, force: bool = False,
                  inputs: Iterable = (), device: str = "cpu",
                  table: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
                  outputs: AtomicOutputs | None = None) -> dict[str, Any]:
    """Run the golden model and write the vectors folder; returns the manifest.

    ``device`` "cuda" also runs the fast path on the GPU and refuses to write anything unless
    its outputs equal the golden model's bit for bit (the manifest records the check).

    ``table``: (``cycle_table`` of all of X, y_int (B, N)) computed elsewhere -- merged from
    shards of the vector range by ``imcsim.verify.shard`` -- instead of running the golden
    model here.

    The folder is created if missing.  A folder that is not empty is replaced only with
    ``force`` and only if it is a vectors folder (has a manifest.json); temporaries left there
    by a killed run do not count.  Every file is written all-or-nothing; ``inputs`` are files
    the caller read, which must not be overwritten.

    ``outputs``: the caller's ``AtomicOutputs``, which then receives the folder's files and
    commits them with its own (several folders all-or-nothing); the folder must exist.
    """
    outdir = Path(outdir)
    if (vref or config.vref).per_column:
        raise ValueError("vref: the per-column dual Vref choice is not in the vector files "
                         "(one full scale per cycle); use the GoldenModel API")
    if config.skip_masked_cycles:
        # the files hold one line per scheduled cycle with no skip bit for the RTL testbench
        raise ValueError("config: skip_masked_cycles is not supported by the vector files "
                         "(one line per scheduled cycle); use the GoldenModel API, whose "
                         "records flag skipped cycles")
    check_vectors_folder(outdir, force)
    inputs = [p for p in inputs if p is not None]
    if table is None:
        golden, records = run_golden(config, W, X, x_format, w_format, seed=seed, vref=vref)
        tab, y_int = cycle_table(golden, records), golden.expected_outputs()["y_int"]
    else:
        golden = GoldenModel(config, W, w_format, x_format, seed=seed, vref=vref)
        tab, y_int = table
    if device != "cpu":
        cross_check_device(golden, X, W, x_format, w_format, seed, vref, device, y_int)
    c, plan = golden.config, golden.plan
    B = np.asarray(X).shape[0]
    labels = list(labels) if labels is not None else ["given"] * B
    vref_used = vref if vref is not None else c.vref
    vref_json = {"mode": vref_used.mode.value, "full_scale": vref_used.full_scale,
                 "dual_low": vref_used.dual_low, "dual_high": vref_used.dual_high}
    R, C, G = tab["row_input"].shape[1], tab["code"].shape[1], tab["nmc_acc"].shape[1]
    geometry = {"rows_R": R, "columns_C": C, "outputs_G": G, "weight_planes_Kw":
                plan.weight_planes, "adc_bits_Nb": c.adc_bits, "top_code_L": c.top_code,
                "planes_P": golden.n_planes, "row_tiles_T": plan.row_tiles,
                "col_tiles_U": plan.col_tiles, "vectors_B": B, "inner_M": plan.inner,
                "outputs_N": plan.outputs}
    layout = hex_layout(golden, tab)
    names = [fname for fname, _, _ in layout] + ["weights.hex", H5_NAME, MANIFEST_NAME]
    if outputs is not None:
        for fname in names:
            outputs.add(outdir / fname, fname)
        return _write_folder(outputs, outdir, golden, tab, y_int, layout, labels, seed,
                             vref_json, geometry, X, W)
    created = not outdir.exists()
    outdir.mkdir(exist_ok=True)
    try:
        own = AtomicOutputs(*(outdir / f for f in names), names=names, inputs=inputs)
        with own:
            manifest = _write_folder(own, outdir, golden, tab, y_int, layout, labels,
                                     seed, vref_json, geometry, X, W)
    except BaseException:
        if created:
            try:
                outdir.rmdir()
            except OSError:
                pass
        raise
    return manifest


def check_vectors_folder(outdir, force: bool = False) -> None:
    """ValueError unless ``outdir`` may receive a vectors folder (``write_vectors``'s rule:
    missing or empty, or with ``force`` an existing vectors folder; its parent must exist).

    Temporaries of killed runs (``kill -9`` cannot clean up) are deleted first, so they never
    make a rerun refuse the folder; those of a live process mean it is being written now.
    """
    outdir = Path(outdir)
    if outdir.exists():
        if not outdir.is_dir():
            raise ValueError(f"{outdir}: exists and is not a folder")
        live = remove_stale_partials_in(outdir)
        if live:
            raise ValueError(f"{outdir}: another imcsim process (pid "
                             f"{partial_parts(live[0])[1]}) is writing this folder now "
                             f"({live[0].name}; delete it if that process is not imcsim)")
        if any(outdir.iterdir()):
            if not force:
                raise ValueError(f"{outdir}: folder exists and is not empty (use --force to "
                                 "replace a vectors folder)")
            if not (outdir / MANIFEST_NAME).is_file():
                raise ValueError(f"{outdir}: not a vectors folder (no {MANIFEST_NAME}); "
                                 "refusing to replace it")
    parent = outdir.parent if str(outdir.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{outdir}: folder {parent} does not exist")


def _write_folder(outputs: AtomicOutputs, outdir: Path, golden: GoldenModel, tab, y_int, layout,
                  labels, seed, vref_json, geometry, X, W) -> dict[str, Any]:
    """Write every file of a vectors folder to its temporary name; returns the manifest."""
    c, plan = golden.config, golden.plan
    R, C = geometry["rows_R"], geometry["columns_C"]
    manifest_files = []
    n = len(tab["cycle"])
    for fname, direction, fields in layout:
        word_bits = sum(f["width"] * f["count"] for f, _ in fields)
        words = [0] * n
        for f, data in fields:
            packed = pack_words(np.asarray(data).reshape(n, -1), f["width"])
            words = [w | (p << f["lsb"]) for w, p in zip(words, packed)]
        with outputs.writing(outdir / fname) as tmp:
            digits = _write_hex(tmp, words, word_bits, f"imcsim vectors: {fname}, {n} lines "
                                f"x {word_bits} bits; see manifest.json")
        manifest_files.append({"file": fname, "direction": direction, "depth": n,
                               "word_bits": word_bits, "hex_digits": digits,
                               "line": "line i = array cycle i",
                               "fields": [f for f, _ in fields]})
    # weights: one line per stored row of every tile
    wlines = []
    for t in range(plan.row_tiles):
        for u in range(plan.col_tiles):
            cols = golden.stored_columns(t, u)
            block = np.zeros((R, C), dtype=np.int64)
            block[: cols.shape[0], : cols.shape[1]] = cols
            wlines.extend(pack_words(block, 1))
    with outputs.writing(outdir / "weights.hex") as tmp:
        digits = _write_hex(tmp, wlines, C,
                            f"imcsim vectors: weights.hex, {len(wlines)} lines x {C} bits")
    manifest_files.append({
        "file": "weights.hex", "direction": "stimulus", "depth": len(wlines),
        "word_bits": C, "hex_digits": digits,
        "line": "line (t*U + u)*R + r = stored row r of tile (t, u)",
        "fields": [_field("weight_bit", 0, 1, "column c (bit c) stores plane q = c % Kw of "
                          "output u*G + c // Kw; 1 = +1, 0 = -1", count=C)]})
    manifest = {
        "format": VECTORS_FORMAT, "version": VECTORS_VERSION,
        "imcsim_version": __version__, "config": c.to_dict(),
        "x_format": golden.x_format.spec(), "w_format": golden.w_format.spec(),
        "seed": int(seed), "vref": vref_json, "geometry": geometry, "n_cycles": n,
        "cycle_order": "row tile t, column tile u, vector b, plane p (Macro.mvm_traced "
                       "order); hex line i and HDF5 row i are array cycle i",
        "x_plane_weights": golden.x_plane_weights.tolist(),
        "w_plane_weights": golden.w_plane_weights.tolist(),
        "vectors": [{"index": i, "label": lab} for i, lab in enumerate(labels)],
        "hdf5": H5_NAME, "files": manifest_files,
    }
    _write_h5(outputs.h5(outdir / H5_NAME), golden, tab, y_int, manifest, np.asarray(X),
              np.asarray(W))
    with outputs.writing(outdir / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_h5(writer: H5Writer, golden, tab, y_int, manifest, X, W):
    """vectors.h5 through the guarded HDF5 writer (a full disk: one OSError naming it)."""
    y_int = np.asarray(y_int, dtype=np.int64)
    res = {"y_int": y_int,      # as GoldenModel.expected_outputs
           "y": y_int.astype(np.float64) / float(1 << golden.config.nmc.out_frac_bits)}
    with writer as f:
        f.attrs["format"] = VECTORS_FORMAT
        f.attrs["schema_version"] = VECTORS_VERSION
        f.attrs["imcsim_version"] = __version__
        f.attrs["config_json"] = golden.config.to_json()
        f.attrs["x_format"] = manifest["x_format"]
        f.attrs["w_format"] = manifest["w_format"]
        f.attrs["seed"] = manifest["seed"]
        f.attrs["vref_json"] = json.dumps(manifest["vref"])
        f.attrs["geometry_json"] = json.dumps(manifest["geometry"])
        f.attrs["labels_json"] = json.dumps([v["label"] for v in manifest["vectors"]])
        f.attrs["n_cycles"] = manifest["n_cycles"]
        s = f.create_group("stimulus")
        s["X"] = X.astype(np.float64)
        s["W"] = W.astype(np.int64)
        s["x_units"] = golden.x_format.validate(X, "X")
        g = f.create_group("cycles")
        for name, arr in tab.items():
            g.create_dataset(name, data=arr, compression="gzip", compression_opts=4,
                             shuffle=True)
            writer.check()              # stop at the first failed write, not at the end
        r = f.create_group("result")
        r["y_int"] = res["y_int"]
        r["y"] = res["y"]


def find_vectors_h5(path) -> Path:
    """A vectors folder or its vectors.h5 -> the HDF5 path."""
    path = Path(path)
    if path.is_dir():
        path = path / H5_NAME
    if not path.is_file():
        raise ValueError(f"{path}: no such vectors file")
    check_vectors_h5_version(path)
    return path


def check_vectors_h5_version(path) -> None:
    """ValueError naming ``path`` when it is a vectors file of a newer major schema version
    (other files are left to the caller's checks)."""
    try:
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format"), f.attrs.get("schema_version")
    except Exception:                    # not HDF5 or damaged: the caller's reader says so
        return
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    if fmt == VECTORS_FORMAT and version is not None:
        check_schema_version(version, VECTORS_VERSION, path, "vectors schema version")


def load_manifest(folder) -> dict[str, Any]:
    """The manifest.json of a vectors (or hex dump) folder."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: no {MANIFEST_NAME}")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot read it as JSON ({reason})") from None
    if isinstance(man, dict) and man.get("format") == VECTORS_FORMAT and "version" in man:
        check_schema_version(man["version"], VECTORS_VERSION, path, "vectors format version")
    return man


def read_hex_fields(folder, fname: str) -> dict[str, np.ndarray]:
    """Decode one hex file of a vectors folder by its manifest: {field: int64 (n, count)}."""
    folder = Path(folder)
    man = load_manifest(folder)
    entry = next((f for f in man["files"] if f["file"] == fname), None)
    if entry is None:
        raise ValueError(f"{fname}: not in the manifest")
    words = read_hex(folder / fname)
    out = {}
    for f in entry["fields"]:
        shifted = [w >> f["lsb"] for w in words]
        out[f["name"]] = unpack_words(shifted, f["count"], f["width"], f["signed"])
    return out


__all__ = [
    "Operands",
    "random_operands",
    "corner_case_vectors",
    "cycle_table",
    "find_vectors_h5",
    "load_manifest",
    "make_operands",
    "pack_words",
    "read_hex",
    "read_hex_fields",
    "run_golden",
    "unpack_words",
    "write_vectors",
]
