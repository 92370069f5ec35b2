"""The numeric AVA CSV reader shared by every format: pyarrow's multi-threaded parser, exact errors.

A file is column 0 (video id, text) plus numeric columns parsed to float64 exactly as Python's
`float()` parses the text (pyarrow's parser rounds correctly), timestamps included, so `0902`,
`902` and `902.000000` are one number. When pyarrow refuses a file (a row with another column
count, a field that is not a number) the file is scanned again line by line with the `csv` module
to name the first bad line and column; that scan also reads the rare legal files pyarrow cannot
(7- and 8-column rows mixed, as GT files may). Line numbers for errors found after parsing
(NaN, inverted boxes) are recomputed from the bytes on the error path only.
"""
from __future__ import annotations

import csv
from typing import Iterable

import numpy as np

from stagecache.core.errors import UserError

HEADER_FIRST_FIELDS = {"video", "video_id", "original_vido_id", "original_video_id"}
_SNIFF = 1 << 16  # bytes looked at for the binary-file check


class AvaFormatError(UserError, ValueError):
    """A malformed AVA file; the message names the file and (1-based) line."""

    def __init__(self, path, line: int | None, msg: str):
        where = f"{path}" if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {msg}")
        self.path, self.line = str(path), line


class CsvTable:
    """A parsed numeric CSV: video ids as codes into `video_names`, columns 1.. as float64 (NaN where a
    row is short; int32 where the reader was asked to and every field is an integer), the column count
    per row.

    Columns are kept as the reader's chunks (zero-copy views of Arrow's buffers): `col(j)` joins a
    column on first use, `take` gathers a few rows without joining; on a 15M-row predictions file the
    evaluator needs only the score column whole.
    """

    def __init__(self, path, code_parts: list[np.ndarray], video_names: np.ndarray,
                 col_parts: list[list[np.ndarray]], ncol: np.ndarray, lines: list[int] | None, skip: int):
        self.path, self.video_names = path, video_names
        self._code_parts, self._parts = code_parts, col_parts
        self.ncol, self._lines, self._skip = ncol, lines, skip
        self._full: dict[int, np.ndarray] = {}  # column -> joined array
        self._codes: np.ndarray | None = None
        self._ints: dict[int, np.ndarray] = {}  # column -> int64 copy made by `int_col`
        self.offsets = np.concatenate([[0], np.cumsum([c.size for c in code_parts])]).astype(np.int64)

    @classmethod
    def from_arrays(cls, path, video_codes: np.ndarray, video_names: np.ndarray, cols: list[np.ndarray],
                    ncol: np.ndarray, lines: list[int] | None, skip: int) -> "CsvTable":
        return cls(path, [video_codes], video_names, [[c] for c in cols], ncol, lines, skip)

    def __len__(self) -> int:
        return self.ncol.shape[0]

    @property
    def n_cols(self) -> int:
        """Numeric columns (1..)."""
        return len(self._parts)

    @property
    def num(self) -> np.ndarray:
        """(N, n_cols - 1) float64 of columns 1.. (large files use `col` / `take`)."""
        return (np.column_stack([self.col(j).astype(np.float64, copy=False) for j in range(1, self.n_cols + 1)])
                if self._parts else np.zeros((len(self), 0)))

    def box(self, first_col: int = 2) -> np.ndarray:
        """(N, 4) float64 x1, y1, x2, y2 from columns first_col..first_col+3."""
        return np.column_stack([self.col(j) for j in range(first_col, first_col + 4)])

    @property
    def video_codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = _join(self._code_parts, np.int64)
        return self._codes

    @property
    def code_parts(self) -> list[np.ndarray]:
        return self._code_parts

    @property
    def video(self) -> np.ndarray:
        """(N,) str video ids (built on demand: large files only need the codes)."""
        return self.video_names[self.video_codes] if len(self) else np.zeros(0, str)

    def line(self, i: int) -> int:
        """1-based file line of row `i`."""
        if self._lines is None:
            self._lines = _data_lines(self.path, self._skip)
        return int(self._lines[i])

    def parts(self, j: int) -> list[np.ndarray]:
        """Column j as the reader's chunks (row ranges `offsets[c]:offsets[c + 1]`)."""
        return self._parts[j - 1]

    def col(self, j: int) -> np.ndarray:
        if j not in self._full:
            self._full[j] = _join(self._parts[j - 1], np.float64)
        return self._full[j]

    def take(self, j: int, rows: np.ndarray) -> np.ndarray:
        """Column j at the sorted row indices `rows`, gathered chunk by chunk (no joined column)."""
        if j in self._full or len(self._parts[j - 1]) == 1:
            return self.col(j)[rows]
        return _gather(self._parts[j - 1], self.offsets, rows)

    def take_codes(self, rows: np.ndarray) -> np.ndarray:
        """Video codes at the sorted row indices `rows`."""
        return self.video_codes[rows] if self._codes is not None else _gather(self._code_parts, self.offsets, rows)

    def is_int(self, j: int) -> bool:
        """Column j was parsed as integers (every field of the file is one)."""
        parts = self._parts[j - 1]
        return bool(parts) and parts[0].dtype.kind == "i"

    def int_col(self, j: int, what: str, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None and j in self._ints:  # checked and converted already (read functions, then callers)
            return self._ints[j]
        v = self.col(j) if rows is None else self.col(j)[rows]
        # parsed as integers: nothing to check; else checked in slices of 1M rows (no (N,) float and
        # bool temporaries: fresh pages cost on large files)
        step = 1 << 20
        bad_at = None if self.is_int(j) else next(
            (a for a in range(0, v.size, step) if np.any(v[a:a + step] != np.round(v[a:a + step]))), None)
        if bad_at is not None:
            sl = v[bad_at:bad_at + step]
            i = bad_at + int(np.flatnonzero(sl != np.round(sl))[0])
            i = i if rows is None else int(np.flatnonzero(rows)[i])
            raise AvaFormatError(self.path, self.line(i), f"{what} (column {j + 1}) is not an integer: {self.col(j)[i]}")
        out = v.astype(np.int64)
        if rows is None:
            self._ints[j] = out
        return out

    def check_finite(self, names: tuple[str, ...], cols: Iterable[int] | None = None) -> None:
        """NaN / inf anywhere in the numeric columns -> error naming line and column."""
        cols = range(1, self.n_cols + 1) if cols is None else cols
        for j in cols:
            if self.is_int(j):
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                # one pass per chunk, no temporaries: a NaN / inf makes a sum non-finite
                if all(np.isfinite(part.sum()) for part in self.parts(j)):
                    continue
            v = self.col(j)
            bad = ~np.isfinite(v) & (self.ncol > j)  # NaN padding of short rows is not a value
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise AvaFormatError(self.path, self.line(i), f"{names[j]} (column {j + 1}) is {v[i]}")

    def check_boxes(self, first_col: int = 2) -> None:
        """x2 < x1 or y2 < y1 -> error naming line (columns first_col..first_col+3 are x1, y1, x2, y2)."""
        x1s, y1s, x2s, y2s = (self.col(j) for j in range(first_col, first_col + 4))
        bad = (x2s < x1s) | (y2s < y1s)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            x1, y1, x2, y2 = x1s[i], y1s[i], x2s[i], y2s[i]
            raise AvaFormatError(self.path, self.line(i), f"inverted box x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g} "
                                 "(x2 < x1 or y2 < y1)")


def _gather(parts: list[np.ndarray], offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty(rows.size, parts[0].dtype if parts else np.float64)
    cut = np.searchsorted(rows, offsets)
    for c, part in enumerate(parts):
        a, b = cut[c], cut[c + 1]
        if b > a:
            np.take(part, rows[a:b] - offsets[c], out=out[a:b])
    return out


def _join(parts: list[np.ndarray], empty_dtype) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, empty_dtype)


def _check_text(path, head: bytes) -> None:
    if b"\x00" in head:
        raise AvaFormatError(path, None, "binary data (NUL bytes), not a CSV text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut by the sniff window
            raise AvaFormatError(path, None, f"not UTF-8 text (byte {e.start}): a binary file given as a CSV?") from None


def _data_lines(path, skip: int) -> np.ndarray:
    """1-based numbers of the non-empty lines after `skip` of them (pyarrow's row -> line map)."""
    buf = np.fromfile(path, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    ends = np.append(nl, buf.size) if (buf.size and buf[-1] != 10) else nl
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    length = ends - starts
    cr_only = (length == 1) & (buf[np.minimum(starts, max(buf.size - 1, 0))] == 13)
    nonempty = np.flatnonzero((length > 0) & ~cr_only) + 1
    return nonempty[skip:]


def _first_field(path) -> str:
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                return raw.split(b",", 1)[0].strip().strip(b'"').lower().decode("utf-8", "replace")
    return ""


def read_rows(path, ncols: Iterable[int], delimiter: str = ",", names: tuple[str, ...] | None = None,
              one_count: bool = False):
    """Line-by-line scan: rows, their 1-based line numbers, checks column counts (and numbers if `names`).

    `one_count`: every row must have the count of the first one (a 7-column row inside an 8-column
    file is an error, not a row with a default).
    """
    allowed = set(ncols)
    rows, lines, first_n = [], [], None
    with open(path, newline="", encoding="utf-8", errors="strict") as f:
        try:
            for lineno, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if not rows and row[0].strip().strip('"').lower() in HEADER_FIRST_FIELDS:
                    continue  # tolerated header line
                if len(row) not in allowed:
                    raise AvaFormatError(path, lineno, f"expected {' or '.join(map(str, sorted(allowed)))} "
                                         f"columns, found {len(row)}: {','.join(row)!r}")
                if one_count and first_n is not None and len(row) != first_n:
                    raise AvaFormatError(path, lineno, f"{len(row)} columns, but the file's first row has "
                                         f"{first_n}: {','.join(row)!r}")
                first_n = len(row) if first_n is None else first_n
                if names is not None:
                    for j in range(1, len(row)):
                        try:
                            float(row[j])
                        except ValueError:
                            raise AvaFormatError(path, lineno, f"{names[j]} (column {j + 1}) is not a number: "
                                                 f"{row[j]!r}") from None
                rows.append(row)
                lines.append(lineno)
        except UnicodeDecodeError as e:
            raise AvaFormatError(path, len(lines) + 1 if not lines else lines[-1] + 1,
                                 f"not UTF-8 text ({e.reason}): a binary file given as a CSV?") from None
        except csv.Error as e:
            raise AvaFormatError(path, None, f"CSV syntax error: {e}") from None
    return rows, lines


def _from_rows(path, rows, lines, k: int, strip_ids: bool = True) -> CsvTable:
    num = np.full((len(rows), k - 1), np.nan)
    for r, row in enumerate(rows):
        num[r, :len(row) - 1] = [float(x) for x in row[1:]]
    names, codes = np.unique(np.array([r[0].strip() if strip_ids else r[0] for r in rows], dtype=str),
                             return_inverse=True) if rows else (
        np.zeros(0, str), np.zeros(0, np.int64))
    return CsvTable.from_arrays(path, codes.ravel().astype(np.int64), names, [num[:, j].copy() for j in range(k - 1)],
                                np.array([len(r) for r in rows], np.int64), lines, 0)


def _arrow_read(path, skip: int, n: int, int_cols: tuple[int, ...], pool):
    """pyarrow's multi-threaded parse, or None when it refuses the file (the line scan names the line)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    types = {"f0": pa.dictionary(pa.int32(), pa.string()),  # ids straight into a dictionary column
             **{f"f{j}": pa.int32() if j in int_cols else pa.float64() for j in range(1, n)}}
    try:
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(autogenerate_column_names=True, skip_rows=skip, use_threads=True),
            parse_options=pcsv.ParseOptions(delimiter=",", newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False,
                                                quoted_strings_can_be_null=False),
            memory_pool=pool)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return None


def load_csv(path, ncols: tuple[int, ...], names: tuple[str, ...], one_count: bool = False,
             int_cols: tuple[int, ...] = (), strip_ids: bool = True) -> CsvTable:
    """Parse `path` (columns: 1 text + numbers; allowed column counts `ncols`).

    `strip_ids`: spaces around a video id are dropped (` v1` is `v1`); False keeps the id as written,
    as the reference AVA evaluators key keyframes.

    `int_cols`: columns parsed as int32 when every one of their fields is an integer (then
    `int_col` has nothing to check); a file where one is not (`3.0`, `1e3`) is parsed as floats.
    """
    import pyarrow as pa

    k = max(ncols)
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    _check_text(path, head)
    if not head.strip():
        return CsvTable.from_arrays(path, np.zeros(0, np.int64), np.zeros(0, str), [np.zeros(0)] * (k - 1),
                                    np.zeros(0, np.int64), [], 0)
    skip = 1 if _first_field(path) in HEADER_FIRST_FIELDS else 0
    first_row = next((ln for ln in head.splitlines() if ln.strip()), b"")
    n_first = len(next(csv.reader([first_row.decode("utf-8", "replace")]))) if skip == 0 else None
    table = None
    # the system allocator hands freed buffers back to the OS at once (mimalloc keeps them)
    pool = pa.system_memory_pool()
    if n_first is None or n_first in ncols:
        n = n_first if n_first is not None else k
        for ints in ((int_cols, ()) if int_cols else ((),)):
            table = _arrow_read(path, skip, n, ints, pool)
            if table is not None:
                break
        if table is not None and table.num_columns not in ncols:
            table = None
    if table is None:
        rows, lines = read_rows(path, ncols, names=names, one_count=one_count)
        return _from_rows(path, rows, lines, k, strip_ids)
    n, n_cols, columns = table.num_rows, table.num_columns, table.columns
    del table
    enc = columns[0].unify_dictionaries(memory_pool=pool)  # per-chunk dictionaries -> one shared dictionary
    words = enc.chunk(0).dictionary.to_pylist() if enc.num_chunks else []
    # strip the (few) distinct ids, then one sorted vocabulary independent of the file's row order
    ids = np.asarray(words, dtype=str)
    vocab, remap = np.unique(np.char.strip(ids) if strip_ids else ids, return_inverse=True)
    remap = remap.ravel().astype(np.int32)
    identity = bool(np.array_equal(remap, np.arange(remap.size)))  # ids first seen in sorted order: no remap
    code_parts = [c.indices.to_numpy() if identity else remap[c.indices.to_numpy()] for c in enc.chunks]
    # zero-copy views of Arrow's buffers (no nulls, fixed width); each view keeps its buffer alive
    col_parts = [[c.to_numpy(zero_copy_only=False) for c in columns[j].chunks] if j < n_cols else
                 [np.full(n, np.nan)] for j in range(1, k)]
    # one count for every row: a read-only broadcast view, not an (N,) array
    return CsvTable(path, code_parts, vocab, col_parts, np.broadcast_to(np.int64(n_cols), (n,)), None, skip)
