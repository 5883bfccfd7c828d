"""Benchmark samples whose images are decoded only when a sample is asked for.

Benchmarks ship thousands of multi-image rows (SPAR-Bench: ~7.2k rows of 1-3 full-size frames); decoding
them all up front does not fit in memory. A reader therefore keeps, per record, a *stub*: the `Sample`
without pixels (question, options, answer, task, category, id, ``meta["row"]``) whose ``images`` is a
`LazyImages` that knows how many views the record has and how to get them:

* a JSON / JSONL record: the image paths (checked to exist at read time);
* a parquet row: (file, row group, row). Nothing of the image column is held: when an image is asked
  for, the image column of that row's row group is read (``ParquetFile.read_row_group(g, columns=[c])``)
  and kept until a row of another group is asked for (the last group is cached).

    samples, summary = read_spar_bench("SPAR-Bench/")       # samples: LazySamples, nothing decoded
    len(samples); samples[:100]                              # LazySamples, nothing decoded
    samples.where(lambda s: s.num_views >= 2)                # filter on stubs, nothing decoded
    samples.stub(3)                                          # the Sample without decoding (lazy images)
    samples[3]                                               # Sample with its images decoded now
    for s in samples: ...                                    # stubs: s.images decode when read

`samples[i]` decodes record i's images into a plain list (a DataError naming file, record and field if one
cannot be decoded). Iterating yields the stubs, so a pass that only reads text, ids or ``num_views``
(``[s for s in samples if s.num_views >= 2]``) decodes nothing; their ``images`` decode each time an item
is read (nothing is kept: take ``list(s.images)`` once to keep the pixels).

Field problems (missing fields, bad answers, bad JSON, empty image lists, missing image files) are found
and counted while reading (`read_bench_records`), without decoding any image.
"""
from __future__ import annotations

import json
import operator
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .common import DataError, ReadSummary, RecordError, handle, read_image, where
from .record import Sample


# --------------------------------------------------------------------------------------------------
# One record's images
# --------------------------------------------------------------------------------------------------
def decode_item(item, base: Path | None, at: str, name: str, k: int) -> np.ndarray:
    """One image of an image field: a path (relative to `base`), encoded bytes, or a {"bytes", "path"}
    dict (as the Hugging Face Image feature stores it). DataError naming record and field if it fails."""
    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    try:
        if isinstance(item, (bytes, bytearray, memoryview)):
            return read_image(bytes(item))
        if isinstance(item, (str, Path)):
            p = Path(item)
            if not p.is_absolute() and base is not None:
                p = base / p
            if not p.exists():
                raise DataError(f"{at}: field {name!r}[{k}]: image file not found: {p}")
            return read_image(p)
    except DataError:
        raise
    except Exception as e:  # PIL's decode errors have many types
        raise DataError(f"{at}: field {name!r}[{k}]: cannot decode image ({type(e).__name__}: {e})") from e
    raise DataError(f"{at}: field {name!r}[{k}]: expected a path or image bytes, got {type(item).__name__}")


class PathImages:
    """The images of a JSON record: its field's items (paths or {"path"} dicts), resolved against `base`."""

    __slots__ = ("items", "base", "at", "name")

    def __init__(self, items: list, base: Path | None, at: str, name: str):
        self.items, self.base, self.at, self.name = list(items), base, at, name

    def load(self, k: int) -> np.ndarray:
        return decode_item(self.items[k], self.base, self.at, self.name, k)

    def load_all(self) -> list[np.ndarray]:
        return [self.load(k) for k in range(len(self.items))]

    def __getstate__(self):
        return (self.items, self.base, self.at, self.name)

    def __setstate__(self, state):
        self.items, self.base, self.at, self.name = state


class ParquetSource:
    """One parquet file's image column, read a row group at a time (the last group read is kept)."""

    def __init__(self, path: Path, column: str, base: Path | None):
        self.path, self.column, self.base = Path(path), column, base
        self._pf = None
        self._group: tuple[int, object] | None = None     # (row group, its image column)
        self.groups_read = 0                               # how many row-group reads so far (for tests)

    def file(self):
        if self._pf is None:
            import pyarrow.parquet as pq

            self._pf = pq.ParquetFile(self.path)
        return self._pf

    def cell(self, group: int, row: int):
        """The image column's value (a pyarrow scalar) of row `row` of row group `group`."""
        if self._group is None or self._group[0] != group:
            col = self.file().read_row_group(group, columns=[self.column]).column(0)
            self._group = (group, col)
            self.groups_read += 1
        return self._group[1][row]

    # the open file and the cached group are per process: never pickled
    def __getstate__(self):
        return {"path": self.path, "column": self.column, "base": self.base}

    def __setstate__(self, state):
        self.__init__(state["path"], state["column"], state["base"])


class ParquetImages:
    """The images of one parquet row: (source, row group, row in the group)."""

    __slots__ = ("source", "group", "row", "at")

    def __init__(self, source: ParquetSource, group: int, row: int, at: str):
        self.source, self.group, self.row, self.at = source, group, row, at

    def _items(self, k: int | None):
        import pyarrow as pa

        cell = self.source.cell(self.group, self.row)
        if isinstance(cell, (pa.ListScalar, pa.LargeListScalar)):
            values = cell.values
            if values is None:
                raise DataError(f"{self.at}: field {self.source.column!r}: no images (null)")
            return [v.as_py() for v in values] if k is None else [values[k].as_py()]
        return [cell.as_py()]                               # a single image per row

    def load(self, k: int) -> np.ndarray:
        return decode_item(self._items(k)[0], self.source.base, self.at, self.source.column, k)

    def load_all(self) -> list[np.ndarray]:
        return [decode_item(it, self.source.base, self.at, self.source.column, k)
                for k, it in enumerate(self._items(None))]

    def __getstate__(self):
        return (self.source, self.group, self.row, self.at)

    def __setstate__(self, state):
        self.source, self.group, self.row, self.at = state


class LazyImages(Sequence):
    """A record's images: the count is known, each item is decoded when read (and not kept)."""

    __slots__ = ("ref", "n")

    def __init__(self, ref, n: int):
        self.ref, self.n = ref, int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.ref.load(j) for j in range(self.n)[k]]
        k = operator.index(k)
        if not -self.n <= k < self.n:
            raise IndexError(f"image index {k} out of range for {self.n} images")
        return self.ref.load(k % self.n)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.decode())

    def decode(self) -> list[np.ndarray]:
        """Every image, decoded now."""
        out = self.ref.load_all()
        if len(out) != self.n:
            raise DataError(f"{self.ref.at}: expected {self.n} images, found {len(out)}")
        return out

    def __repr__(self) -> str:
        return f"LazyImages({self.n} images of {self.ref.at})"

    def __getstate__(self):
        return (self.ref, self.n)

    def __setstate__(self, state):
        self.ref, self.n = state


# --------------------------------------------------------------------------------------------------
# The samples
# --------------------------------------------------------------------------------------------------
class LazySamples(Sequence):
    """Sequence[Sample] over stubs (Samples whose `images` is a LazyImages); see the module doc."""

    def __init__(self, stubs: Sequence[Sample] = ()):
        self._stubs = list(stubs)

    def __len__(self) -> int:
        return len(self._stubs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazySamples(self._stubs[i])
        s = self._stubs[operator.index(i)]
        images = s.images.decode() if isinstance(s.images, LazyImages) else list(s.images)
        return replace(s, images=images, meta=dict(s.meta))

    def stub(self, i) -> Sample:
        """Sample i without decoding: `images` is its LazyImages (len known, items decoded when read)."""
        s = self._stubs[operator.index(i)]
        return replace(s, meta=dict(s.meta))

    def stubs(self) -> Iterator[Sample]:
        for i in range(len(self._stubs)):
            yield self.stub(i)

    __iter__ = stubs

    def where(self, keep: Callable[[Sample], bool]) -> LazySamples:
        """The samples whose stub passes `keep` (e.g. ``lambda s: s.num_views >= 2``); decodes nothing."""
        return LazySamples([s for s in self._stubs if keep(s)])

    def num_views(self, i) -> int:
        return len(self._stubs[operator.index(i)].images)

    def __add__(self, other) -> LazySamples:
        if isinstance(other, LazySamples):
            return LazySamples(self._stubs + other._stubs)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LazySamples({len(self)} samples)"


# --------------------------------------------------------------------------------------------------
# Reading records
# --------------------------------------------------------------------------------------------------
def jsonable(value):
    """A record's value as plain Python (numpy / pyarrow scalars and arrays converted), JSON-able."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if hasattr(value, "as_py"):                       # pyarrow scalar
        return jsonable(value.as_py())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def bench_files(path: Path, exts=(".jsonl", ".json", ".parquet")) -> list[Path]:
    if not path.exists():
        raise DataError(f"benchmark file or directory not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in exts)
    if not files:
        raise DataError(f"no {'/'.join(exts)} files under {path}")
    return files


def _json_records(path: Path):
    """(index, record or RecordError) of a .json list or a .jsonl file."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        yield from enumerate(data)
        return
    with open(path) as fh:
        for n, line in enumerate(fh):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, RecordError(f"{where(path, n)}: not valid JSON ({e})", "bad json")


def _json_images(rec: dict, field: str, base: Path, at: str) -> LazyImages:
    if field not in rec or rec[field] is None:
        raise RecordError(f"{at}: missing field {field!r}", f"missing {field}")
    value = rec[field]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise RecordError(f"{at}: field {field!r}: empty", f"bad {field}")
    for k, it in enumerate(items):
        if isinstance(it, dict):
            it = it.get("bytes") or it.get("path")
        if not isinstance(it, str):
            raise RecordError(f"{at}: field {field!r}[{k}]: expected a path, got {type(it).__name__}",
                              f"bad {field}")
        p = Path(it) if Path(it).is_absolute() else base / it
        if not p.is_file():
            raise RecordError(f"{at}: field {field!r}[{k}]: file not found: {p}", f"missing {field} file")
    return LazyImages(PathImages(items, base, at, field), len(items))


def _parquet_view_counts(pf, column: str) -> list[int | None]:
    """Images per row of `column` (None: null), reading the smallest leaf of the column (the ``path`` of
    {bytes, path} items when there is one), one row group at a time: no image bytes are kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    leaves = [pf.schema.column(i).path for i in range(len(pf.schema))]
    mine = [p for p in leaves if p == column or p.startswith(column + ".")]
    leaf = next((p for p in mine if not p.endswith(".bytes")), mine[0]) if len(mine) > 1 else None
    counts: list[int | None] = []
    for g in range(pf.num_row_groups):
        col = pf.read_row_group(g, columns=[leaf] if leaf else [column]).column(0)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            counts += pc.list_value_length(col).to_pylist()
        else:
            counts += [1 if valid else None for valid in pc.is_valid(col).to_pylist()]
    return counts


def _parquet_records(path: Path, image_fields: tuple[str, ...], base: Path):
    """(index, record without its image columns, {field: (source, group, row, count)})."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read parquet ({type(e).__name__}: {e})") from e
    names = pf.schema_arrow.names
    present = [f for f in image_fields if f in names]
    # every other column is the record (but not a pandas index written as a column)
    others = [c for c in names if c not in present and not (c.startswith("__index_level_") and c.endswith("__"))]
    rows = pf.read(columns=others).to_pylist() if others else [{} for _ in range(pf.metadata.num_rows)]
    located = []                                       # row -> (group, row in group)
    for g in range(pf.num_row_groups):
        located += [(g, j) for j in range(pf.metadata.row_group(g).num_rows)]
    images = {f: (ParquetSource(path, f, base), _parquet_view_counts(pf, f)) for f in present}
    for n, rec in enumerate(rows):
        g, j = located[n]
        yield n, rec, {f: (src, g, j, counts[n]) for f, (src, counts) in images.items()}


def read_bench_records(path, source: str, parse: Callable[[dict, str, Path, int], Sample], image_field: str,
                       exts=(".jsonl", ".json", ".parquet"), strict: bool = False, image_root=None,
                       default_root: Callable[[Path], Path] = lambda f: f.parent):
    """The loop every benchmark reader shares. Each record of each file under `path` goes through
    `parse(record, at, file, index) -> Sample` (the record without its image field; `at` names file and
    record), then gets its image field as a LazyImages and ``meta["row"]`` = the record without its image
    field (JSON-able). Image paths resolve against `image_root` or `default_root(file)`. A RecordError
    becomes a counted skip (a DataError with `strict`). Returns (LazySamples, ReadSummary)."""
    summary = ReadSummary(source)
    stubs: list[Sample] = []
    for f in bench_files(Path(path), exts):
        base = Path(image_root) if image_root else default_root(f)
        if f.suffix == ".parquet":
            records = _parquet_records(f, (image_field,), base)
        else:
            records = ((n, rec, None) for n, rec in _json_records(f))
        for n, rec, pimgs in records:
            try:
                if isinstance(rec, RecordError):
                    raise rec
                if not isinstance(rec, dict):
                    raise RecordError(f"{where(f, n)}: expected a JSON object, got {type(rec).__name__}",
                                      "not an object")
                at = where(f, n, jsonable(rec.get("id")))
                row = {k: jsonable(v) for k, v in rec.items() if k != image_field}
                sample = parse(row, at, f, n)
                if pimgs is None:
                    images = _json_images(rec, image_field, base, at)
                else:
                    if image_field not in pimgs or pimgs[image_field][3] is None:
                        raise RecordError(f"{at}: missing field {image_field!r}", f"missing {image_field}")
                    src, g, j, count = pimgs[image_field]
                    if count == 0:
                        raise RecordError(f"{at}: field {image_field!r}: empty", f"bad {image_field}")
                    images = LazyImages(ParquetImages(src, g, j, at), count)
                sample.images = images
                sample.meta = {**sample.meta, "row": row}
                stubs.append(sample)
                summary.read += 1
            except RecordError as e:
                handle(e, summary, strict)
    return LazySamples(stubs), summary.log()
