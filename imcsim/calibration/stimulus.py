"""The calibration stimulus: vectors that make each analog non-ideality identifiable on a chip.

Every calibration vector stores the same matrix, ``W = +max`` (every stored bit 1, in every
column), and streams a binary vector whose elements are ``+max`` or ``-max`` of ``x_format``:
every input plane then applies the same row pattern, the rows with ``+max`` are the charged
(XNOR = 1) cells, and **every column's XNOR count equals the number of +max rows**, ``k``.  A
vector is therefore ``P = x_format.n_planes`` conversions per column of one known count ``k``
and one known row subset ``S`` (P repeats with independent dynamic noise, keyed by the plane).
Each block runs at one fixed full scale ``F`` (Vref mode ``fixed``), so the ADC's thresholds do
not move within a block.

Three kinds of block (docs/calibration.md):

``ramp``
    Counts ``k = 0 .. k_max`` (every count, or an evenly spaced dense subset), ``ramp_vectors``
    vectors per count, each with a fresh random row subset.  One block per full scale in
    ``full_scales``: the transitions of every code give the per-column comparator offset, the
    gain (parasitic capacitance) and the CDAC capacitors (DNL, INL); the different full scales
    separate the offset (independent of F) from the thresholds (proportional to F, the CDAC
    is ratiometric).
``repeat``
    A few counts spread over the codes, each one fixed row subset repeated ``repeat_vectors``
    times: the spread of identical conversions, with no cell-mismatch contribution (the subset
    does not change), gives the dynamic noise; the asymmetry of its code errors separates
    comparator noise (drawn per SAR step: an early wrong decision is never revisited) from
    sampling noise (drawn per conversion), a second-order effect (docs/calibration.md).
``pattern``
    Counts around ``rows / 2`` at full scale ``rows``, ``pattern_subsets`` different random row
    subsets per count, each repeated ``pattern_repeats`` times: the extra spread *between*
    subsets of one count is the bit-cell capacitor mismatch (a pattern-dependent error of
    variance ``sigma_cell**2 * k * (rows - k) / (rows - 1)`` rows**2), which the parasitic
    capacitance (a common gain, the same for every subset) cannot produce.

``make_calibration_stimulus`` builds the blocks (deterministic in ``seed``);
``write_calibration_vectors`` writes one ``imcsim vectors`` folder per block (HDF5, hex,
manifest: ``imcsim.verify.vectors.write_vectors``) plus ``calibration.json``, which
``load_calibration_stimulus`` reads back.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imcsim.atomic import AtomicOutputs, check_schema_version
from imcsim.config import MacroConfig, VrefConfig, VrefMode
from imcsim.formats import BinaryFormat, parse_format

STIMULUS_FORMAT = "imcsim-calibration-stimulus"
STIMULUS_VERSION = "1.0"
STIMULUS_NAME = "calibration.json"
BLOCK_KINDS = ("ramp", "repeat", "pattern")
#: which hardware block each stimulus kind characterises first (statistical_check's roll-up)
KIND_BLOCK = {"ramp": "adc", "repeat": "adc", "pattern": "array"}


def weight_planes_for(columns: int) -> int:
    """Kw of the calibration's stored operand: the smallest divisor of ``columns`` in [3, 16].

    Every physical column then stores one plane of one output, so every ADC converts.  Geometries
    without such a divisor use Kw = 3 and leave ``columns % 3`` columns uncalibrated
    (``CalibrationStimulus.covered_columns``).
    """
    if columns < 3:
        raise ValueError(f"columns: the calibration needs at least 3 columns, got {columns}")
    for k in range(3, 17):
        if columns % k == 0:
            return k
    return 3


@dataclass
class CalibrationBlock:
    """One block of calibration vectors, converted at one fixed full scale.

    Attributes
    ----------
    name : str  folder name of the block (``ramp_F63``).
    kind : str  ``ramp``, ``repeat`` or ``pattern``.
    full_scale : int  F [rows] of every conversion of the block (Vref mode fixed).
    counts : int64 (B,)  XNOR count of every vector [rows], the same in every column.
    subset_ids : int64 (B,)  vectors with the same id apply the same row subset.
    rows_on : bool (B, rows)  the charged rows (input +max) of every vector.
    """

    name: str
    kind: str
    full_scale: int
    counts: np.ndarray
    subset_ids: np.ndarray
    rows_on: np.ndarray

    @property
    def n_vectors(self) -> int:
        return int(self.counts.shape[0])

    def vref(self, config: MacroConfig) -> VrefConfig:
        """The block's Vref: fixed at ``full_scale`` (dual levels set to the valid L, rows)."""
        return VrefConfig(mode=VrefMode.FIXED, full_scale=int(self.full_scale),
                          dual_low=config.top_code, dual_high=config.rows)

    def X(self, x_format: BinaryFormat) -> np.ndarray:
        """float64 (B, rows): +max on charged rows, -max elsewhere."""
        m = float(x_format.max_value)
        return np.where(self.rows_on, m, -m)

    def labels(self) -> list[str]:
        """One label per vector: ``kind:F=..,count=..,subset=..``."""
        return [f"calibration_{self.kind}:F={self.full_scale},count={int(k)},subset={int(s)}"
                for k, s in zip(self.counts, self.subset_ids)]

    def meta(self) -> dict:
        return {"name": self.name, "kind": self.kind, "full_scale": int(self.full_scale),
                "vectors": self.n_vectors}


@dataclass
class CalibrationStimulus:
    """The whole calibration stimulus of one macro geometry.

    Attributes
    ----------
    config : MacroConfig  the nominal macro (geometry, ADC law); its analog values only set the
        expected codes written into the vectors folders.
    x_format, w_format : BinaryFormat  streamed / stored formats (P = x_format.n_planes
        conversions per vector and column; Kw = w_format.bits columns per output).
    W : int64 (rows, N)  the stored matrix, every element ``w_format.max_value``.
    blocks : list of CalibrationBlock
    design : dict  the parameters ``make_calibration_stimulus`` was called with.
    """

    config: MacroConfig
    x_format: BinaryFormat
    w_format: BinaryFormat
    W: np.ndarray
    blocks: list[CalibrationBlock]
    design: dict = field(default_factory=dict)

    @property
    def n_planes(self) -> int:
        return self.x_format.n_planes

    @property
    def covered_columns(self) -> int:
        """Physical columns 0 .. covered_columns-1 convert in every block."""
        return self.W.shape[1] * self.w_format.bits

    def block(self, name: str) -> CalibrationBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise ValueError(f"stimulus: no block {name!r}; blocks: {', '.join(self.block_names)}")

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def blocks_of(self, kind: str) -> list[CalibrationBlock]:
        return [b for b in self.blocks if b.kind == kind]

    def operands(self, name: str) -> dict:
        """Everything ``write_vectors`` / ``Macro.mvm`` need for one block.

        Returns {config, W, X, x_format, w_format, vref, labels}.
        """
        b = self.block(name)
        return {"config": self.config, "W": self.W, "X": b.X(self.x_format),
                "x_format": self.x_format, "w_format": self.w_format,
                "vref": b.vref(self.config), "labels": b.labels()}

    def n_conversions(self) -> int:
        """ADC conversions of the whole stimulus (vectors x planes x columns)."""
        return sum(b.n_vectors for b in self.blocks) * self.n_planes * self.covered_columns

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": STIMULUS_FORMAT, "version": STIMULUS_VERSION,
                "config": self.config.to_dict(), "x_format": self.x_format.spec(),
                "w_format": self.w_format.spec(), "design": self.design,
                "blocks": [b.meta() for b in self.blocks],
                "cycle_order": "per block folder: vector b, plane p (one row tile, one column "
                               "tile); cycle = b * planes + p",
                "conversions": self.n_conversions()}

    def summary(self) -> str:
        parts = [f"{b.name} {b.n_vectors}" for b in self.blocks]
        return (f"{len(self.blocks)} blocks, {sum(b.n_vectors for b in self.blocks)} vectors "
                f"x {self.n_planes} planes x {self.covered_columns} columns = "
                f"{self.n_conversions()} conversions ({', '.join(parts)})")


def _default_full_scales(config: MacroConfig) -> tuple[int, ...]:
    L, R = config.top_code, config.rows
    mid = int(round(np.sqrt(L * R)))
    return tuple(sorted({L, min(max(mid, L), R), R}))


def _repeated_subsets(rng, rows: int, k: int, n_subsets: int, repeats: int, next_id: int,
                      counts: list, ids: list, on: list) -> int:
    """Append ``n_subsets`` random subsets of ``k`` rows, each ``repeats`` times under one new
    subset id, to the block lists; returns the next free id."""
    for _ in range(n_subsets):
        subset = _subset(rng, rows, k)
        for _ in range(repeats):
            counts.append(k)
            ids.append(next_id)
            on.append(subset)
        next_id += 1
    return next_id


def _subset(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    on = np.zeros(rows, dtype=bool)
    on[rng.permutation(rows)[:k]] = True
    return on


def _dense_counts(k_max: int, limit: int | None) -> np.ndarray:
    counts = np.arange(k_max + 1)
    if limit is not None and counts.size > limit:
        counts = np.unique(np.round(np.linspace(0, k_max, limit)).astype(np.int64))
    return counts.astype(np.int64)


def make_calibration_stimulus(config: MacroConfig, *, full_scales: Sequence[int] | None = None,
                              ramp_vectors: int = 4, ramp_headroom: float = 1.25,
                              max_ramp_counts: int | None = None,
                              repeat_full_scales: Sequence[int] | None = None,
                              repeat_vectors: int = 128, repeat_counts: int = 16,
                              pattern_subsets: int = 48,
                              pattern_repeats: int = 3, pattern_counts: int | None = None,
                              x_bits: int = 8, seed: int = 0) -> CalibrationStimulus:
    """Build the calibration stimulus of a macro geometry (deterministic in ``seed``).

    Parameters
    ----------
    config : MacroConfig  geometry (rows, columns, adc_bits) and ADC law of the chip.
    full_scales : ints or None  full scales F [rows] of the ramps, each in [L, rows]; default
        L, round(sqrt(L * rows)) and rows.
    ramp_vectors : int  vectors (fresh row subsets) per count of a ramp, >= 1.
    ramp_headroom : float  a ramp at F runs to count min(rows, ceil(headroom * F)) [rows], so
        that an attenuated column (parasitic capacitance) still reaches the top code.
    max_ramp_counts : int or None  at most this many counts per ramp (evenly spaced); default
        every count.
    repeat_full_scales : ints or None  full scales of the repeat blocks; default L alone (one
        LSB = one row: the noise is largest in LSB there, so its shape shows best).
    repeat_vectors : int  repeats of each repeat pattern, >= 2.
    repeat_counts : int  counts of a repeat block, evenly spread over 0.1 F .. 0.9 F.
    pattern_subsets : int  row subsets per count of the pattern block, >= 2.
    pattern_repeats : int  repeats of each subset, >= 1.
    pattern_counts : int or None  counts around rows/2 in the pattern block; default one LSB
        of F = rows worth (ceil(rows / L), at least 3).
    x_bits : int  K of the streamed BinaryFormat: K conversions per vector and column.
    seed : int  seed of the row subsets.
    """
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config: expected MacroConfig, got {type(config).__name__}")
    L, R = config.top_code, config.rows
    for name, v, lo in (("ramp_vectors", ramp_vectors, 1), ("repeat_vectors", repeat_vectors, 2),
                        ("repeat_counts", repeat_counts, 1),
                        ("pattern_subsets", pattern_subsets, 2),
                        ("pattern_repeats", pattern_repeats, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: must be an int >= {lo}, got {v!r}")
    if not 1.0 <= float(ramp_headroom) <= 4.0:
        raise ValueError(f"ramp_headroom: must lie in [1, 4], got {ramp_headroom}")
    if max_ramp_counts is not None and max_ramp_counts < 2:
        raise ValueError(f"max_ramp_counts: must be >= 2, got {max_ramp_counts}")
    full_scales = tuple(int(f) for f in (full_scales or _default_full_scales(config)))
    for f in full_scales:
        if not L <= f <= R:
            raise ValueError(f"full_scales: each F must lie in [{L}, {R}] rows, got {f}")
    if repeat_full_scales is None:
        repeat_full_scales = (L,)
    repeat_full_scales = tuple(int(f) for f in repeat_full_scales)
    for f in repeat_full_scales:
        if not L <= f <= R:
            raise ValueError(f"repeat_full_scales: each F must lie in [{L}, {R}] rows, got {f}")
    x_format = BinaryFormat(int(x_bits))
    kw = weight_planes_for(config.columns)
    w_format = BinaryFormat(kw)
    W = np.full((R, config.columns // kw), w_format.max_value, dtype=np.int64)
    rng = np.random.default_rng(seed)
    blocks: list[CalibrationBlock] = []
    next_id = 0

    def add(name, kind, F, counts, ids, on):
        blocks.append(CalibrationBlock(name, kind, int(F), np.asarray(counts, dtype=np.int64),
                                       np.asarray(ids, dtype=np.int64), np.asarray(on, dtype=bool)))

    # ramps: every count, fresh subsets
    for F in full_scales:
        k_max = min(R, int(np.ceil(ramp_headroom * F)))
        counts, ids, on = [], [], []
        for k in _dense_counts(k_max, max_ramp_counts):
            for _ in range(ramp_vectors):
                counts.append(k)
                ids.append(next_id)
                next_id += 1
                on.append(_subset(rng, R, int(k)))
        add(f"ramp_F{F}", "ramp", F, counts, ids, on)
    # repeats: one subset per count, repeated; counts spread over the codes, so that the
    # columns' conversions sit at many positions between two thresholds
    for F in repeat_full_scales:
        chosen = sorted({int(round(F * q)) for q in np.linspace(0.1, 0.9, repeat_counts)})
        counts, ids, on = [], [], []
        for k in chosen:
            next_id = _repeated_subsets(rng, R, k, 1, repeat_vectors, next_id, counts, ids, on)
        add(f"repeat_F{F}", "repeat", F, counts, ids, on)
    # patterns: many subsets of counts around rows / 2 at F = rows
    n_counts = pattern_counts if pattern_counts is not None else max(3, int(np.ceil(R / L)))
    first = R // 2 - n_counts // 2
    counts, ids, on = [], [], []
    for k in range(first, first + n_counts):
        next_id = _repeated_subsets(rng, R, k, pattern_subsets, pattern_repeats, next_id, counts,
                                    ids, on)
    add(f"pattern_F{R}", "pattern", R, counts, ids, on)
    design = {"full_scales": list(full_scales), "ramp_vectors": int(ramp_vectors),
              "ramp_headroom": float(ramp_headroom), "max_ramp_counts": max_ramp_counts,
              "repeat_full_scales": list(repeat_full_scales),
              "repeat_vectors": int(repeat_vectors), "repeat_counts": int(repeat_counts),
              "pattern_subsets": int(pattern_subsets),
              "pattern_repeats": int(pattern_repeats), "pattern_counts": int(n_counts),
              "x_bits": int(x_bits), "seed": int(seed)}
    return CalibrationStimulus(config, x_format, w_format, W, blocks, design)


def write_calibration_vectors(outdir, config: MacroConfig, *, stimulus: CalibrationStimulus | None = None,
                              noise_seed: int = 0, force: bool = False, device: str = "cpu",
                              **design) -> CalibrationStimulus:
    """Write the calibration stimulus as vectors folders, one per block, plus calibration.json.

    Parameters
    ----------
    outdir : path  created if missing; gets ``calibration.json`` and one subfolder per block
        (``ramp_F63/`` ...), each an ``imcsim vectors`` folder (vectors.h5, hex files,
        manifest.json) written by ``imcsim.verify.vectors.write_vectors``.
    config : MacroConfig  the nominal macro: geometry and ADC law; its non-idealities and
        chip_seed set the *expected* codes of the folders (for silicon, use the ideal
        config: the calibration compares measured codes with its own model, not these).
    stimulus : CalibrationStimulus or None  a stimulus built beforehand (its config must equal
        ``config``); default ``make_calibration_stimulus(config, **design)``.
    noise_seed : int  dynamic-noise seed of the expected codes (block i uses noise_seed + i).
    force : bool  replace existing block folders (vectors folders only) and calibration.json.
    device : "cpu" or "cuda"  cross-check of the expected codes (see ``write_vectors``).
    **design : keyword arguments of ``make_calibration_stimulus`` (full_scales, ramp_vectors,
        ...).

    Returns the CalibrationStimulus.  Everything is written all-or-nothing: one
    ``AtomicOutputs`` holds the files of every block and calibration.json (renamed last), so
    a failure (a full disk, an interrupt) leaves ``outdir`` as it was, without the folders this
    call created.
    """
    from imcsim.verify.vectors import check_vectors_folder, write_vectors
    outdir = Path(outdir)
    if stimulus is None:
        stimulus = make_calibration_stimulus(config, **design)
    elif design:
        raise ValueError(f"design: give either a stimulus or design parameters, not both "
                         f"({', '.join(sorted(design))})")
    elif stimulus.config != config:
        raise ValueError("stimulus: built for another config")
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: exists and is not a folder")
    index = outdir / STIMULUS_NAME
    if index.exists() and not force:
        raise ValueError(f"{outdir}: already holds a {STIMULUS_NAME} (use force to replace it)")
    if outdir.is_dir():                   # refuse a block folder before computing anything
        for block in stimulus.blocks:
            check_vectors_folder(outdir / block.name, force)
    created = [d for d in (outdir, *outdir.parents) if not d.exists()][::-1]
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with AtomicOutputs() as out:
            for i, block in enumerate(stimulus.blocks):
                folder = outdir / block.name
                if not folder.exists():
                    folder.mkdir()
                    created.append(folder)
                ops = stimulus.operands(block.name)
                write_vectors(folder, ops["config"], ops["W"], ops["X"], ops["x_format"],
                              ops["w_format"], seed=noise_seed + i, vref=ops["vref"],
                              labels=ops["labels"], force=force, device=device, outputs=out)
            doc = stimulus.to_dict()
            doc["noise_seed"] = int(noise_seed)
            out.add(index, STIMULUS_NAME)
            with out.writing(index) as tmp:
                tmp.write_text(json.dumps(doc, indent=2) + "\n")
    except BaseException:
        for folder in reversed(created):  # empty again: their temporaries are deleted
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return stimulus


def stimulus_from_dict(doc: dict) -> CalibrationStimulus:
    """Rebuild a stimulus from ``CalibrationStimulus.to_dict()`` (the subsets follow the seed)."""
    if doc.get("format") != STIMULUS_FORMAT:
        raise ValueError(f"stimulus: not a calibration stimulus (format {doc.get('format')!r})")
    config = MacroConfig.from_dict(doc["config"])
    stim = make_calibration_stimulus(config, **doc["design"])
    if parse_format(doc["x_format"]) != stim.x_format or parse_format(doc["w_format"]) != stim.w_format:
        raise ValueError("stimulus: formats differ from the design's (another imcsim version?)")
    names = [b["name"] for b in doc["blocks"]]
    if names != stim.block_names or [b["vectors"] for b in doc["blocks"]] != \
            [b.n_vectors for b in stim.blocks]:
        raise ValueError("stimulus: blocks differ from the design's (another imcsim version?)")
    return stim


def load_calibration_stimulus(folder) -> CalibrationStimulus:
    """Read ``calibration.json`` of a calibration folder (or the file itself).

    The row subsets are rebuilt from the recorded design and seed; when a block's vectors.h5
    is present its stored X is compared with them (ValueError if they differ).
    """
    path = Path(folder)
    if path.is_dir():
        path = path / STIMULUS_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: no {STIMULUS_NAME}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not readable as JSON ({reason})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a calibration stimulus (not a JSON object)")
    if doc.get("format") == STIMULUS_FORMAT:
        check_schema_version(doc.get("version", ""), STIMULUS_VERSION, path,
                             "calibration stimulus version")
    try:
        stim = stimulus_from_dict(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a calibration stimulus ({type(exc).__name__}: "
                         f"{exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for block in stim.blocks:
        h5 = path.parent / block.name / "vectors.h5"
        if h5.is_file():
            X = _stored_stimulus(h5)
            if not np.array_equal(X, block.X(stim.x_format)):
                raise ValueError(f"{h5}: its vectors differ from the calibration design")
    return stim


def _stored_stimulus(h5: Path) -> np.ndarray:
    """The X a block's vectors.h5 holds (ValueError naming the file when it cannot)."""
    import h5py

    from imcsim.verify.vectors import check_vectors_h5_version
    check_vectors_h5_version(h5)
    try:
        with h5py.File(h5, "r") as f:
            return np.asarray(f["stimulus"]["X"][()])
    except Exception as exc:              # not HDF5, damaged, or no /stimulus/X
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{h5}: cannot read its stimulus /stimulus/X ({reason})") from None


__all__ = ["BLOCK_KINDS", "KIND_BLOCK", "CalibrationBlock", "CalibrationStimulus",
           "STIMULUS_NAME", "load_calibration_stimulus", "make_calibration_stimulus",
           "stimulus_from_dict", "weight_planes_for", "write_calibration_vectors"]
