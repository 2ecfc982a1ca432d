"""The one owner of our datasets: `dataset_info.json`, its entries, and the dataset files they name.

Every reader and writer of datasets goes through here:
- the registry: `load_info(dataset_dir)` reads `<dataset_dir>/dataset_info.json` (LLaMA-Factory's file: name ->
  dataset attributes), `register(dataset_dir, name, entry)` adds or replaces one entry under a lock and by an
  atomic rename, so concurrent conversions never lose each other's entries nor leave a half-written file;
  `register_missing` adds bundled entries without replacing a user's (`vlmr init`). The registry a command uses
  is the working directory's `dataset_info/` (vlmrecipes.paths), never a file of the package or of our
  checkout's tracked tree: the bundled entries live in the package (`vlmrecipes/dataset_info.json`);
- the entry format of a written ShareGPT split (`entry_for`): `file_name` relative to the dataset dir when the
  file is inside it, our `messages`/`images` columns and `role`/`content` tags;
- resolving a dataset name or a file path to the file and its columns (`resolve`);
- reading records: JSON Lines line by line (`iter_jsonl`, `read_jsonl`) and Parquet in batches (`iter_rows`),
  each bad line named as `FILE:LINE` with the fix;
- the demo twins (`demo_twin`): the bundled synthetic dataset that stands in for each dataset our recipes name in
  a `vlmr smoke` run. They live here, not in the user's registry, which `vlmr convert` rewrites.

Every problem is a `DatasetError` (a ValueError) naming the file, the entry or line, and the fix; library code
raises it and only the CLI entry points turn it into an exit status.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from vlmrecipes.data_converters.splits import SPLITS

INFO_FILE = "dataset_info.json"
# The role/content tags of our ShareGPT records (LLaMA-Factory's defaults are LLaVA's from/value/human/gpt).
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}
PARQUET_BATCH_ROWS = 256  # rows decoded at a time: bounded memory with embedded image bytes


class DatasetError(ValueError):
    """A dataset, its `dataset_info.json` entry or one of its records is unusable.

    Attributes:
        where: the file, `FILE:LINE` of a record, or the registry file and entry.
        problem: what is wrong.
        fix: what to do about it.
    """

    def __init__(self, where: str, problem: str, fix: str):
        super().__init__(f"{where}: {problem}; {fix}")
        self.where, self.problem, self.fix = where, problem, fix

    def __reduce__(self):  # pickled with its three parts (a worker process may raise it)
        return DatasetError, (self.where, self.problem, self.fix)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as an error message should say it."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------------------


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or the DatasetError naming that line) for every non-blank line.

    Lines are decoded one by one, so one bad byte costs one line and is reported at its line; a UTF-8
    byte-order mark on the first line (as Windows editors write, and LLaMA-Factory's JSON loader accepts) is
    skipped. A caller that reports every problem (validate) or skips bad records (converters) keeps going; a
    caller that needs every record uses `read_jsonl`.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, DatasetError(
                    f"{path}:{lineno}", f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)",
                    "save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`")
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line.rstrip("\r\n"))  # stripped so that colno counts within the line
            except json.JSONDecodeError as exc:
                yield lineno, DatasetError(f"{path}:{lineno}", f"not JSON ({exc.msg} at column {exc.colno})",
                                           "each line must be one JSON object")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; the first bad line raises its DatasetError."""
    for lineno, value in iter_jsonl(path):
        if isinstance(value, DatasetError):
            raise value
        if not isinstance(value, dict):
            raise DatasetError(f"{path}:{lineno}", f"a JSON {json_type(value)}, expected an object",
                               "each line must be one JSON object")
        yield lineno, value


def iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line or row number, record or DatasetError) of a JSON Lines or Parquet dataset file."""
    if path.suffix != ".parquet":
        yield from iter_jsonl(path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(str(path), f"unreadable Parquet after row {row} ({exc})",
                           "re-convert it with `vlmr convert ... --format parquet`") from exc


# ------------------------------------------------------------------------------------------------------
# dataset_info.json
# ------------------------------------------------------------------------------------------------------


class DatasetInfo(dict):
    """The entries of one `dataset_info.json` (name -> LLaMA-Factory dataset attributes) in file order, and the
    file they come from (named in errors)."""

    def __init__(self, path: Path, entries: dict[str, Any]):
        super().__init__(entries)
        self.path = path

    def entry(self, name: str) -> dict[str, Any]:
        """The entry `name`; a DatasetError listing the registered names if there is none."""
        if name not in self:
            known = ", ".join(sorted(self)[:20]) or "none registered"
            raise DatasetError(str(self.path), f"no dataset {name!r}",
                               f"register it with `vlmr convert`, pass a dataset file, or use one of: {known}")
        found = self[name]
        if not isinstance(found, dict):
            raise DatasetError(f"{self.path}: entry {name!r}", f"a JSON {json_type(found)}, expected an object",
                               'write it as LLaMA-Factory\'s dataset attributes ({"file_name": ...})')
        return found


def load_info(dataset_dir: Path) -> DatasetInfo:
    """`<dataset_dir>/dataset_info.json`; no entries when the file does not exist."""
    path = Path(dataset_dir) / INFO_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DatasetInfo(path, {})
    try:
        entries = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), f"not JSON ({exc})", "fix the file (or restore it from git)") from exc
    if not isinstance(entries, dict):
        raise DatasetError(str(path), f"a JSON {json_type(entries)}, expected an object of dataset entries",
                           "fix the file (or restore it from git)")
    return DatasetInfo(path, entries)


def entry_for(output: Path, dataset_dir: Path) -> dict[str, Any]:
    """The dataset_info.json entry of a ShareGPT multimodal split file: `file_name` relative to `dataset_dir` when
    the file is inside it (LLaMA-Factory joins the two), else absolute."""
    output, dataset_dir = Path(output).resolve(), Path(dataset_dir).resolve()
    file_name = output.relative_to(dataset_dir).as_posix() if output.is_relative_to(dataset_dir) else str(output)
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": dict(SHAREGPT_TAGS),
    }


def _rewrite(dataset_dir: Path, update: Callable[[DatasetInfo], None]) -> Path:
    """Apply `update` to `<dataset_dir>/dataset_info.json` (created if missing) under a lock, atomically."""
    path = Path(dataset_dir).resolve() / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives in the temp dir, not beside the file: no stray file in the registry's folder.
    lock = Path(tempfile.gettempdir()) / f"vlmr-{hashlib.sha1(str(path).encode()).hexdigest()[:16]}.lock"
    with FileLock(str(lock)):
        info = load_info(path.parent)
        update(info)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return path


def register(dataset_dir: Path, name: str, new_entry: dict[str, Any]) -> Path:
    """Add or replace `name` in `<dataset_dir>/dataset_info.json`, keeping the other entries and their order.

    Locked and atomic: several conversions (or engineers) may register at the same time, and a reader never
    sees a half-written file. Returns the file.
    """
    return _rewrite(dataset_dir, lambda info: info.update({name: new_entry}))


def register_missing(dataset_dir: Path, entries: dict[str, Any]) -> list[str]:
    """Add the `entries` that `<dataset_dir>/dataset_info.json` lacks; an entry already there is kept (a user's
    conversion wins over a bundled entry). Locked and atomic as `register`. Returns the names added."""
    added: list[str] = []

    def add_missing(info: DatasetInfo) -> None:
        for name, entry in entries.items():
            if name not in info:
                info[name] = entry
                added.append(name)

    _rewrite(dataset_dir, add_missing)
    return added


# ------------------------------------------------------------------------------------------------------
# resolving a name or a file
# ------------------------------------------------------------------------------------------------------


@dataclass
class DatasetFile:
    """A dataset file and how its records are laid out (the entry's columns and tags).

    Attributes:
        path: the JSON Lines or Parquet file.
        messages: column of the conversation.
        images: column of the image list.
        tags: the entry's role/content tags (None: ours, SHAREGPT_TAGS).
        name: the registered name it was resolved from (None: a file given directly).
    """

    path: Path
    messages: str = "messages"
    images: str = "images"
    tags: dict[str, str] | None = None
    name: str | None = None


def resolve(name_or_file: str | Path, dataset_dir: Path) -> DatasetFile:
    """The dataset file of a path, or of a name registered in `<dataset_dir>/dataset_info.json`."""
    if Path(name_or_file).is_file():
        return DatasetFile(Path(name_or_file))
    name = str(name_or_file)
    info = load_info(dataset_dir)
    found = info.entry(name)
    if "file_name" not in found:
        raise DatasetError(f"{info.path}: entry {name!r}", "no local `file_name` (a Hub or script dataset)",
                           "convert it to a local file with `vlmr convert` and register that")
    path = Path(dataset_dir) / found["file_name"]
    if not path.exists():
        raise DatasetError(f"{info.path}: entry {name!r}", f"its file {path} does not exist",
                           "convert the dataset again with `vlmr convert`, or correct `file_name`")
    columns = found.get("columns") or {}
    return DatasetFile(path, columns.get("messages", "messages"), columns.get("images", "images"),
                       found.get("tags"), name)


# ------------------------------------------------------------------------------------------------------
# demo twins
# ------------------------------------------------------------------------------------------------------

# Dataset name (a registered name less its split) -> the bundled demo dataset of the same task shape: the same
# conversation layout and one image per question, generated offline by `vlmr demo-data`.
DEMO_TWINS = {
    "llava_instruct": "demo_shapes", "vqav2": "demo_shapes", "coco_captions": "demo_shapes",
    "llava_cc3m_pretrain": "demo_shapes", "minimind_v_sft": "demo_shapes", "chinese_llava_instruct": "demo_shapes",
    "medtrinity_ct": "demo_ct", "vqa_rad": "demo_ct", "slake": "demo_ct",
    "affectnet": "demo_emotion", "fer2013": "demo_emotion",
}


def demo_twin(name: str, split: str = "train") -> str:
    """The demo dataset standing in for the registered dataset `name`: its `_train` split for training data,
    its `_test` split for evaluation data (`split` other than train). A demo dataset stands for itself."""
    family = name.rsplit("_", 1)[0] if name.startswith("demo_") else DEMO_TWINS.get(name)
    if family is None:  # a split name: fer2013_validation -> fer2013
        base, _, suffix = name.rpartition("_")
        family = DEMO_TWINS.get(base) if suffix in SPLITS else None
    if family is None:
        raise DatasetError(f"dataset {name!r}", "no demo twin to stand in for it in `vlmr smoke`",
                           "convert it first (`vlmr smoke --data own`), or add its name to DEMO_TWINS in "
                           "data_converters/datasets.py")
    return f"{family}_{'train' if split == 'train' else 'test'}"
