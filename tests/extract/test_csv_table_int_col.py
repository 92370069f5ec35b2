"""`CsvTable.int_col` checks large columns in slices: the first non-integer is found in any slice."""
import numpy as np
import pytest

from stagecache.extract.formats.csv_table import AvaFormatError, CsvTable


def _table(values: np.ndarray) -> CsvTable:
    n = values.size
    lines = list(range(3, n + 3))  # row i is on file line i + 3
    return CsvTable.from_arrays("p.csv", np.zeros(n, np.int64), np.array(["v"]), [values], np.full(n, 2), lines, 0)


@pytest.mark.parametrize("bad", [0, (1 << 20) - 1, 1 << 20, 2_500_001])
def test_first_non_integer_in_any_slice(bad):
    v = np.arange(3_000_000, dtype=np.float64)
    v[bad] += 0.5
    v[bad + 7] += 0.25  # a later one is not the one reported
    with pytest.raises(AvaFormatError, match=rf"^p\.csv:{bad + 3}: x \(column 2\) is not an integer: {v[bad]}$"):
        _table(v).int_col(1, "x")


def test_integers_converted_and_rows_mask():
    v = np.arange(2_200_000, dtype=np.float64)
    t = _table(v)
    np.testing.assert_array_equal(t.int_col(1, "x"), np.arange(2_200_000))
    v2 = v.copy()
    v2[2_100_000] = 0.5
    rows = np.zeros(v.size, dtype=bool)
    rows[::2] = True  # the bad row is selected (even index): reported by its own line
    with pytest.raises(AvaFormatError, match=r"^p\.csv:2100003: "):
        _table(v2).int_col(1, "x", rows)
    rows[2_100_000] = False  # not selected: no error
    np.testing.assert_array_equal(_table(v2).int_col(1, "x", rows), np.flatnonzero(rows))
