"""What a conversion run creates in its output folder, so that the next run removes what a killed one left.

A run killed by SIGKILL (the OOM killer, `kill -9`, a scheduler's time limit) runs no cleanup: it leaves its
temp files (`<split>.jsonl.tmp`, `<split>.skipped.json.tmp`, `media/<name>.tmp`) and every media file it
stored before its split file was committed, and no output points at those. The next run in the same folder
removes them, and only them:

- Journal. Before a run creates a media file it appends the file's name to its journal
  (`<out>/.<split>.<random>.journal.tmp`, one JSON string per line, written unbuffered so that the kernel
  holds it even if the process dies the next instant). The name is written before the file, so every file a
  killed run may have created, its `.tmp` included, is named in its journal. A file the run found already
  stored with the same bytes is not journaled: it belongs to whoever wrote it.
- Lock. Every run holds a shared `flock` on `<out>/.vlmr-convert.lock` while it writes; the kernel drops
  it when the process dies, however it dies. A run that gets the lock exclusively knows no other run is
  writing into the folder, so every journal there is finished or stale, and it removes their leftovers:
  each journaled file that no committed split file (`<out>/*.jsonl`) points at, and the split temp files.
  A run that cannot get it exclusively (another split converting into the same folder) leaves them to the
  last run to finish: the other run may have reused one of those files in its not yet committed output.
- Own orphans. A run that ends (committed or failed) tries the exclusive lock too, so the files it stored
  for records it then skipped (a record's second image failed after its first was stored) or for an output
  it did not commit are removed at once when it is alone.

Why a journal rather than writing media into a run-specific temp folder renamed at commit: records name
their images' final paths while they stream, so a temp folder has to be merged into `media/` (shared by the
other splits) file by file at commit, and a kill during that merge leaves exactly the orphans it was meant
to prevent; the journal has no such window and needs no second copy of the images. A power cut may lose
the journal's last lines with the files they name (no fsync per image): those stay as unreferenced files.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

import orjson

LOCK_NAME = ".vlmr-convert.lock"
JOURNAL_SUFFIX = ".journal.tmp"
# The split temp files `writer` writes beside its outputs (`<split>.<ext>.tmp`).
SPLIT_TEMP_PATTERNS = ("*.jsonl.tmp", "*.parquet.tmp", "*.skipped.json.tmp")


def referenced_media(out_dir: Path) -> set[str]:
    """Media names (relative to `<out>/media`) that the committed split files in `out_dir` point at.

    An image path points at `media/<name>` whatever folder it is relative to ("ds/media/cat/1.png" with the
    dataset dir as media root, "media/cat/1.png" with the output folder): every tail after a `media`
    component counts, which can keep a file too many, never one too few. Raises ValueError naming the line
    of a split file that cannot be read (then nothing may be removed).
    """
    names: set[str] = set()
    for output in out_dir.glob("*.jsonl"):
        with open(output, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    images = orjson.loads(line).get("images") or []
                except (orjson.JSONDecodeError, AttributeError) as exc:
                    raise ValueError(f"{output}:{lineno}: not a JSON object ({exc})") from exc
                for image in [images] if isinstance(images, str) else images:
                    parts = PurePosixPath(str(image).replace("\\", "/")).parts
                    names.update("/".join(parts[i + 1:]) for i, part in enumerate(parts[:-1]) if part == "media")
    return names


def _journal_entries(journal: Path) -> list[str]:
    entries = []
    for line in journal.read_bytes().splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:  # a line cut by a power loss: its file was never started
            continue
    return entries


def remove_leftovers(out_dir: Path, journals: list[Path], extra: list[str] = ()) -> tuple[int, int]:
    """Remove the journaled (and `extra`) media that no committed output points at, their `.tmp`, the split
    temp files and the journals. Call only while holding the folder's lock exclusively. Returns (files, bytes).

    If a committed split file cannot be read, nothing is removed and the journals stay for a later run.
    """
    candidates = set(extra)
    for journal in journals:
        candidates.update(_journal_entries(journal))
    media_dir = out_dir / "media"
    files, size = 0, 0
    if candidates:
        try:
            keep = referenced_media(out_dir)
        except ValueError as exc:
            print(f"warning: leftovers of an interrupted conversion kept in {media_dir}: {exc}", file=sys.stderr)
            return 0, 0
        for name in sorted(candidates - keep):
            stored = media_dir / name
            for path in (stored, stored.with_name(stored.name + ".tmp")):
                files, size = _unlink(path, files, size)
            _remove_empty_parents(stored.parent, media_dir)
    for pattern in SPLIT_TEMP_PATTERNS:
        for temp in out_dir.glob(pattern):
            files, size = _unlink(temp, files, size)
    for journal in journals:
        journal.unlink(missing_ok=True)
    return files, size


def _unlink(path: Path, files: int, size: int) -> tuple[int, int]:
    """Remove `path` if it exists; returns the running (files, bytes) totals."""
    try:
        length = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return files, size
    return files + 1, size + length


def _remove_empty_parents(folder: Path, media_dir: Path) -> None:
    """Remove `folder` and its parents up to `media_dir` (kept) while they are empty."""
    while folder != media_dir and media_dir in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            return
        folder = folder.parent


class RunJournal:
    """One run's lock and journal in an output folder (see the module docstring).

    Opening it removes the leftovers of finished or killed runs when no other run is writing there, then
    holds the shared lock; `will_create` journals a media file before it is created; `close` releases the
    lock, removing the run's own unreferenced files and those of other finished runs when it is alone.
    """

    def __init__(self, out_dir: Path, split: str):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.lock = os.open(self.out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        self.removed = (0, 0)  # (files, bytes) of earlier runs' leftovers removed at start
        self.locks_unavailable = False
        if self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            self.removed = remove_leftovers(self.out_dir, self._journals())
        self._flock(fcntl.LOCK_SH)  # waits only while another run removes leftovers
        handle, name = tempfile.mkstemp(prefix=f".{split}.", suffix=JOURNAL_SUFFIX, dir=self.out_dir)
        self.path = Path(name)
        self.file = os.fdopen(handle, "wb", buffering=0)

    def _flock(self, operation: int) -> bool:
        """Lock the folder's lock file; False when another run holds it (LOCK_NB) or locks are not supported.

        Lustre mounted without `-o flock` answers ENOSYS: then no run can know it is alone, so nothing is
        ever removed (journals stay, a warning says why) and the conversion itself goes on.
        """
        try:
            fcntl.flock(self.lock, operation)
        except BlockingIOError:
            return False
        except OSError as exc:
            if not self.locks_unavailable:
                self.locks_unavailable = True
                print(f"warning: {self.out_dir}: file locks unavailable ({exc.strerror}): leftovers of interrupted "
                      "conversions are not removed", file=sys.stderr)
            return False
        return True

    def _journals(self) -> list[Path]:
        return sorted(self.out_dir.glob(f"*{JOURNAL_SUFFIX}"))

    def will_create(self, name: str) -> None:
        """Journal `media/<name>` before it (or its `.tmp`) is created."""
        self.file.write(orjson.dumps(name, option=orjson.OPT_APPEND_NEWLINE))

    def close(self, orphans: list[str]) -> None:
        """End the run. `orphans`: the media names it created that its committed output does not use (all of
        them when it did not commit)."""
        self.file.close()
        try:
            if self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB):
                self.path.unlink()  # replaced by `orphans`: no scan of the outputs when there are none
                remove_leftovers(self.out_dir, self._journals(), orphans)
        finally:
            os.close(self.lock)
