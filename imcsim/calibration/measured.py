"""Measured codes of the calibration stimulus: read a chip's dumps, or make synthetic silicon.

A measurement is one dump per stimulus block, in any layout ``imcsim check`` reads
(``imcsim.verify.check.load_actual``), named after the block inside one folder::

    measured/ramp_F63.h5        HDF5 (/cycles/code plus tile_row, tile_col, vector, plane, or
                                a cycle dataset, or rows in cycle order)
    measured/ramp_F137.csv      CSV, wide or long
    measured/repeat_F63.vcd     VCD (needs the stimulus folder for the bus widths)
    measured/pattern_F300/      a hex folder with a manifest.json ($writememh)

``block/measured.h5`` (``.csv``, ``.vcd``) inside the stimulus folder itself is accepted too.
A cycle of a block is ``vector * planes + plane`` (one row tile, one column tile).
``simulate_measurement`` runs the emulator as a chip (every non-ideality of a config, its
``chip_seed``) and ``write_measurement`` writes that in the HDF5 layout above.

A dump must hold every conversion of its block, each cycle once, codes in [0, L], no column past
the array's (columns the stimulus does not drive are ignored); anything else is refused with
one line naming the dump and the block (``imcsim.verify.dumps``, the rules ``imcsim check``
shares).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from imcsim.atomic import AtomicOutputs, H5Writer
from imcsim.calibration.stimulus import STIMULUS_NAME, CalibrationStimulus, load_calibration_stimulus
from imcsim.config import MacroConfig
from imcsim.errors import first_line
from imcsim.verify.dumps import block_codes, read_dataset

SUFFIXES = (".h5", ".hdf5", ".csv", ".vcd")
MEASUREMENT_FORMAT = "imcsim-calibration-measurement"


@dataclass
class MeasuredCodes:
    """The codes a chip returned for a calibration stimulus.

    Attributes
    ----------
    stimulus : CalibrationStimulus
    codes : {block name: int64 (B, P, C)}  code of vector b, plane p, column c, every one in
        [0, L]: a block is measured in full or not at all (``imcsim.verify.dumps``; -1, once a
        "no value" mark, is refused).  C = stimulus.covered_columns.
    y_int : {block name: int64 (B, N)}  NMC output registers when the dump has them.
    source : str
    """

    stimulus: CalibrationStimulus
    codes: dict[str, np.ndarray]
    y_int: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def block_codes(self, name: str) -> np.ndarray:
        if name not in self.codes:
            raise ValueError(f"measurement: no codes for block {name!r} ({self.source})")
        return self.codes[name]

    def n_conversions(self) -> int:
        return int(sum((c >= 0).sum() for c in self.codes.values()))


def _block_seed(seed: int, index: int) -> int:
    return (int(seed) * 1000003 + 7919 * (index + 1)) % (1 << 62)


def simulate_measurement(stimulus: CalibrationStimulus, chip: MacroConfig, *, seed: int = 0,
                         device: str = "cpu") -> MeasuredCodes:
    """Synthetic silicon: the codes ``Macro(chip)`` returns for the stimulus (fast path).

    Parameters
    ----------
    stimulus : CalibrationStimulus  its geometry must equal the chip's.
    chip : MacroConfig  the chip: non-idealities and ``chip_seed``.
    seed : int  dynamic-noise seed of this measurement (each block derives its own).
    device : "cpu" or "cuda".
    """
    from imcsim.macro import Macro
    s = stimulus.config
    if (chip.rows, chip.columns, chip.adc_bits) != (s.rows, s.columns, s.adc_bits):
        raise ValueError(f"chip: geometry {chip.rows}x{chip.columns}, {chip.adc_bits} bits differs "
                         f"from the stimulus's {s.rows}x{s.columns}, {s.adc_bits} bits")
    macro = Macro(chip, device=device)
    codes, y_int = {}, {}
    for i, block in enumerate(stimulus.blocks):
        ops = stimulus.operands(block.name)
        res = macro.mvm(ops["X"], ops["W"], ops["x_format"], ops["w_format"],
                        seed=_block_seed(seed, i), vref=ops["vref"], return_codes=True)
        c = np.asarray(res.codes.get() if hasattr(res.codes, "get") else res.codes)
        B, P = block.n_vectors, stimulus.n_planes
        codes[block.name] = c[0].reshape(B, P, -1).astype(np.int64)
        y = res.y_int.get() if hasattr(res.y_int, "get") else res.y_int
        y_int[block.name] = np.asarray(y, dtype=np.int64)
    return MeasuredCodes(stimulus, codes, y_int,
                         source=f"emulator chip_seed {chip.chip_seed}, noise seed {seed}")


def write_measurement(outdir, measured: MeasuredCodes) -> list[Path]:
    """Write one HDF5 dump per block (``<block>.h5``) into ``outdir`` (created if missing).

    Layout: ``/cycles/{code, tile_row, tile_col, vector, plane}`` one row per array cycle
    (what ``imcsim check`` reads) and ``/result/y_int`` (B, N) when known.  All files are
    written all-or-nothing.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / f"{name}.h5" for name in measured.codes]
    with AtomicOutputs(*paths, names=list(measured.codes)) as out:
        for name, path in zip(measured.codes, paths):
            codes = measured.codes[name]
            B, P, C = codes.shape
            with H5Writer(out.temporary(path), path, name) as f:   # the guarded writer
                f.attrs["format"] = MEASUREMENT_FORMAT
                f.attrs["block"] = name
                f.attrs["source"] = measured.source
                g = f.create_group("cycles")
                g.create_dataset("code", data=codes.reshape(B * P, C), compression="gzip")
                g["tile_row"] = np.zeros(B * P, dtype=np.int64)
                g["tile_col"] = np.zeros(B * P, dtype=np.int64)
                g["vector"] = np.repeat(np.arange(B), P)
                g["plane"] = np.tile(np.arange(P), B)
                if name in measured.y_int:
                    f.create_group("result")["y_int"] = measured.y_int[name]
    return paths


def _find_dump(folder: Path, name: str, stimulus_folder: Path | None) -> Path | None:
    for suffix in SUFFIXES:
        p = folder / f"{name}{suffix}"
        if p.is_file():
            return p
    sub = folder / name
    for suffix in SUFFIXES:
        p = sub / f"measured{suffix}"
        if p.is_file():
            return p
    if (sub / "measured").is_dir():
        return sub / "measured"
    if sub.is_dir() and (sub / "manifest.json").is_file() and not (sub / "vectors.h5").is_file():
        return sub                                          # a hex dump folder
    return None


def load_measurement(path, stimulus: CalibrationStimulus | str | Path | None = None, *,
                     fmt: str = "auto", signal_map: dict | None = None,
                     require_all: bool = True) -> MeasuredCodes:
    """Read a chip's dumps of the calibration stimulus (the layouts ``imcsim check`` reads).

    Parameters
    ----------
    path : folder  one dump per block (module docstring).
    stimulus : CalibrationStimulus, a calibration folder, or None (then ``path`` must hold
        calibration.json itself).
    fmt : "auto", "h5", "csv", "vcd" or "hex"  the dumps' layout (auto: by suffix).
    signal_map : dict or None  VCD signal names (``imcsim check --map``).
    require_all : bool  every block must have a dump (else only the ramps are required).
    """
    from imcsim.verify.check import load_actual, load_expected
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: expected a folder with one dump per calibration block")
    stim_folder = None
    if stimulus is None:
        if not (path / STIMULUS_NAME).is_file():
            raise ValueError(f"{path}: no {STIMULUS_NAME}; give the calibration stimulus folder "
                             "with --stimulus DIR")
        stim_folder = path
        stimulus = load_calibration_stimulus(path)
    elif not isinstance(stimulus, CalibrationStimulus):
        stim_folder = Path(stimulus)
        stimulus = load_calibration_stimulus(stim_folder)
    P, C = stimulus.n_planes, stimulus.covered_columns
    codes, y_int = {}, {}
    for block in stimulus.blocks:
        dump = _find_dump(path, block.name, stim_folder)
        if dump is None:
            if require_all or block.kind == "ramp":
                raise ValueError(f"{path}: no dump for block {block.name} (expected "
                                 f"{block.name}.h5/.csv/.vcd or a {block.name}/ hex folder)")
            continue
        expected = None
        if (fmt == "vcd" or dump.suffix == ".vcd"):
            if stim_folder is None or not (stim_folder / block.name).is_dir():
                raise ValueError(f"{dump}: a VCD needs the stimulus vectors folder for its bus "
                                 "widths")
            expected = load_expected(stim_folder / block.name)
        tab = load_actual(dump, fmt, signal_map, expected)
        # the shared dump rules (imcsim.verify.dumps): nothing of the dump is dropped in
        # silence -- a row outside the block, a column past the array, a code outside [0, L]
        # or a missing conversion is refused, naming the dump and the block
        B = block.n_vectors
        codes[block.name] = block_codes(tab, block.name, B, P, C, stimulus.config.columns,
                                        stimulus.config.top_code)
        keys = tab.keys or {}
        if "vector" in keys:
            cyc = keys["vector"] * P + keys["plane"]
        else:
            cyc = keys.get("cycle", np.arange(tab.n))
        y = None
        if "y_int" in tab.values:
            last = cyc % P == P - 1
            if last.any():
                yy = np.zeros((B, tab.values["y_int"].shape[1]), dtype=np.int64)
                yy[cyc[last] // P] = tab.values["y_int"][last]
                y = yy
        elif dump.suffix in (".h5", ".hdf5"):
            y = _stored_y_int(dump)
        if y is not None:
            # outputs of another shape used to be dropped, and with them the NMC check
            N = stimulus.W.shape[1]
            if y.shape != (B, N):
                raise ValueError(f"{dump}: block {block.name}: y_int of shape {y.shape}; the "
                                 f"block has {B} vectors x {N} outputs")
            y_int[block.name] = y
    return MeasuredCodes(stimulus, codes, y_int, source=str(path))


def _stored_y_int(dump: Path) -> np.ndarray | None:
    """/result/y_int of an HDF5 dump (None without one); ValueError naming the dump when it
    cannot be read (``load_actual`` has opened the file already, so it is HDF5)."""
    from imcsim.verify.check import as_int64
    try:
        with h5py.File(dump, "r") as f:
            r = f.get("result")
            if not isinstance(r, h5py.Group) or not isinstance(r.get("y_int"), h5py.Dataset):
                return None
            return as_int64(read_dataset(r["y_int"], dump), f"{dump}: /result/y_int")
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{dump}: cannot read it, the file is damaged ({first_line(exc)})") from None


__all__ = ["MeasuredCodes", "load_measurement", "simulate_measurement", "write_measurement"]
