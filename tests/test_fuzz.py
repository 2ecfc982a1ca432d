"""Property-based fuzzing (hypothesis) of every converter's parser and of `vlmr validate`.

Each converter gets a small valid raw input in its source's real layout, then hypothesis corrupts it:
- bytes: truncation, deleted spans, inserted bytes or syntax tokens (quotes, brackets, NUL, invalid UTF-8,
  `<image>`, `../` paths), flipped bytes, duplicated spans;
- structure (JSON, JSON Lines, CSV, Parquet rows): a node replaced by a random JSON value, a key deleted, a cell
  replaced by random text, a column value of the wrong kind (random bytes instead of an image, nulls).
The property: the conversion either ends with `SourceError` (one line naming the input) or writes only records
that `vlmr validate` accepts, with a skip report that is valid JSON; no other exception ever escapes. For
`vlmr validate` itself: any corrupted dataset file yields error lines `FILE:LINE: ...`, never an exception.

Runs in-process (subprocesses would make 1,000 examples take minutes); two CLI runs at the end check that a
corrupt input gives a clean message, not a traceback. `derandomize=True`: CI sees the same examples every run.
Example counts: `pytest tests/test_fuzz.py --hypothesis-show-statistics`.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmrecipes.data_converters.cli import SOURCES
from vlmrecipes.data_converters.readers import SourceError
from vlmrecipes.data_converters.validate import DatasetFile, validate
from vlmrecipes.data_converters.writer import EmptySplitError, WriteOptions, write_split

EXAMPLES = 60
TRIED: Counter = Counter()  # examples run per fuzz target, printed at the end (pytest -s)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Bytes that break parsers in interesting ways.
TOKENS = [b'"', b",", b"\n", b"\r\n", b"{", b"}", b"[", b"]", b":", b"null", b"NaN", b"1e999", b"-1", b"\x00",
          b"\xff\xfe", b"\xc3\x28", b"<image>", b"<image><image>", b'"../../etc/passwd"', b'"/etc/hosts"', b"\\u0000",
          b'"\\ud800"', b"\t", b";"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["", " ", "<image>", "../x.jpg", "/etc/hosts", "a.jpg", "CLOSED", "7"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
    yield
    tried = ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
    print(f"\nfuzz examples tried: {tried}; total {sum(TRIED.values())}")


def jpeg(size=(24, 16), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ------------------------------------------------------------------------------------------------------
# corruptions
# ------------------------------------------------------------------------------------------------------


@st.composite
def corrupt_bytes(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "delete", "insert", "flip", "duplicate"]))
        i = draw(st.integers(0, len(data)))
        if op == "truncate":
            data = data[:i]
        elif op == "delete":
            data = data[:i] + data[i + draw(st.integers(1, 32)):]
        elif op == "insert":
            data = data[:i] + draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8)) + data[i:]
        elif op == "flip" and i < len(data):
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == "duplicate":
            data = data[:i] + data[i:i + draw(st.integers(1, 200))] + data[i:]
    return data


def _slots(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every node below the root (keys/indices), for picking one to corrupt."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append(path + (key,))
        found += _slots(child, path + (key,))
    return found


@st.composite
def corrupt_structure(draw, document: Any) -> Any:
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(document)
        if not slots:
            break
        path = draw(st.sampled_from(slots))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            del parent[path[-1]]
    return document


def corrupt_text(kind: str, seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level corruption, or structure-level for formats we can parse and re-serialize."""
    if kind == "json":
        structural = corrupt_structure(json.loads(seed)).map(lambda d: json.dumps(d, ensure_ascii=False).encode())
    elif kind == "jsonl":
        rows = [json.loads(line) for line in seed.decode().splitlines()]
        structural = corrupt_structure(rows).map(
            lambda d: "\n".join(json.dumps(r, ensure_ascii=False) for r in d).encode())
    elif kind == "csv":
        table = list(csv.reader(io.StringIO(seed.decode())))
        structural = corrupt_structure(table).map(_csv_bytes)
    else:
        return corrupt_bytes(seed)
    return st.one_of(corrupt_bytes(seed), structural)


def _csv_bytes(table: Any) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in table if isinstance(table, list) else [[table]]:
        cells = [json.dumps(c) if not isinstance(c, str) else c for c in row] if isinstance(row, list) else [row]
        writer.writerow(cells)
    return out.getvalue().encode()


# ------------------------------------------------------------------------------------------------------
# the property
# ------------------------------------------------------------------------------------------------------


def check_conversion(source: str, input: Path, options: dict[str, Any] | None = None, split: str = "train") -> None:
    """Convert in-process; only SourceError or EmptySplitError may escape; every written record must validate."""
    module = SOURCES[source][0]
    out = Path(tempfile.mkdtemp(prefix="fuzz-out-"))
    try:
        records = module.iter_records(input, images=None, seed=0, split=split, **(options or {}))
        try:
            report = write_split(records, WriteOptions(out_dir=out, split=split, source=f"{source}:{input}"))
        except (SourceError, EmptySplitError) as exc:  # an unusable input, or no record left: nothing written
            message = str(exc)
            assert str(input.parent) in message or input.name in message, message
            assert not (out / f"{split}.jsonl").exists()
            return
        skipped = json.loads(report.skipped_file.read_text())
        assert sum(skipped["counts"].values()) == len(skipped["skipped"]) and skipped["written"] == report.written
        count, errors = validate(DatasetFile(report.output), out)
        assert (count, errors) == (report.written, [])
    finally:
        shutil.rmtree(out)


@dataclass
class Target:
    """A converter's valid raw input: `build(root)` writes it and returns (the --input, the file to corrupt)."""

    source: str
    build: Callable[[Path], tuple[Path, Path]]
    kind: str  # how the corrupted file can be parsed for structure-level corruption: json | jsonl | csv | bytes
    options: Callable[[Path], dict[str, Any]] = lambda root: {}  # the converter's own options, given the root
    split: str = "train"


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": f, "value": v} for f, v in pairs]


def _llava(root: Path) -> tuple[Path, Path]:
    put(root / "images" / "a.jpg", jpeg())
    rows = [{"id": "1", "image": "a.jpg", "conversations": _turns(("human", "<image>\nWhat?"), ("gpt", "red"))},
            {"id": "2", "image": "a.jpg", "conversations": _turns(("human", "Where?<image>"), ("gpt", "here"),
                                                                 ("human", "Sure?"), ("gpt", "yes"))},
            {"id": "3", "conversations": _turns(("human", "hi"), ("gpt", "hello"))}]
    path = put(root / "chat.json", json.dumps(rows))
    return path, path


def _coco(root: Path) -> tuple[Path, Path]:
    put(root / "train2017" / "000000000009.jpg", jpeg())
    doc = {"images": [{"id": 9, "file_name": "000000000009.jpg", "height": 16, "width": 24}],
           "annotations": [{"id": 1, "image_id": 9, "caption": "A red square."},
                           {"id": 2, "image_id": 9, "caption": "Red."}]}
    path = put(root / "annotations" / "captions_train2017.json", json.dumps(doc))
    return path, path


def _vqav2_files(root: Path) -> tuple[Path, Path]:
    put(root / "val2014" / "COCO_val2014_000000000042.jpg", jpeg())
    questions = {"questions": [{"image_id": 42, "question": "What color?", "question_id": 420},
                               {"image_id": 42, "question": "How many?", "question_id": 421}]}
    answers = [{"answer": "red", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]
    annotations = {"annotations": [
        {"question_id": q, "image_id": 42, "answer_type": "other", "multiple_choice_answer": "red", "answers": answers}
        for q in (420, 421)]}
    put(root / "v2_mscoco_val2014_annotations.json", json.dumps(annotations))
    return put(root / "v2_OpenEnded_mscoco_val2014_questions.json", json.dumps(questions)), \
        root / "v2_mscoco_val2014_annotations.json"


def _vqav2_questions(root: Path) -> tuple[Path, Path]:
    questions, _ = _vqav2_files(root)
    return questions, questions


def _ai_challenger(root: Path) -> tuple[Path, Path]:
    name = "0" * 40 + ".jpg"
    put(root / "caption_train_images_20170902" / name, jpeg())
    rows = [{"url": "http://x", "image_id": name, "caption": ["一个 男人。", "两个 人", "\n红色 方块。", "a", "b"]}]
    path = put(root / "caption_train_annotations_20170902.json", json.dumps(rows, ensure_ascii=False))
    return path, path


def _minimind_legacy(root: Path) -> tuple[Path, Path]:
    put(root / "sft_images" / "0.jpg", jpeg())
    put(root / "sft_images" / "1.jpg", jpeg(color=(0, 0, 200)))
    rows = [{"conversations": [{"role": "user", "content": "<image>\n<image>\n比较"},
                               {"role": "assistant", "content": "a"}],
             "image": "0.jpg, 1.jpg"},
            {"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "b"}],
             "image": "0.jpg"}]
    path = put(root / "sft_data.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path, path


def _vqa_rad(root: Path) -> tuple[Path, Path]:
    put(root / "VQA_RAD Image Folder" / "synpic1.jpg", jpeg())
    rows = [{"qid": i, "image_name": "synpic1.jpg", "image_organ": "HEAD", "answer": a, "answer_type": t,
             "question_type": "PRES", "question": q, "phrase_type": "freeform"}
            for i, (q, a, t) in enumerate([("Is there a mass?", "Yes", "CLOSED"), ("Where?", "left lobe", "OPEN")])]
    path = put(root / "VQA_RAD Dataset Public.json", json.dumps(rows))
    return path, path


def _slake(root: Path) -> tuple[Path, Path]:
    put(root / "imgs" / "xmlab1" / "source.jpg", jpeg())
    rows = [{"img_id": 1, "img_name": "xmlab1/source.jpg", "question": q, "answer": a, "q_lang": "en",
             "location": "Lung", "modality": "CT", "answer_type": t, "base_type": "vqa", "content_type": "x", "qid": i}
            for i, (q, a, t) in enumerate([("Is this a CT?", "Yes", "CLOSED"), ("Which organ?", "Lung", "OPEN")])]
    path = put(root / "train.json", json.dumps(rows))
    return path, path


def _affectnet(root: Path) -> tuple[Path, Path]:
    put(root / "Manually_Annotated_Images" / "1" / "a.jpg", jpeg((100, 80)))
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = [f"1/a.jpg,10,10,50,40,1.0;2.0,{e},0.1,0.2" for e in (1, 3, 7)]
    path = put(root / "training.csv", "\n".join([header, *rows]) + "\n")
    return path, path


def _fer2013(root: Path) -> tuple[Path, Path]:
    pixels = " ".join(str((i * 7) % 256) for i in range(48 * 48))
    path = put(root / "fer2013.csv", f"emotion,pixels,Usage\n3,{pixels},Training\n0,{pixels},Training\n")
    return path, path


def _dicom(root: Path) -> tuple[Path, Path]:
    from test_ct import UID_ROOT, write_dicom

    for k, z in enumerate([0.0, 2.5, 5.0]):
        write_dicom(root / "s" / f"{k}.dcm", np.full((8, 6), 1000 + 10 * k, np.int16), series_uid=f"{UID_ROOT}7",
                    z=z, instance=k + 1)
    return root, root / "s" / "1.dcm"


def _nifti(root: Path) -> tuple[Path, Path]:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2), np.eye(4)), root / "v.nii")
    return root / "v.nii", root / "v.nii"


def _dicom_real(root: Path, victim: str, slices: int) -> tuple[Path, Path]:
    """A series made from pydicom's CT_small.dcm beside its RTSTRUCT (no preamble: read with `force`)."""
    from test_ct import AXIAL, UID_ROOT, copy_testdata, real_slice

    for k in range(slices):
        real_slice(root / "s" / f"{k}.dcm", series_uid=f"{UID_ROOT}7.9", position=(-158.1, -179.0, 5.0 * k),
                   orientation=AXIAL)
    copy_testdata("rtstruct.dcm", root / "s" / "rtstruct.dcm")
    return root, root / "s" / victim


def _nifti_gz(root: Path) -> tuple[Path, Path]:
    """nibabel's standard.nii.gz (gzip, as dcm2niix writes) and, in another folder, a slice from CT_small.dcm."""
    from nibabel.testing import data_path
    from test_ct import copy_testdata

    copy_testdata("CT_small.dcm", root / "other" / "ct.dcm")
    path = Path(shutil.copy(Path(data_path) / "standard.nii.gz", root / "standard.nii.gz"))
    return root, path


def _ct_captions(root: Path) -> tuple[Path, Path]:
    _dicom(root / "raw")
    put(root / "captions.csv", "series,slice,question,answer\ns,0,Is there a nodule?,No\ns,,,Normal chest CT.\n")
    return root / "raw", root / "captions.csv"


TARGETS = {
    "llava": Target("llava", _llava, "json"),
    "coco-captions": Target("coco-captions", _coco, "json"),
    "vqav2-questions": Target("vqav2", _vqav2_questions, "json"),
    "vqav2-annotations": Target("vqav2", _vqav2_files, "json"),
    "ai-challenger": Target("ai-challenger", _ai_challenger, "json"),
    "minimind-v-jsonl": Target("minimind-v", _minimind_legacy, "jsonl"),
    "vqa-rad": Target("vqa-rad", _vqa_rad, "json"),
    "slake": Target("slake", _slake, "json"),
    "affectnet": Target("affectnet", _affectnet, "csv"),
    "fer2013": Target("fer2013", _fer2013, "csv"),
    "ct-dicom-bytes": Target("ct", _dicom, "bytes", lambda root: {"salt": "fuzz"}),
    "ct-nifti-bytes": Target("ct", _nifti, "bytes", lambda root: {"salt": "fuzz"}),
    "ct-dicom-real-slice": Target("ct", lambda root: _dicom_real(root, "1.dcm", slices=2), "bytes",
                                  lambda root: {"salt": "fuzz"}),
    "ct-dicom-real-rtstruct": Target("ct", lambda root: _dicom_real(root, "rtstruct.dcm", slices=1), "bytes",
                                     lambda root: {"salt": "fuzz"}),
    "ct-nifti-gz-real": Target("ct", _nifti_gz, "bytes", lambda root: {"salt": "fuzz"}),
    "ct-captions-csv": Target("ct", _ct_captions, "csv",
                              lambda root: {"salt": "fuzz", "captions": root / "captions.csv"}),
}




# Inputs that once crashed a parser, replayed on every run besides the generated ones (seed bytes -> input).
def _replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    return lambda seed: seed.replace(old, new, 1)


PINNED: dict[str, list[Callable[[bytes], bytes]]] = {
    "affectnet": [lambda seed: b"\x80" + seed[1:]],
    "fer2013": [lambda seed: b"\x80" + seed[1:]],
    "ct-captions-csv": [lambda seed: b"\x80" + seed[1:]],
    "coco-captions": [_replace(b'"image_id": 9, "caption": "Red."', b'"image_id": [], "caption": "Red."')],
    "llava": [_replace(b'{"from": "gpt", "value": "hello"}', b'{"from": [], "value": "hello"}')],
    "vqav2-questions": [_replace(b'"image_id": 42', b'"image_id": null')],
    "validate": [_replace(b'{"role": "user", "content": "hi"}', b'{"role": [], "content": "hi"}')],
    "minimind-v": [lambda seed: b""], "medtrinity": [lambda seed: b""], "pathvqa": [lambda seed: b""],
}


def pinned(name: str, seed: bytes, fuzz: Callable) -> Callable:
    for make in PINNED.get(name, []):
        fuzz = example(data=make(seed))(fuzz)
    return fuzz


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corrupted_text_inputs(name, tmp_path_factory):
    target = TARGETS[name]
    root = tmp_path_factory.mktemp(name)
    input, victim = target.build(root)
    options, seed = target.options(root), victim.read_bytes()

    @FUZZ
    @given(data=corrupt_text(target.kind, seed))
    def fuzz(data: bytes) -> None:
        TRIED[name] += 1
        victim.write_bytes(data)
        check_conversion(target.source, input, options, target.split)

    pinned(name, seed, fuzz)()


# Parquet sources: rows whose values have the wrong kind, and corrupted file bytes.
IMAGE_BYTES = st.one_of(st.just(jpeg()), st.binary(max_size=64), st.just(b""), st.none(),
                        st.just(jpeg()[:-30]))
TEXT = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["", "<image>", "yes", "No", "CT scan of the head"]))
CONVERSATIONS = st.one_of(TEXT, st.just(json.dumps([{"role": "user", "content": "<image>x"},
                                                   {"role": "assistant", "content": "y"}])),
                          JSON_VALUES.map(json.dumps))
PARQUET_ROWS = {
    "minimind-v": ("sft_i2t.parquet", {"conversations": CONVERSATIONS, "image_bytes": IMAGE_BYTES}),
    "medtrinity": ("train-00000.parquet", {"id": TEXT, "image": st.fixed_dictionaries(
        {"bytes": IMAGE_BYTES, "path": TEXT}) | st.none(), "caption": TEXT}),
    "pathvqa": ("train-00000-of-00001.parquet", {"image": st.fixed_dictionaries(
        {"bytes": IMAGE_BYTES, "path": TEXT}) | st.none(), "question": TEXT, "answer": TEXT}),
}


@st.composite
def parquet_file(draw, columns: dict[str, st.SearchStrategy]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = draw(st.lists(st.fixed_dictionaries(columns), min_size=0, max_size=4))
    sample = {"image_bytes": pa.binary(), "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())])}
    schema = pa.schema([(c, sample.get(c, pa.string())) for c in columns])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    data = buffer.getvalue()
    return draw(corrupt_bytes(data)) if draw(st.integers(0, 4)) == 0 else data  # 1 in 5: corrupt the file itself


@pytest.mark.parametrize("source", sorted(PARQUET_ROWS))
def test_corrupted_parquet_inputs(source, tmp_path_factory):
    file_name, columns = PARQUET_ROWS[source]
    path = tmp_path_factory.mktemp(source) / file_name

    @FUZZ
    @given(data=parquet_file(columns))
    def fuzz(data: bytes) -> None:
        TRIED[source] += 1
        path.write_bytes(data)
        check_conversion(source, path)

    pinned(source, b"", fuzz)()


def test_validate_never_raises_on_corrupted_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    put(root / "ds" / "media" / "a.jpg", jpeg())
    rows = [{"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "red"}],
             "images": ["ds/media/a.jpg"]},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}], "images": []}]
    seed = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
    path = root / "ds" / "train.jsonl"

    @FUZZ
    @given(data=corrupt_text("jsonl", seed))
    def fuzz(data: bytes) -> None:
        TRIED["validate"] += 1
        path.write_bytes(data)
        count, errors = validate(DatasetFile(path), root)
        assert all(line.startswith(f"{path}:") for line in errors), errors

    pinned("validate", seed, fuzz)()


def test_cli_reports_corrupt_inputs_without_a_traceback(tmp_path):
    chat, _ = _llava(tmp_path / "llava")
    chat.write_bytes(chat.read_bytes()[:50] + b"\xff\x00{")
    proc = run_cli(["vlmr", "convert", "llava", "--input", str(chat), "--dataset-dir", str(tmp_path / "di")],
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "chat.json" in proc.stderr
    bad = put(tmp_path / "bad.jsonl",
              b'{"messages": [{"role": "user", "content": "\xff<image>"}], "images": ["../a.jpg"]}\n'
              b'{"messages": 5}\nnot json\n')
    proc = run_cli(["vlmr", "validate", str(bad), "--dataset-dir", str(tmp_path)], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert [line.split(":")[1] for line in proc.stdout.splitlines()[:-1]] == ["1", "2", "3"]
