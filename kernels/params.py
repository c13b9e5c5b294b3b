"""Grouped, named parameters of the batched kernels (Numba accepts these named tuples).

Every field is validated by ``imcsim`` before a kernel sees it; units as in
docs/hardware-model.md (rows, analog fixed point 2**-20 rows, sigmas 2**-16).
"""
from collections import namedtuple

#: One row tile's streamed operand, all (B, P) int64 except the packed words.
#: xbits, xmask : uint64 (B, P, W) row inputs and active-row masks, 64 rows a word;
#: active : active rows per cycle; full_scale : F (rows); scale : NMC scale F/L (fixed point);
#: threshold_shift : ADC threshold shift (analog fixed point, 0 for the floor law).
CycleInputs = namedtuple("CycleInputs", "xbits xmask active full_scale scale threshold_shift")

#: One tile's stored operand: wbits uint64 (C, W) packed by rows; wcols uint8 (R, C) unpacked
#: ((0, 0) when no plane takes the row gather); cap_table int64 (2, R, C) cell capacitance
#: seen by input bit 0 / 1 ((2, 0, 0) without cell mismatch).
StoredTile = namedtuple("StoredTile", "wbits wcols cap_table")

#: The chip's analog constants for the used columns: col_total_cap int64 (C,) CAP_UNIT units;
#: cdac int64 (C, Nb) CDAC_UNIT units; cdac_total, cmp_offset int64 (C,).
AnalogTables = namedtuple("AnalogTables", "col_total_cap cdac cdac_total cmp_offset")

#: Scalar analog settings: rows (array height), adc_bits, top_code (2**adc_bits - 1), ideal
#: (integer ADC-law shortcut), cell_mismatch, sigma_sample_fx, sigma_cmp_fx (fixed point),
#: skip_masked (the controller skips all-masked cycles: ``hw.cycle_skipped``); per_column,
#: dual_low, dual_high (per-column dual Vref: ``hw.column_full_scale``), half_up (the ADC
#: law, for the threshold shift of a column's own F).
AnalogParams = namedtuple("AnalogParams", "rows adc_bits top_code ideal cell_mismatch "
                          "sigma_sample_fx sigma_cmp_fx skip_masked per_column dual_low "
                          "dual_high half_up")

#: NMC settings: scale_frac_bits, acc_bits, saturate (else wrap), half_lsb; pw_x int64 (P,)
#: and pw_w int64 (Kw,) plane weights; n_outputs (outputs of this column tile).
NmcParams = namedtuple("NmcParams", "scale_frac_bits acc_bits saturate half_lsb pw_x pw_w n_outputs")

#: The dynamic-noise key of a tile operation: seed (uint64), tile_row, tile_col, and the global
#: index of the batch's first vector.
NoiseKey = namedtuple("NoiseKey", "seed tile_row tile_col vector_offset")

#: Fast-path tuning: planes with at most ``gather_limit`` active rows take the row gather;
#: tile_rows is the row tile's height (a plane with that many active rows needs no mask);
#: chunks is how many parallel chunks the batch is split into (speed only, never results).
Tuning = namedtuple("Tuning", "gather_limit tile_rows chunks")
