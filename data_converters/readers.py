"""Streaming readers for raw dataset files: JSON arrays (ijson), JSON Lines, CSV and Parquet in chunks.

Memory stays bounded whatever the file size: nothing here materializes a whole file. A file that cannot be
parsed at all (truncated JSON, a missing column) raises `SourceError` naming the file, the position and the
fix; a single bad record is the converter's business (it yields a `Skipped`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlmrecipes.data_converters import datasets

PARQUET_BATCH_ROWS = 1024


class SourceError(Exception):
    """The raw input itself is unusable (not one bad record)."""


def iter_json_array(path: Path, prefix: str = "item") -> Iterator[tuple[int, Any]]:
    """(index, object) for each element of the JSON array at `prefix` ("item": a top-level array;
    "annotations.item": the `annotations` array of a top-level object), parsed incrementally."""
    import ijson

    index = -1
    try:
        with open(path, "rb") as f:
            # use_float: plain floats instead of Decimal, so records serialize with json.dumps.
            for index, obj in enumerate(ijson.items(f, prefix, use_float=True)):
                yield index, obj
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist: check --input")
    except ijson.JSONError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # ijson adds a multi-line caret diagram
        raise SourceError(f"{path}: invalid JSON after element {index} of `{prefix}`: {reason}: the file is truncated "
                          "or not JSON; re-download it")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, value or the `datasets.DatasetError` naming the line) per non-blank line, read by
    the datasets' one JSON Lines reader; a bad line (not UTF-8, not JSON) is the caller's skip."""
    try:
        yield from datasets.iter_jsonl(path)
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist: check --input")


def iter_csv(path: Path, required: tuple[str, ...] = (),
             delimiter: str = ",") -> Iterator[tuple[int, dict[str, str] | ValueError]]:
    """(1-based line number of the row, row dict) streamed row by row; checks the header for `required`.

    A row holding bytes that are not UTF-8 comes as a ValueError naming the line (the caller's skip), so one
    bad byte costs one record, not the whole file: the bytes are read with surrogateescape and checked.
    """
    try:
        f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist: check --input")
    with f:
        reader = csv.DictReader(f, delimiter=delimiter)
        fieldnames = reader.fieldnames or []
        if any(_undecodable(name) for name in fieldnames):
            raise SourceError(f"{path}: the header is not UTF-8: re-save the file as UTF-8")
        missing = [c for c in required if c not in fieldnames]
        if missing:
            raise SourceError(f"{path}: header {fieldnames} lacks column(s) {missing}: is this the right file?")
        for row in reader:
            if any(_undecodable(v) for v in row.values() if isinstance(v, str)):
                yield reader.line_num, ValueError(f"line {reader.line_num} has bytes that are not UTF-8: "
                                                  "re-save the file as UTF-8")
            else:
                yield reader.line_num, row


def _undecodable(text: str) -> bool:
    """True if `text` carries surrogate escapes, i.e. bytes that were not valid UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def iter_parquet(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, {column: value}) read PARQUET_BATCH_ROWS rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist: check --input")
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc}): the download is truncated or corrupt")
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise SourceError(f"{path}: columns {parquet.schema_arrow.names} lack {missing}: is this the right file?")
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: corrupt Parquet data after row {index} ({exc}): re-download the file")
