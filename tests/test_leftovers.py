"""A conversion killed with SIGKILL leaves nothing behind once the next run in its folder is done.

The writer journals every media file before creating it (data_converters/journal.py); these tests kill real
runs (`vlmr convert` and a writer process) and check what the next run removes and what it must keep.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import BIN, cli_env, run_cli
from PIL import Image

from vlmrecipes.data_converters.journal import JOURNAL_SUFFIX, referenced_media
from vlmrecipes.data_converters.schema import ImageRef, Sample, chat
from vlmrecipes.data_converters.writer import WriteOptions, write_split


def _image_folder(root: Path, per_class: int, seed: int) -> Path:
    """ROOT/<class>/<n>.png, 24x24 RGB noise (every file distinct; a 256-pixel limit changes every file)."""
    rng = random.Random(seed)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.frombytes("RGB", (24, 24), rng.randbytes(24 * 24 * 3)).save(root / label / f"{i:04d}.png")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _media(out: Path) -> set[str]:
    return {p.relative_to(out / "media").as_posix() for p in (out / "media").rglob("*") if p.is_file()}


def _unreferenced_media(out: Path) -> set[str]:
    return _media(out) - referenced_media(out)


def test_rerun_after_sigkill_removes_the_killed_runs_files_and_nothing_else(tmp_path):
    train_raw = _image_folder(tmp_path / "raw_train", per_class=1000, seed=0)
    test_raw = _image_folder(tmp_path / "raw_test", per_class=3, seed=1)  # same names as train's first three
    killed, clean = tmp_path / "killed", tmp_path / "clean"  # two dataset dirs: interrupted, uninterrupted

    def convert(dataset_dir: Path, raw: Path, split: str, *args: str) -> list[str]:
        return ["vlmr", "convert", "image-folder", "--input", str(raw), "--dataset-dir", str(dataset_dir),
                "--name", "ds", "--split", split, *args]

    for dataset_dir in (killed, clean):  # another split's committed output and a user's file share the folder
        run_cli(convert(dataset_dir, test_raw, "test"))
        (dataset_dir / "ds" / "notes.txt").write_text("the user's own file")
    out = killed / "ds"

    # A first attempt without --max-pixels, killed once it has stored a few hundred images.
    first = convert(killed, train_raw, "train")
    proc = subprocess.Popen([str(BIN / first[0]), *first[1:]], env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(os.listdir(out / "media" / "cat")) < 300:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the conversion finished before it could be killed"
    left = _unreferenced_media(out)
    assert len(left) >= 290 and (out / "train.jsonl.tmp").exists()

    # The rerun, with the image limit the first attempt forgot: every image it stores differs from the
    # killed run's copy of the same name, so what the killed run stored would stay beside it (disk doubled).
    rerun = run_cli(convert(killed, train_raw, "train", "--max-pixels", "256"))
    run_cli(convert(clean, train_raw, "train", "--max-pixels", "256"))

    assert not list(killed.rglob("*.tmp"))
    assert _unreferenced_media(out) == set()
    assert len((out / "train.jsonl").read_text().splitlines()) == 2000
    # Byte for byte what the uninterrupted run wrote: outputs, media names and bytes, the test split, the
    # user's file, dataset_info.json (so the disk usage is the same too).
    assert _files(killed) == _files(clean)
    assert f"removed {len(left) + 2}" in rerun.stdout  # its media, train.jsonl.tmp, train.skipped.json.tmp


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from vlmrecipes.data_converters.schema import ImageRef, Sample, chat
from vlmrecipes.data_converters.writer import WriteOptions, write_split

def records():
    for name in sys.argv[2:]:
        yield Sample(name, chat("What is it?", "noise"), [ImageRef(Path(sys.argv[1]) / name, name)])
    os.kill(os.getpid(), signal.SIGKILL)  # mid-run: the split file is never committed

write_split(records(), WriteOptions(out_dir=Path(sys.argv[1]).parent / "ds", split="killed"))
"""


def _sample(raw: Path, name: str) -> Sample:
    return Sample(name, chat("What is it?", "noise"), [ImageRef(raw / name, name)])


def test_leftovers_wait_until_no_other_run_writes_into_the_folder(tmp_path):
    """A run converting one split may reuse, in its not yet committed output, a file that a run killed
    meanwhile stored: a run that starts while it is live removes nothing; the last run to finish does."""
    raw = _image_folder(tmp_path / "raw", per_class=2, seed=0)
    out = tmp_path / "ds"

    def live_records():
        killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(raw), "cat/0000.png", "cat/0001.png",
                                 "dog/0000.png"], check=False, env=cli_env(), capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        yield _sample(raw, "cat/0000.png")  # the same bytes as the killed run's file: reused, not journaled
        report = write_split([_sample(raw, "dog/0001.png")], WriteOptions(out_dir=out, split="other"))
        assert report.written == 1 and report.leftovers == (0, 0)
        assert _media(out) == {"cat/0000.png", "cat/0001.png", "dog/0000.png", "dog/0001.png"}
        assert len(list(out.glob(f"*{JOURNAL_SUFFIX}"))) == 3  # killed, this live run, the finished "other"

    report = write_split(live_records(), WriteOptions(out_dir=out, split="live"))
    # The live run finished last, alone: the killed run's unused files went, the one it reused stayed.
    assert report.written == 1 and _media(out) == {"cat/0000.png", "dog/0001.png"}
    assert json.loads((out / "live.jsonl").read_text())["images"] == ["media/cat/0000.png"]
    assert sorted(os.listdir(out)) == [".vlmr-convert.lock", "live.jsonl", "live.skipped.json", "media",
                                       "other.jsonl", "other.skipped.json"]


def _pair_with_a_broken_image(raw: Path) -> Sample:
    """A record whose first image is stored before its second fails: the record is skipped."""
    (raw / "cat" / "broken.png").write_bytes(b"not a png")
    return Sample("pair", chat("Same?", "no", n_images=2), [ImageRef(raw / "cat" / "0000.png", "cat/0000.png"),
                                                            ImageRef(raw / "cat" / "broken.png", "cat/broken.png")])


def test_a_skipped_records_stored_image_is_removed(tmp_path):
    raw = _image_folder(tmp_path / "raw", per_class=1, seed=0)
    out = tmp_path / "ds"
    report = write_split([_pair_with_a_broken_image(raw), _sample(raw, "dog/0000.png")], WriteOptions(out_dir=out))
    assert report.written == 1 and sum(report.skipped.values()) == 1
    assert _media(out) == {"dog/0000.png"} and not (out / "media" / "cat").exists()
    assert not list(out.rglob("*.tmp"))


def test_without_file_locks_nothing_is_removed_and_the_conversion_goes_on(tmp_path, monkeypatch, capsys):
    """Lustre without `-o flock` answers flock() with ENOSYS: no run can tell it is alone, so none removes."""
    raw = _image_folder(tmp_path / "raw", per_class=1, seed=0)
    out = tmp_path / "ds"

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    with monkeypatch.context() as patch:
        patch.setattr(fcntl, "flock", no_locks)
        report = write_split([_pair_with_a_broken_image(raw), _sample(raw, "dog/0000.png")], WriteOptions(out_dir=out))
    assert report.written == 1 and "file locks unavailable (Function not implemented)" in capsys.readouterr().err
    assert _media(out) == {"cat/0000.png", "dog/0000.png"} and len(list(out.glob(f"*{JOURNAL_SUFFIX}"))) == 1
    # Where locks work again, the next run removes what was left.
    report = write_split([_sample(raw, "dog/0000.png")], WriteOptions(out_dir=out))
    assert _media(out) == {"dog/0000.png"} and not list(out.rglob("*.tmp")) and report.leftovers[0] == 1
