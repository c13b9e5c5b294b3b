"""CIMA write words (imcsim/writes.py): hand-computed cases, a brute-force reference built on
the format's own encoder, and the macro's own count of a full load."""
import numpy as np
import pytest

from imcsim import BinaryFormat, Macro, MacroConfig
from imcsim.writes import changed_cima_words

B5 = BinaryFormat(5)


def reference_words(old, new, fmt, rows):
    """Plain loops: per row tile, output, bit plane and 32-row word of the tile, is any bit of
    the column (``fmt.encode``) different?"""
    old_bits, _ = fmt.encode(np.asarray(old))           # (inner, outputs, planes)
    new_bits, _ = fmt.encode(np.asarray(new))
    inner, outputs = np.shape(old)
    count = 0
    for r0 in range(0, inner, rows):
        r1 = min(inner, r0 + rows)
        for n in range(outputs):
            for p in range(fmt.n_planes):
                for w0 in range(r0, r1, 32):
                    if any(old_bits[r, n, p] != new_bits[r, n, p]
                           for r in range(w0, min(r1, w0 + 32))):
                        count += 1
    return count


# --- by hand ----------------------------------------------------------------------------------
# binary:5 planes (b0-, b0+, b1, b2, b3), value = (b0- + b0+ + 2 b1 + 4 b2 + 8 b3 terms) / 2:
#   0 -> 1 1 1 1 0,  1 -> 0 1 0 0 1   (planes 0, 2, 3, 4 differ: 4 columns)
#  -8 -> 0 0 0 0 0,  8 -> 1 1 1 1 1   (every plane differs)
def test_the_encodings_the_hand_cases_use():
    bits, _ = B5.encode(np.array([0, 1, -8, 8]))
    assert bits.tolist() == [[1, 1, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_by_hand():
    old = np.zeros((100, 3), dtype=np.int64)
    assert changed_cima_words(old, old.copy(), B5) == 0
    one = old.copy()
    one[5, 1] = 1                                   # 4 planes of one output, one word each
    assert changed_cima_words(old, one, B5) == 4
    same_word = one.copy()
    same_word[31, 1] = 1                            # rows 5 and 31: the same word (rows 0-31)
    assert changed_cima_words(old, same_word, B5) == 4
    next_word = one.copy()
    next_word[32, 1] = 1                            # row 32 starts the next word
    assert changed_cima_words(old, next_word, B5) == 8
    other_output = one.copy()
    other_output[5, 2] = 1                          # another output: its own columns
    assert changed_cima_words(old, other_output, B5) == 8
    flip = old.copy()
    flip[99, 0] = 0
    full = np.full((100, 3), -8)
    # -8 -> 8 everywhere: every plane of every output in every word (ceil(100 / 32) = 4)
    assert changed_cima_words(full, -full, B5) == 3 * 5 * 4
    assert changed_cima_words(old, flip, B5) == 0


def test_words_do_not_cross_row_tiles():
    old = np.zeros((50, 1), dtype=np.int64)
    new = old.copy()
    new[39, 0] = new[40, 0] = 1
    # one 2304-row tile: rows 39 and 40 share the word of rows 32-63
    assert changed_cima_words(old, new, B5, rows=2304) == 4
    # 40-row tiles: row 39 ends tile 0 (its partial word, rows 32-39), row 40 starts tile 1
    assert changed_cima_words(old, new, B5, rows=40) == 8
    # every word of a full change: tile 0 has ceil(40 / 32) = 2 words, tile 1 ceil(10 / 32) = 1
    full = np.full((50, 1), 8)
    assert changed_cima_words(-full, full, B5, rows=40) == 5 * 3


def test_a_full_change_rewrites_what_the_macro_loads():
    """Every bit flips (-8 -> 8): the changed words are exactly the macro's cima_load_words of
    that stored operand (2 row tiles, 2 column tiles of 51 outputs)."""
    inner, outputs = 3000, 60
    W = np.full((inner, outputs), 8)
    X = np.ones((1, inner))
    res = Macro(MacroConfig()).mvm(X, W, BinaryFormat(6), B5)
    assert changed_cima_words(-W, W, B5) == res.events.total()["cima_load_words"]
    assert changed_cima_words(-W, W, B5) == outputs * 5 * (72 + -(-(inner - 2304) // 32))


# --- against the brute-force reference --------------------------------------------------------
@pytest.mark.parametrize("bits,inner,outputs,rows,density", [
    (5, 70, 4, 2304, 0.05), (5, 130, 3, 40, 0.02), (3, 65, 5, 64, 0.3), (8, 33, 2, 32, 0.5),
    (6, 300, 2, 100, 0.01), (5, 1, 1, 2304, 1.0)])
def test_random_changes_equal_the_reference(bits, inner, outputs, rows, density):
    fmt = BinaryFormat(bits)
    lim = fmt.max_value
    rng = np.random.default_rng(bits * 1000 + inner)
    for _ in range(3):
        old = rng.integers(-lim, lim + 1, (inner, outputs))
        new = np.where(rng.random((inner, outputs)) < density,
                       rng.integers(-lim, lim + 1, (inner, outputs)), old)
        got = changed_cima_words(old, new, fmt, rows=rows)
        assert got == reference_words(old, new, fmt, rows)
        # float operands holding integers (the quantizers' output) count the same
        assert changed_cima_words(old.astype(np.float64), new.astype(np.float32), fmt,
                                  rows=rows) == got


def test_bad_inputs():
    a = np.zeros((4, 2))
    with pytest.raises(ValueError, match="shape"):
        changed_cima_words(a, np.zeros((4, 3)), B5)
    with pytest.raises(ValueError, match="2-D"):
        changed_cima_words(np.zeros(4), np.zeros(4), B5)
    with pytest.raises(ValueError, match=r"new_int_weights: binary:5 holds integers in \[-8, 8\]"):
        changed_cima_words(a, a + 9, B5)
    with pytest.raises(ValueError, match="old_int_weights"):
        changed_cima_words(a + 0.5, a, B5)
    with pytest.raises(ValueError, match="old_int_weights"):
        changed_cima_words(a * np.nan, a, B5)
    with pytest.raises(ValueError, match="rows"):
        changed_cima_words(a, a, B5, rows=0)
    with pytest.raises(TypeError, match="BinaryFormat"):
        from imcsim import Radix4Format
        changed_cima_words(a, a, Radix4Format(8))


def test_device_arrays_count_where_they_are():
    """On the strict device stand-in of test_training_xp (CuPy's interface: no implicit
    conversion to NumPy): the same count, with only scalars coming back."""
    from test_training_xp import FAKE, LOG
    rng = np.random.default_rng(3)
    old = rng.integers(-8, 9, (200, 7)).astype(np.float64)
    new = np.where(rng.random(old.shape) < 0.05, -old, old)
    LOG.reset()
    got = changed_cima_words(FAKE.asarray(old), FAKE.asarray(new), B5, rows=64)
    assert got == reference_words(old, new, B5, 64) > 0
    assert max(LOG.d2h) == 1
