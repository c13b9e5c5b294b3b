"""Grouped, named parameters of the batched kernels (Numba accepts these named tuples).

Every field is validated by ``imcsim`` before a kernel sees it; units as in
docs/hardware-model.md (rows, analog fixed point 2**-20 rows, sigmas 2**-16).
"""
from collections import namedtuple

#: One row tile's streamed operand as P cycles of S = ``level_bits`` binary sub-planes each
#: (sub-plane p * S + k: the rows whose level has bit k set, docs/hardware-model.md 4.8;
#: S = 1 for binary rows).
#: xbits, xmask : uint64 (B, P * S, W) row inputs and active-row masks, 64 rows a word;
#: active : int64 (B, P * S) active rows per sub-plane; level_sum : int64 (B, P) the cycle's
#: A (sum of its row levels; ``active`` itself when S = 1); full_scale : F; scale : NMC scale
#: F/L (fixed point); threshold_shift : ADC threshold shift (analog fixed point, 0 for the
#: floor law), all int64 (B, P); level_bits : int.
CycleInputs = namedtuple("CycleInputs", "xbits xmask active level_sum full_scale scale "
                         "threshold_shift level_bits")

#: One tile's stored operand: wbits uint64 (C, W) packed by rows; wcols uint8 (R, C) unpacked
#: ((0, 0) when no plane takes the row gather); cap_table int64 (S, 2, R, C) the charge an
#: XNOR=1 cell holds when level bit k drives input bit 0 / 1 (``hw.driven_cell_charge``;
#: (1, 2, 0, 0) without cell or row-DAC mismatch).
StoredTile = namedtuple("StoredTile", "wbits wcols cap_table")

#: The chip's analog constants for the used columns: col_total_cap int64 (C,) CAP_UNIT units;
#: cdac int64 (C, Nb) CDAC_UNIT units; cdac_total, cmp_offset int64 (C,).
AnalogTables = namedtuple("AnalogTables", "col_total_cap cdac cdac_total cmp_offset")

#: Scalar analog settings: rows (array height), adc_bits, top_code (2**adc_bits - 1), ideal
#: (integer ADC-law shortcut), charge_table (cell or row-DAC mismatch: charges come from
#: ``StoredTile.cap_table``), sigma_sample_fx, sigma_cmp_fx (fixed point, in level units),
#: skip_masked (the controller skips all-masked cycles: ``hw.cycle_skipped``); per_column,
#: dual_low, dual_high (per-column dual Vref: ``hw.column_full_scale``), half_up (the ADC
#: law, for the threshold shift of a column's own F).
AnalogParams = namedtuple("AnalogParams", "rows adc_bits top_code ideal charge_table "
                          "sigma_sample_fx sigma_cmp_fx skip_masked per_column dual_low "
                          "dual_high half_up")

#: NMC settings: scale_frac_bits, acc_bits, saturate (else wrap); code_offsets int64 (3, C)
#: each column's offset for a non-zero code at F <= L (row 0) and F > L (row 1) and for code 0
#: (row 2), 2**-CODE_OFFSET_FRAC_BITS code (``hw.column_code_offset``; half-LSB
#: reconstruction included), has_code_offsets (any non-zero), offset_codes (an int >= the
#: magnitude of every offset, in codes); pw_x int64 (P,) and pw_w int64 (Kw,) plane weights;
#: n_outputs (outputs of this column tile).
NmcParams = namedtuple("NmcParams", "scale_frac_bits acc_bits saturate code_offsets "
                       "has_code_offsets offset_codes pw_x pw_w n_outputs")

#: The dynamic-noise key of a tile operation: seed (uint64), tile_row, tile_col, and the global
#: index of the batch's first vector.
NoiseKey = namedtuple("NoiseKey", "seed tile_row tile_col vector_offset")

#: Fast-path tuning: planes with at most ``gather_limit`` active rows take the row gather;
#: tile_rows is the row tile's height (a plane with that many active rows needs no mask);
#: chunks is how many parallel chunks the batch is split into (speed only, never results).
Tuning = namedtuple("Tuning", "gather_limit tile_rows chunks")

#: What one launch of the CUDA kernel covers: the noise seed (uint64), the global index of the
#: batch's first vector, row tiles [t_lo, t_hi), outputs [n_lo, n_hi) and vectors [b_lo, b_hi).
LaunchSpan = namedtuple("LaunchSpan", "seed vector_offset t_lo t_hi n_lo n_hi b_lo b_hi")

#: Where the CUDA kernel writes: keep_codes (whether codes are written); codes int64
#: (T, B, P, N * Kw); clipped, high_count int64 (T, U) per-tile counts; acc int64 (B, N).
MvmOutputs = namedtuple("MvmOutputs", "keep_codes codes clipped high_count acc")

#: The recorded cycles of a trace block (docs/trace-format.md's /cycles datasets), row r of
#: each: column_count int32 (n, C), column_value int64 (n, C), sar_trial uint16 (n, C, Nb),
#: sar_decision uint8 (n, C, Nb), code uint16 (n, C), nmc_acc int64 (n, G, Kw).
TraceRecords = namedtuple("TraceRecords", "column_count column_value sar_trial sar_decision "
                          "code nmc_acc")
