"""The one writer behind every converter: a stream of `Sample`/`Skipped` -> split file + media + skip report.

Contract (issue 3):
- Output: LLaMA-Factory ShareGPT multimodal records, JSON Lines (one file per split) with image paths relative
  to the media root (the dataset dir when the output lives inside it, so LLaMA-Factory's default `media_dir`
  finds them), or Parquet with the image bytes embedded (`images: list<struct<bytes, path>>`, the layout
  LLaMA-Factory's `mm_plugin._regularize_images` reads).
- Streaming: records are written as they come; memory holds one Parquet batch and the set of media names
  already written (so an image shared by many questions is stored once).
- Atomic: every file is written to `<file>.tmp` and renamed at the end; an interrupted or `--strict`-failed
  run removes its temp files and never leaves a file that looks complete.
- No leftovers after a kill: each run journals the media files it creates (`journal.RunJournal`), and the
  next run in the folder removes a killed run's temp files and the media no committed output points at.
- Deterministic: output order is input order, images are re-encoded with fixed settings, no timestamps.
- Skip report: `<split>.skipped.json` lists every record not emitted with its reason and detail; counts per
  reason are returned (and printed by the CLI). `strict=True` raises `StrictError` at the first skip that is
  not a policy skip (`schema.POLICY_REASONS`).
- Never empty: a split with no record left (a wrong split name, a filter that matches nothing) raises
  `EmptySplitError` and commits nothing, so no empty dataset is ever registered or replaces a previous output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from vlmrecipes.data_converters.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageError,
    extension,
    load_rgb,
    read_bytes,
    resize_to_max_pixels,
)
from vlmrecipes.data_converters.journal import RunJournal
from vlmrecipes.data_converters.schema import (
    MISSING_IMAGE,
    POLICY_REASONS,
    ImageRef,
    Record,
    Sample,
    Skipped,
    check_messages,
)

PARQUET_BATCH = 256  # rows per Parquet row group: bounded memory with embedded image bytes
JPEG_QUALITY = 95  # re-encoding a JPEG (resize, rotation, CMYK): visually lossless, deterministic


class StrictError(Exception):
    """`--strict`: the first record that would have been skipped."""


class EmptySplitError(Exception):
    """No record survived: nothing is committed (a previous output stays), the message counts the skips by reason
    with one example each."""


@dataclass
class WriteOptions:
    """How `write_split` writes one split.

    Attributes:
        out_dir: folder receiving `<split>.jsonl|parquet`, `<split>.skipped.json` and `media/`.
        split: split name, the output file stem.
        media_root: image paths in JSONL are written relative to this folder (LLaMA-Factory's `media_dir`).
        fmt: "jsonl" (images as files under `media/`) or "parquet" (image bytes embedded, no media files).
        media: "copy" decodes, checks, optionally resizes and stores each image under `media/`; "reference"
            only checks that each image file exists and writes its absolute path (huge sets already on a
            fast disk; `vlmr validate --allow-absolute` decodes them later).
        max_pixels: resize images so width x height <= max_pixels (the recipe's `image_max_pixels`).
        max_image_pixels: decompression-bomb guard, larger images are skipped.
        strict: raise StrictError at the first non-policy skip.
        source: what the records come from (named in strict errors and the report).
    """

    out_dir: Path
    split: str = "train"
    media_root: Path | None = None
    fmt: str = "jsonl"
    media: str = "copy"
    max_pixels: int | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    strict: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.fmt not in ("jsonl", "parquet"):
            raise ValueError(f"fmt must be 'jsonl' or 'parquet', got {self.fmt!r}")
        if self.media not in ("copy", "reference"):
            raise ValueError(f"media must be 'copy' or 'reference', got {self.media!r}")
        if self.fmt == "parquet" and self.media == "reference":
            raise ValueError("parquet output embeds image bytes: use media='copy'")
        self.out_dir = Path(self.out_dir)
        self.media_root = Path(self.media_root) if self.media_root else self.out_dir


@dataclass
class SplitReport:
    output: Path
    skipped_file: Path
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # skip reason -> the detail of its first record
    leftovers: tuple[int, int] = (0, 0)  # (files, bytes) an interrupted earlier run left, removed first

    def summary(self) -> str:
        lines = [f"{self.output}: {self.written} records written, {sum(self.skipped.values())} skipped"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.skipped.items())]
        if self.skipped:
            lines.append(f"  details: {self.skipped_file}")
        if self.leftovers[0]:
            files, size = self.leftovers
            lines.append(f"  removed {files} files ({size / 2**20:.1f} MiB) left by an interrupted conversion")
        return "\n".join(lines)


def _atomic_target(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _safe_name(name: str) -> PurePosixPath:
    """A media name made relative and free of `..` (a raw dataset must not write outside media/)."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    if not parts:
        raise ValueError(f"empty media name {name!r}")
    return PurePosixPath(*parts)


class MediaStore:
    """Stores each distinct image once under `<out>/media/` (or as Parquet bytes) and remembers outcomes.

    Every file it creates is journaled first; `orphans()` names those that no written row uses.
    """

    def __init__(self, opts: WriteOptions, journal: RunJournal):
        self.opts = opts
        self.journal = journal
        self.media_dir = opts.out_dir / "media"
        self._done: dict[str, Any] = {}  # media name -> stored value or ImageError (shared images)
        self._listings: dict[str, frozenset[str]] = {}  # folder -> its file names (reference mode)
        self._created: dict[str, str] = {}  # path written in rows -> media name, for the files this run created
        self._used: set[str] = set()  # paths of the rows written

    def use(self, row: dict[str, Any]) -> None:
        """A row is written: its images are in the output."""
        self._used.update(image for image in row["images"] if isinstance(image, str))

    def orphans(self, committed: bool) -> list[str]:
        """Media names this run created that its output does not use (all of them if it was not committed)."""
        return [name for path, name in self._created.items() if not committed or path not in self._used]

    def store(self, ref: ImageRef) -> Any:
        """JSONL: the path to write in `images`; Parquet: {"bytes", "path"}. Raises ImageError."""
        if self.opts.media == "reference" and isinstance(ref.source, (str, Path)):
            # Existence only: decoding millions of files is what copy mode is for. abspath, not resolve(), and
            # one listing per folder instead of one stat per image (CC3M keeps 595K images in one folder).
            path = os.path.abspath(ref.source)
            folder, name = os.path.split(path)
            if name not in self._files_in(folder):
                raise ImageError(MISSING_IMAGE, f"{path} does not exist: check --images / the image folder")
            return path
        outcome = self._done.get(ref.name)
        if outcome is None:
            try:
                outcome = self._encode(ref)
            except ImageError as exc:
                outcome = exc
            self._done[ref.name] = outcome
        if isinstance(outcome, ImageError):
            raise outcome
        return outcome

    def _files_in(self, folder: str) -> frozenset[str]:
        """Names of the regular files (symlinks followed, as os.path.isfile) in `folder`, listed once."""
        names = self._listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(entry.name for entry in entries if entry.is_file())
            except OSError:  # missing, not a folder, or unreadable: none of its images can be used
                names = frozenset()
            self._listings[folder] = names
        return names

    def _encode(self, ref: ImageRef) -> Any:
        loaded = load_rgb(ref.source, max_image_pixels=self.opts.max_image_pixels)
        image = loaded.image
        if self.opts.max_pixels:
            image = resize_to_max_pixels(image, self.opts.max_pixels)
        if loaded.unchanged and image is loaded.image:
            data, fmt = read_bytes(ref.source), loaded.format  # verbatim copy: lossless and fast
        else:
            fmt = "JPEG" if loaded.format == "JPEG" else "PNG"
            buffer = io.BytesIO()
            image.save(buffer, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
            data = buffer.getvalue()
        name = _safe_name(ref.name)
        name = name.with_name(name.stem + extension(fmt))  # also fixes wrong extensions
        if self.opts.fmt == "parquet":
            return {"bytes": data, "path": str(name)}
        target = self.media_dir / name
        if target.exists() and target.read_bytes() != data:
            # The previous output's records point at this name until the new split file replaces them:
            # never change those bytes; the new image gets a content-suffixed name instead.
            target = target.with_name(f"{target.stem}-{hashlib.sha256(data).hexdigest()[:12]}{target.suffix}")
        path = os.path.relpath(target, self.opts.media_root).replace(os.sep, "/")
        if target.exists():  # a rerun (or another split) stored the same image: it is theirs, not journaled
            return path
        self.journal.will_create(target.relative_to(self.media_dir).as_posix())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _atomic_target(target)
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self._created[path] = target.relative_to(self.media_dir).as_posix()
        return path


class _SkipLog:
    """Streams `<split>.skipped.json` ({"source", "skipped": [...], "counts", "written"}) to a temp file."""

    def __init__(self, path: Path, source: str):
        self.path, self.tmp = path, _atomic_target(path)
        self.file = open(self.tmp, "w", encoding="utf-8")
        self.file.write('{"source": %s, "skipped": [' % json.dumps(source))
        self.first = True

    def add(self, skipped: Skipped) -> None:
        item = {"id": skipped.id, "reason": skipped.reason, "detail": skipped.detail}
        self.file.write(("\n  " if self.first else ",\n  ") + json.dumps(item, ensure_ascii=False))
        self.first = False

    def finish(self, counts: Counter, written: int) -> None:
        self.file.write('\n], "counts": %s, "written": %d}\n' % (json.dumps(dict(sorted(counts.items()))), written))
        self.file.close()
        os.replace(self.tmp, self.path)


class _JsonlSink:
    """UTF-8 JSON Lines through orjson; a row orjson refuses (an integer beyond 64 bits) goes through json."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, _atomic_target(path)
        self.file = open(self.tmp, "wb")

    def add(self, row: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # orjson.JSONEncodeError
            line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        self.file.write(line)

    def finish(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)


class _ParquetSink:
    """Row groups of PARQUET_BATCH rows; the schema is fixed by the first batch (extra fields included)."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, _atomic_target(path)
        self.rows: list[dict[str, Any]] = []
        self.writer = None
        self.schema = None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.writer.write_table(table)
        self.rows = []

    def finish(self) -> None:
        self._flush()
        if self.writer is None:  # no record at all: still an (empty) valid file
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"messages": pa.array([], pa.null())}), self.tmp)
        else:
            self.writer.close()
        os.replace(self.tmp, self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _row(sample: Sample, images: list[Any]) -> dict[str, Any]:
    return {"id": sample.id, "messages": sample.messages, "images": images, **sample.extra}


def write_split(records: Iterable[Record], opts: WriteOptions) -> SplitReport:
    """Consume a converter's stream and write one split atomically. See the module docstring."""
    journal = RunJournal(opts.out_dir, opts.split)  # removes what a killed run left here, before anything new
    output = opts.out_dir / f"{opts.split}.{opts.fmt}"
    report = SplitReport(output=output, skipped_file=opts.out_dir / f"{opts.split}.skipped.json",
                         leftovers=journal.removed)
    media = MediaStore(opts, journal)
    committed = False  # the split file is in place: its rows' media must stay
    try:
        sink = _JsonlSink(output) if opts.fmt == "jsonl" else _ParquetSink(output)
        skips = _SkipLog(report.skipped_file, opts.source)
        try:
            for record in records:
                if isinstance(record, Sample):
                    record = _materialize(record, media)
                if isinstance(record, Skipped):
                    if opts.strict and record.reason not in POLICY_REASONS:
                        raise StrictError(f"{opts.source}: record {record.id!r}: {record.reason}: {record.detail}")
                    report.skipped[record.reason] += 1
                    report.examples.setdefault(record.reason, record.detail)
                    skips.add(record)
                else:
                    sink.add(record)
                    media.use(record)
                    report.written += 1
            if not report.written:
                reasons = "; ".join(f"{reason}: {count}, e.g. {report.examples[reason]}"
                                    for reason, count in sorted(report.skipped.items()))
                raise EmptySplitError(f"{opts.source}: 0 records for split {opts.split!r}"
                                      + (f" ({reasons})" if reasons else " (the input holds none)"))
            sink.finish()
            committed = True
            skips.finish(report.skipped, report.written)
        finally:
            if not committed:
                if isinstance(sink, _ParquetSink):
                    sink.close()
                for handle in (getattr(sink, "file", None), skips.file):
                    if handle is not None:
                        handle.close()
                for tmp in (sink.tmp, skips.tmp):
                    tmp.unlink(missing_ok=True)
    finally:
        journal.close(media.orphans(committed))
    return report


def _materialize(sample: Sample, media: MediaStore) -> dict[str, Any] | Skipped:
    """The output row of a sample, or why it is skipped (conversation checks, then images)."""
    problem = check_messages(sample.messages, len(sample.images))
    if problem:
        return Skipped(sample.id, *problem)
    stored = []
    for ref in sample.images:
        try:
            stored.append(media.store(ref))
        except ImageError as exc:
            return Skipped(sample.id, exc.reason, exc.detail)
    return _row(sample, stored)
