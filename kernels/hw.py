"""Every hardware behaviour of the macro, written once as small scalar functions.

This module is the single source of the macro's semantics (docs/hardware-model.md).  Its
functions are plain Python; ``kernels.targets`` compiles the same source for each target:

- ``kernels.targets.CPU``: ``numba.njit`` (the fast CPU kernels, the cycle-level path and the
  golden model call these);
- ``kernels.targets.cuda_hardware()``: ``numba.cuda.jit(device=True)`` (the CUDA kernels).

Rules for code in this module, so that it compiles for both targets:

- scalars and array element reads only; no allocation, no NumPy array functions, no builtin
  ``min``/``max`` (numba-cuda before 0.21 cannot type them on the device);
- integer arithmetic only, with explicit ``np.int64``/``np.uint64`` where signedness matters
  (NumPy and Numba promote uint64 op int64 to float64);
- a function calls other functions of this module, and target primitives, by their global
  name; ``kernels.targets`` rebinds those names to the compiled version of the same target.
  The only target primitive is ``popcount64`` (LLVM ctpop on the CPU, ``cuda.popc`` on CUDA).

Units: column values are rows scaled by ``2**ANALOG_FRAC_BITS``; capacitors are integers in
``CAP_UNIT`` / ``CDAC_UNIT``; sigmas are fixed point scaled by ``2**SIGMA_FRAC_BITS``.
"""
import numpy as np

# --- fixed-point formats of the analog model (docs/hardware-model.md section 4) -------------
#: fraction bits of a column value in rows
ANALOG_FRAC_BITS = 20
#: integer units of one nominal bit-cell capacitor
CAP_UNIT = 4096
#: integer units of one nominal CDAC unit capacitor
CDAC_UNIT = 4096
#: integer units of one nominal row-DAC unit source (docs/hardware-model.md 4.8), 2**12
DAC_UNIT = 4096
DAC_UNIT_BITS = 12
#: fraction bits of a fixed-point sigma
SIGMA_FRAC_BITS = 16
#: (sigma_fx * normal_fx) carries 2 * SIGMA_FRAC_BITS fraction bits; a value in rows keeps
#: ANALOG_FRAC_BITS of them
NOISE_SHIFT = 2 * SIGMA_FRAC_BITS - ANALOG_FRAC_BITS
#: numerators of the ideal ADC law, count * L, stay below 2**DIVIDEND_BITS (rows <= 2**16,
#: L <= 4095), which makes the multiply-shift division exact
DIVIDEND_BITS = 28
#: fraction bits of the NMC's per-column code offsets inside the kernels (the registers'
#: own resolution, ``NmcConfig.code_offset_frac_bits`` <= this, is shifted up to it)
CODE_OFFSET_FRAC_BITS = 8

# --- counter-based random numbers (docs/hardware-model.md section 5) ------------------------
STREAM_CELL_CAP = 1
STREAM_CDAC = 2
STREAM_CMP_OFFSET = 3
STREAM_SAMPLE = 4
STREAM_CMP_NOISE = 5
STREAM_ROW_DAC = 6
#: 12 * 65535 / 2: the mean of the Irwin-Hall sum of twelve 16-bit uniforms
IRWIN_HALL_MEAN = 393210

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S16 = np.uint64(16)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S48 = np.uint64(48)
_MASK16 = np.uint64(0xFFFF)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)

# --- enumerations shared with imcsim.config (integers, so compiled code can branch on them) --
VREF_FIXED = 0
VREF_VARIABLE = 1
VREF_DUAL = 2
ROUND_FLOOR = 0
ROUND_HALF_UP = 1
ROUND_HALF_EVEN = 2


def popcount64(x):  # pragma: no cover - replaced by each target's primitive
    """Set bits of a uint64 (target primitive: rebound by kernels.targets)."""
    raise NotImplementedError


# =========================================================================================
# Randomness: SplitMix64 keyed by (seed, stream, event coordinates)
# =========================================================================================
def splitmix64(x):
    """SplitMix64 finaliser of a uint64 (wrapping arithmetic). Returns uint64."""
    z = np.uint64(x) + _GOLDEN
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


def mix(h, value):
    """Fold one non-negative key counter into a running key hash (uint64)."""
    return splitmix64(np.uint64(h) ^ np.uint64(value))


def seed_hash(seed, stream):
    """Key hash of (seed, stream): the prefix every event key starts from (uint64)."""
    return mix(splitmix64(np.uint64(seed)), stream)


def cycle_key(seed, stream, tile_row, tile_col, vector, plane):
    """Key hash of one array cycle's event stream: (seed, stream, t, u, vector, plane).

    A column's key is ``mix(cycle_key, column)``; a SAR step's is ``mix(column_key, step)``.
    """
    return mix(mix(mix(mix(seed_hash(seed, stream), tile_row), tile_col), vector), plane)


def normal_fx_from_hash(h):
    """Approximately N(0, 1) in units of 2**-16 (int64), from a finished key hash.

    Irwin-Hall sum of twelve 16-bit uniforms: integer-only, mean 0, sigma 65536, tails cut
    at six sigma.
    """
    total = np.int64(0)
    for i in range(3):
        u = splitmix64(np.uint64(h) + np.uint64(i))
        total += np.int64(u & _MASK16)
        total += np.int64((u >> _S16) & _MASK16)
        total += np.int64((u >> _S32) & _MASK16)
        total += np.int64(u >> _S48)
    return total - IRWIN_HALL_MEAN


def scaled_normal(sigma_fx, h, shift):
    """``(sigma_fx * normal_fx) >> shift`` (floor): the fixed-point noise sample of a key."""
    return (np.int64(sigma_fx) * normal_fx_from_hash(h)) >> np.int64(shift)


def mismatched_capacitor(unit, sigma_fx, h):
    """One capacitor of nominal size ``unit`` with relative mismatch sigma (int64 units)."""
    return unit + ((unit * np.int64(sigma_fx) * normal_fx_from_hash(h)) >> np.int64(32))


# =========================================================================================
# Operand encoding: radix-4 values and range checks
# =========================================================================================
def radix4_unit(value, denominator, max_exponent2):
    """A radix-4 value in integer units of 1/denominator: (units, ok).

    A representable magnitude times the denominator is 4**j with 0 <= 2j <= max_exponent2,
    or 0; anything else gives (0, False).
    """
    m = abs(value) * denominator
    if m == 0.0:
        return np.int64(0), True
    k = np.int64(0)
    if m >= 1.0 and m <= float(np.int64(1) << np.int64(max_exponent2)):
        k = np.int64(m)
    # a power of two whose single set bit sits at an even position
    if k > 0 and float(k) == m and (k & (k - 1)) == 0 and (k & np.int64(0x5555555555555555)) != 0:
        return (-k if value < 0 else k), True
    return np.int64(0), False


def binary_unit(value, lo, hi):
    """A binary-format value as an integer: (value, ok); ok is False for a non-integer or a
    value outside [lo, hi] (NaN fails both tests)."""
    if not (value >= lo and value <= hi):
        return np.int64(0), False
    unit = np.int64(value)
    if unit != value:
        return np.int64(0), False
    return unit, True


# =========================================================================================
# CIMA: XNOR bit cells, row masks, charge sharing
# =========================================================================================
def word_mismatches(x_word, w_word, mask_word):
    """Active cells of a 64-row word whose XNOR output is 0 (input bit != stored bit).

    A column's XNOR count over a tile is ``active rows - sum of word_mismatches``: masked rows
    (mask bit 0) contribute nothing, as their cells are disconnected from the column.
    """
    return np.int64(popcount64((x_word ^ w_word) & mask_word))


def count_from_signed_dot(dot, active):
    """A column's XNOR count from the dot product of its +/-1 operands over the active rows.

    With input and stored bits mapped to +1 / -1 (0 on masked rows), each active row adds
    +1 where XNOR = 1 and -1 where it is 0, so dot = 2 * count - active: the count that
    ``column_xnor_count`` gives, for a GEMM that computes the dot product exactly.
    """
    return (np.int64(dot) + np.int64(active)) >> np.int64(1)


def lowest_set_row(mask_word):
    """(row within the word, the word with that bit cleared) of a non-zero mask word."""
    low = mask_word & (np.uint64(0) - mask_word)
    return np.int64(popcount64(low - np.uint64(1))), mask_word ^ low


def column_xnor_count(xbits, xmask, active, wbits, column):
    """XNOR=1 cells of one column over a tile's active rows (int64).

    xbits, xmask : uint64 (W,) one array cycle's packed row inputs and active-row mask.
    wbits : uint64 (C, W) the tile's stored bits.  Words with no active row are skipped, so a
    sparse radix-4 plane costs in proportion to the words its active rows touch.
    """
    mismatches = np.int64(0)
    for w in range(xbits.shape[0]):
        m = xmask[w]
        if m != 0:
            mismatches += word_mismatches(xbits[w], wbits[column, w], m)
    return np.int64(active) - mismatches


def column_charge(xbits, xmask, cap_table, column):
    """Capacitance charged in one column: the sum of its XNOR=1 cells' capacitors (int64).

    cap_table : int64 (2, R, C)  cell capacitance seen by input bit 0 / 1 (0 where the stored
    bit makes XNOR 0), so the sum runs over active rows only.
    """
    total = np.int64(0)
    for w in range(xbits.shape[0]):
        m = xmask[w]
        while m != 0:
            r, m = lowest_set_row(m)
            bit = np.int64((xbits[w] >> np.uint64(r)) & np.uint64(1))
            total += cap_table[bit, w * 64 + r, column]
    return total


def driven_cell_charge(cell_capacitance, dac_gain):
    """Charge units one XNOR=1 cell holds when its row DAC drives level bit k.

    cell_capacitance in CAP_UNIT units, dac_gain = bit k's sources in DAC_UNIT units
    (ideal: 2**k * DAC_UNIT, giving 2**k * the cell's capacitance).
    """
    return (np.int64(cell_capacitance) * np.int64(dac_gain)) >> np.int64(DAC_UNIT_BITS)


def level_weighted(sub_count, level_bit, from_charge_table):
    """A level bit's share of a cycle's column count or charge (docs/hardware-model.md 4.8).

    XNOR counts of level bit k weigh 2**k; charges read from a drive table already hold the
    level (``driven_cell_charge``), so they add with weight 1.
    """
    if from_charge_table:
        return np.int64(sub_count)
    return np.int64(sub_count) << np.int64(level_bit)


def charge_share(rows, charged_capacitance, total_capacitance):
    """Column value after shorting all cell capacitors, analog fixed point (int64).

    ``rows * C_charged / C_total`` rows: the fraction of the column's total capacitance
    (cells plus parasitic) that the XNOR=1 cells charged, scaled to the array height.
    """
    return (np.int64(rows) * charged_capacitance << np.int64(ANALOG_FRAC_BITS)) \
        // total_capacitance


def sample_column(value, sigma_sample_fx, column_key):
    """The held (sampled) column value: the shared value plus kT/C sampling noise."""
    if sigma_sample_fx == 0:
        return value
    return value + scaled_normal(sigma_sample_fx, column_key, NOISE_SHIFT)


# =========================================================================================
# Vref choice, SAR ADC
# =========================================================================================
def cycle_skipped(active, skip_masked):
    """Does the controller skip this array cycle?  Only with ``skip_masked`` on, and only when
    every row is masked (0 active rows): then no conversion runs and the NMC adds nothing."""
    return skip_masked and active == 0


def cycle_full_scale(active, vref_mode, fixed_full_scale, dual_low, dual_high, top_code):
    """Full scale F (rows) of an array cycle from its active-row count (Vref choice)."""
    if vref_mode == VREF_FIXED:
        return np.int64(fixed_full_scale)
    if vref_mode == VREF_VARIABLE:
        # a comparison, not max(): some numba-cuda versions cannot type the builtin on devices
        return np.int64(active if active > top_code else top_code)
    return np.int64(dual_low if active <= dual_low else dual_high)


def column_full_scale(value, offset, dual_low, dual_high, sigma_cmp_fx, noise_key, adc_bits):
    """Per-column dual Vref: the column's F, from one comparator decision before the SAR.

    The ADC keeps the low level unless its held value (analog fixed point, with the
    comparator's offset and, as step ``adc_bits`` of its noise stream, its noise) exceeds
    ``dual_low`` rows; then it converts at ``dual_high``.
    """
    held = value + offset
    if sigma_cmp_fx != 0:
        held += scaled_normal(sigma_cmp_fx, mix(noise_key, adc_bits), NOISE_SHIFT)
    if held > (np.int64(dual_low) << np.int64(ANALOG_FRAC_BITS)):
        return np.int64(dual_high)
    return np.int64(dual_low)


def adc_threshold_shift(full_scale, top_code, half_up):
    """Half an LSB in analog fixed point for the half-up ADC law, else 0 (int64)."""
    if not half_up:
        return np.int64(0)
    return ((np.int64(full_scale) << np.int64(ANALOG_FRAC_BITS)) + top_code) // (2 * top_code)


def sar_trial(held, cdac_total, full_scale_fx, trial_weight):
    """One comparator decision: is the held value at least the DAC's trial level?

    The DAC level is ``F * trial_weight / cdac_total`` rows (``full_scale_fx`` = F in analog
    fixed point); cross-multiplied so that no division rounds.
    """
    return held * cdac_total >= full_scale_fx * trial_weight


def sar_path_trial(code, k):
    """The trial code of the SAR step that decides bit ``k``, on the path whose bits above
    ``k`` are those of ``code`` (the bits decided so far, or the final code: its bits at and
    below ``k`` are ignored): those bits, then bit ``k`` set."""
    above = np.int64(k) + np.int64(1)
    return ((np.int64(code) >> above) << above) | (np.int64(1) << np.int64(k))


def sar_convert(value, offset, cdac_weights, cdac_total, full_scale, adc_bits, sigma_cmp_fx,
                noise_key, threshold_shift, trials, decisions, record):
    """Successive approximation of one held column value, MSB first; returns the code.

    - value : held column value, analog fixed point.  offset : the comparator's static offset.
    - cdac_weights : int64 (adc_bits,) this column's CDAC capacitors, LSB first.
    - noise_key : the column's comparator-noise key; step s mixes in s.
    - threshold_shift : raises the compared value (half an LSB for the half-up law).
    - trials, decisions : int64 / uint8 (adc_bits,) written with each step's trial code and
      decision when ``record`` is true (the cycle-level trace); ignored otherwise.
    """
    code = np.int64(0)
    weight_sum = np.int64(0)
    full_scale_fx = np.int64(full_scale) << np.int64(ANALOG_FRAC_BITS)
    # the comparator noise is bounded (Irwin-Hall: |normal_fx| <= IRWIN_HALL_MEAN), so a
    # step whose decision no noise sample can change does not draw one: the same decisions,
    # at a fraction of the cost (most SAR steps are far from their threshold)
    noise_bound = ((np.int64(sigma_cmp_fx) * np.int64(IRWIN_HALL_MEAN)) >> np.int64(NOISE_SHIFT)) \
        + np.int64(1)
    held_static = value + offset + threshold_shift
    for s in range(adc_bits):
        k = adc_bits - 1 - s
        trial_weight = weight_sum + cdac_weights[k]
        if sigma_cmp_fx == 0:
            keep = sar_trial(held_static, cdac_total, full_scale_fx, trial_weight)
        elif sar_trial(held_static - noise_bound, cdac_total, full_scale_fx, trial_weight):
            keep = True
        elif not sar_trial(held_static + noise_bound, cdac_total, full_scale_fx, trial_weight):
            keep = False
        else:
            held = held_static + scaled_normal(sigma_cmp_fx, mix(noise_key, s), NOISE_SHIFT)
            keep = sar_trial(held, cdac_total, full_scale_fx, trial_weight)
        if record:
            trials[s] = sar_path_trial(code, k)
            decisions[s] = 1 if keep else 0
        if keep:
            code |= np.int64(1) << np.int64(k)
            weight_sum = trial_weight
    return code


def column_conversion(value, offset, cdac_weights, cdac_total, full_scale, threshold_shift,
                      per_column, dual_low, dual_high, half_up, top_code, sigma_cmp_fx,
                      noise_key, trials, decisions, record):
    """One column's whole conversion after sampling: its full-scale choice, clip test and SAR.

    value : held column value, analog fixed point.  offset, cdac_weights, cdac_total : the
    column's comparator offset and CDAC (``sar_convert``).  full_scale, threshold_shift : the
    cycle's F and the ADC law's shift at F.  per_column, dual_low, dual_high : the per-column
    dual Vref (``column_full_scale``: the column converts at ``dual_high`` when its held value
    exceeds ``dual_low``); half_up, top_code : the ADC law and L, for the shift at the
    column's own F.  sigma_cmp_fx, noise_key : comparator noise.  trials, decisions, record :
    as ``sar_convert``.

    Returns (code, f_c, clipped, high): the code, the column's F, whether the held value
    exceeded F (clipped), and whether the conversion counts at the high level
    (``high_vref_conversions``: per column, F is ``dual_high``, read literally).
    """
    adc_bits = cdac_weights.shape[0]
    f_c = np.int64(full_scale)
    shift = np.int64(threshold_shift)
    if per_column:
        f_c = column_full_scale(value, offset, dual_low, dual_high, sigma_cmp_fx, noise_key,
                                adc_bits)
        if f_c != full_scale:
            shift = adc_threshold_shift(f_c, top_code, half_up)
    clipped = value > (f_c << np.int64(ANALOG_FRAC_BITS))
    code = sar_convert(value, offset, cdac_weights, cdac_total, f_c, adc_bits, sigma_cmp_fx,
                       noise_key, shift, trials, decisions, record)
    return code, f_c, clipped, per_column and f_c == dual_high


def ideal_column_conversion(count, full_scale, multiplier, shift, addend, per_column,
                            dual_low, dual_high, magic_high, magic_high_shift, addend_high,
                            top_code, adc_bits):
    """``column_conversion`` on ideal analog (held value ``count << ANALOG_FRAC_BITS``, no
    offset, no noise, ideal CDAC), in integers: the same (code, f_c, clipped, high).

    (multiplier, shift, addend) divide by the cycle's F under the ADC law
    (``division_magic``, ``ideal_rounding_addend``); (magic_high, magic_high_shift,
    addend_high) the same at ``dual_high`` for the per-column choice.
    """
    f_c = np.int64(full_scale)
    m, sh, a = multiplier, shift, addend
    if per_column:
        f_c = column_full_scale(np.int64(count) << np.int64(ANALOG_FRAC_BITS), 0, dual_low,
                                dual_high, 0, np.uint64(0), adc_bits)
        if f_c != full_scale:
            m, sh, a = magic_high, magic_high_shift, addend_high
    code = ideal_adc_code(count, m, sh, top_code, a)
    return code, f_c, count > f_c, per_column and f_c == dual_high


def column_nmc_scale(f_c, full_scale, cycle_scale, scale_high):
    """The NMC scale of a column's code: the cycle's unless the column chose the high level
    (per-column dual Vref), then ``nmc_scale(dual_high)``."""
    return scale_high if f_c != full_scale else cycle_scale


def division_magic(divisor):
    """(multiplier, shift) with floor(a / d) == (a * multiplier) >> shift for 0 <= a < 2**28.

    m = ceil(2**k / d) with k = 28 + ceil(log2 d) gives m*d - 2**k < d <= 2**(k-28), the
    condition for exactness (Granlund & Montgomery 1994); a * m stays below 2**58.
    """
    d = np.int64(divisor)
    ceil_log2 = np.int64(0)
    while (np.int64(1) << ceil_log2) < d:
        ceil_log2 += 1
    shift = np.int64(DIVIDEND_BITS) + ceil_log2
    multiplier = ((np.int64(1) << shift) + d - 1) // d
    return multiplier, shift


def ideal_rounding_addend(threshold_shift, top_code):
    """The ideal ADC law's numerator addend of a threshold shift (0 under the floor law).

    On ideal analog the held value is ``count << ANALOG_FRAC_BITS`` exactly and the SAR
    returns ``min(floor((count * 2**f + s) * L / (F * 2**f)), L)`` for a threshold shift s
    (f = ANALOG_FRAC_BITS).  Nested floors give
    ``floor((count * L + floor(s * L / 2**f)) / F)``: this addend is ``floor(s * L / 2**f)``
    (about F / 2 under the half-up law), so every ideal law takes the integer shortcut.
    """
    return (np.int64(threshold_shift) * np.int64(top_code)) >> np.int64(ANALOG_FRAC_BITS)


def ideal_adc_code(count, multiplier, shift, top_code, addend):
    """The ideal ADC law ``min(floor((count * L + addend) / F), L)``; (multiplier, shift)
    divide by F; ``addend`` from :func:`ideal_rounding_addend` (0: the floor law)."""
    code = ((np.int64(count) * top_code + addend) * multiplier) >> shift
    return top_code if code > top_code else code


# =========================================================================================
# NMC: offset, scale and recombine bit planes; the output stage
# =========================================================================================
def nmc_scale(full_scale, top_code, scale_frac_bits):
    """Fixed-point F / L (round half up) that turns a code back into a row count (int64)."""
    return ((np.int64(full_scale) << np.int64(scale_frac_bits + 1)) + top_code) // (2 * top_code)


def column_code_offset(f_c, code, top_code, code_offsets, c):
    """The NMC's offset for ``code`` of column ``c`` at the column's full scale ``f_c`` (int64).

    code_offsets : int64 (3, C) in units of 2**-CODE_OFFSET_FRAC_BITS code: row 0 for a
    non-zero code in the lossless range (F <= L: one count per code), row 1 for a non-zero
    code at F > L, row 2 for code 0 (whose bin is open below: under the floor law a count 0
    reads exactly whatever the sign of the noise; docs/hardware-model.md 4.6).
    """
    if code == 0:
        return code_offsets[2, c]
    if f_c <= top_code:
        return code_offsets[0, c]
    return code_offsets[1, c]


def nmc_term(code, scale_fx, active, scale_frac_bits, code_offset, x_plane_weight,
             w_plane_weight):
    """The signed dot-product contribution of one ADC code, in accumulator units.

    The code estimates the XNOR count n: n ~ (code - offset) * F / L, the offset
    (``code_offset``, 2**-CODE_OFFSET_FRAC_BITS code) being the column's measured mean code
    error and -1/2 for half-LSB reconstruction; the +/-1 dot product of the active rows is
    2n - active.
    """
    if code_offset == 0:
        estimate = np.int64(code) * scale_fx
    else:
        estimate = (((np.int64(code) << np.int64(CODE_OFFSET_FRAC_BITS)) - code_offset)
                    * scale_fx) >> np.int64(CODE_OFFSET_FRAC_BITS)
    dot = 2 * estimate - (np.int64(active) << np.int64(scale_frac_bits))
    return dot * x_plane_weight * w_plane_weight


def register_limits(bits):
    """(lowest, highest) value of a two's-complement register of ``bits`` (int64)."""
    hi = (np.int64(1) << np.int64(bits - 1)) - 1
    return -hi - 1, hi


def accumulate(acc, term, acc_bits, saturate):
    """Add one term to an accumulator register of ``acc_bits``: saturate or wrap."""
    lo, hi = register_limits(acc_bits)
    s = acc + term
    if saturate:
        if s > hi:
            return hi
        if s < lo:
            return lo
        return s
    span = np.int64(1) << np.int64(acc_bits)
    return ((s - lo) & (span - 1)) + lo


def saturate_to(value, bits):
    """Clamp to a two's-complement register of ``bits``."""
    lo, hi = register_limits(bits)
    if value > hi:
        return hi
    if value < lo:
        return lo
    return value


def shift_round(value, shift, rounding):
    """Arithmetic shift right by ``shift`` with rounding (ROUND_*); a negative shift is left."""
    v = np.int64(value)
    if shift <= 0:
        return v << np.int64(-shift)
    floor = v >> np.int64(shift)
    if rounding == ROUND_FLOOR:
        return floor
    rem = v - (floor << np.int64(shift))
    half = np.int64(1) << np.int64(shift - 1)
    if rounding == ROUND_HALF_UP:
        return floor + (1 if rem >= half else 0)
    if rem > half or (rem == half and (floor & 1) == 1):
        return floor + 1
    return floor


def output_value(acc, shift, rounding, out_bits, has_scale, scale, scale_frac_bits,
                 has_offset, offset):
    """The output register of one output: shift/round, saturate, optional scale and offset."""
    y = saturate_to(shift_round(acc, shift, rounding), out_bits)
    if not has_scale and not has_offset:
        return y
    if has_scale:
        y = shift_round(y * scale, scale_frac_bits, rounding)
    if has_offset:
        y = y + offset
    return saturate_to(y, out_bits)


#: the functions ``kernels.targets`` compiles for every target, in dependency order
HARDWARE_FUNCTIONS = (
    "splitmix64", "mix", "seed_hash", "cycle_key", "normal_fx_from_hash", "scaled_normal",
    "mismatched_capacitor", "radix4_unit", "binary_unit", "word_mismatches",
    "count_from_signed_dot", "lowest_set_row",
    "column_xnor_count", "column_charge", "driven_cell_charge", "level_weighted", "charge_share", "sample_column", "cycle_skipped",
    "cycle_full_scale", "column_full_scale", "adc_threshold_shift", "sar_trial",
    "sar_path_trial",
    "sar_convert", "column_conversion", "ideal_column_conversion", "column_nmc_scale",
    "division_magic", "ideal_rounding_addend", "ideal_adc_code", "nmc_scale",
    "column_code_offset", "nmc_term",
    "register_limits", "accumulate", "saturate_to", "shift_round", "output_value",
)
