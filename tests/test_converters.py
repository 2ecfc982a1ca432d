"""Each converter on small raw files in its source's real layout (generated here), through `vlmr convert`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import run_cli
from PIL import Image


def _jpeg(path: Path, size=(40, 30), color=(200, 20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def convert(tmp_path: Path, source: str, *args: str, check: bool = True, name: str = "ds", split: str = "train"):
    """Run `vlmr convert` into tmp_path/dataset_info; returns (proc, records, skip report)."""
    dataset_dir = tmp_path / "dataset_info"
    proc = run_cli(["vlmr", "convert", source, "--dataset-dir", str(dataset_dir), "--name", name, "--split", split,
                    *args], check=check)
    out = dataset_dir / name
    records = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()] \
        if (out / f"{split}.jsonl").exists() else None
    skipped = out / f"{split}.skipped.json"
    report = json.loads(skipped.read_text()) if skipped.exists() else None
    return proc, records, report


def reasons(report) -> dict[str, str]:
    return {s["id"]: s["reason"] for s in report["skipped"]}


def _turns(*pairs):
    return [{"from": f, "value": v} for f, v in pairs]


@pytest.fixture
def llava_raw(tmp_path):
    raw = tmp_path / "raw"
    image = "GCC_train_000000001.jpg"
    _jpeg(raw / "images" / image)
    (raw / "images" / "empty.jpg").write_bytes(b"")
    full = _jpeg(None, (64, 64))
    (raw / "images" / "cut.jpg").write_bytes(full[: len(full) - 40])  # headers intact, scan data cut
    ok = _turns(("human", "Provide a brief description of the given image.\n<image>"), ("gpt", "a red square"))
    records = [
        {"id": "ok", "image": image, "conversations": ok},
        {"id": "multi", "image": image,
         "conversations": _turns(("human", "<image>\nWhat color?"), ("gpt", "red"), ("human", "Sure?"),
                                 ("gpt", "yes"))},
        {"id": "text", "conversations": _turns(("human", "hi"), ("gpt", "hello"))},
        {"id": "missing", "image": "nope.jpg", "conversations": ok},
        {"id": "empty", "image": "empty.jpg", "conversations": ok},
        {"id": "cut", "image": "cut.jpg", "conversations": ok},
        {"id": "count", "image": image, "conversations": _turns(("human", "no token"), ("gpt", "x"))},
        {"id": "blank", "image": image, "conversations": _turns(("human", "<image>"), ("gpt", " "))},
        {"id": "roles", "image": image, "conversations": _turns(("gpt", "<image>"), ("human", "x"))},
        {"id": "badturn", "image": image, "conversations": [{"from": "bot", "value": "x"}]},
        {"id": "badimage", "image": 3, "conversations": ok},
        "not an object",
    ]
    (raw / "chat.json").write_text(json.dumps(records))
    return raw / "chat.json"


def test_llava_records_skip_report_and_registration(tmp_path, llava_raw):
    proc, records, report = convert(tmp_path, "llava", "--input", str(llava_raw))
    assert [r["id"] for r in records] == ["ok", "multi", "text"]
    assert records[0] == {"id": "ok", "messages": [
        {"role": "user", "content": "Provide a brief description of the given image.\n<image>"},
        {"role": "assistant", "content": "a red square"}], "images": ["ds/media/GCC_train_000000001.jpg"]}
    assert records[2]["images"] == []
    assert (tmp_path / "dataset_info" / "ds" / "media" / "GCC_train_000000001.jpg").read_bytes() == \
        (llava_raw.parent / "images" / "GCC_train_000000001.jpg").read_bytes()  # verbatim copy
    assert reasons(report) == {"missing": "missing_image", "empty": "empty_image_file", "cut": "truncated_image",
                               "count": "image_count_mismatch", "blank": "empty_turn", "roles": "bad_roles",
                               "badturn": "malformed_record", "badimage": "malformed_record",
                               "11": "malformed_record"}
    assert report["written"] == 3 and report["counts"]["malformed_record"] == 3
    assert "malformed_record: 3" in proc.stdout
    info = json.loads((tmp_path / "dataset_info" / "dataset_info.json").read_text())
    assert info["ds_train"]["file_name"] == "ds/train.jsonl" and info["ds_train"]["formatting"] == "sharegpt"


def test_llava_strict_is_atomic_and_names_record(tmp_path, llava_raw):
    proc, records, _ = convert(tmp_path, "llava", "--input", str(llava_raw), "--strict", check=False)
    assert proc.returncode == 1 and "record 'missing': missing_image" in proc.stderr
    out = tmp_path / "dataset_info" / "ds"
    assert records is None and not list(out.glob("*.tmp")) and not list(out.glob("train*"))
    assert not (tmp_path / "dataset_info" / "dataset_info.json").exists()


def test_llava_deterministic_rerun_and_print_entry(tmp_path, llava_raw):
    out = tmp_path / "dataset_info" / "ds"
    convert(tmp_path, "llava", "--input", str(llava_raw), "--max-pixels", "600")
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc, _, _ = convert(tmp_path, "llava", "--input", str(llava_raw), "--max-pixels", "600", "--print-entry")
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert '"ds_train"' in proc.stdout
    assert Image.open(out / "media" / "GCC_train_000000001.jpg").size == (28, 21)  # 40x30 -> <= 600 px


def test_rerun_with_a_changed_image_never_rewrites_what_the_previous_output_points_at(tmp_path, llava_raw):
    out = tmp_path / "dataset_info" / "ds"
    _, before, _ = convert(tmp_path, "llava", "--input", str(llava_raw))
    old_path = tmp_path / "dataset_info" / before[0]["images"][0]
    old_bytes = old_path.read_bytes()
    _jpeg(llava_raw.parent / "images" / "GCC_train_000000001.jpg", color=(20, 20, 200))  # same name, new pixels
    _, after, _ = convert(tmp_path, "llava", "--input", str(llava_raw))
    assert old_path.read_bytes() == old_bytes  # records of the previous output stay valid until replaced
    new_path = tmp_path / "dataset_info" / after[0]["images"][0]
    assert new_path != old_path and new_path.read_bytes() == (llava_raw.parent / "images" /
                                                               "GCC_train_000000001.jpg").read_bytes()
    assert new_path.parent == out / "media"


def test_truncated_json_is_a_clear_error(tmp_path, llava_raw):
    llava_raw.write_text(llava_raw.read_text()[:300])
    proc, _, _ = convert(tmp_path, "llava", "--input", str(llava_raw), check=False)
    assert proc.returncode == 2 and "chat.json: invalid JSON" in proc.stderr


def test_parquet_output_embeds_images(tmp_path, llava_raw):
    import pyarrow.parquet as pq

    convert(tmp_path, "llava", "--input", str(llava_raw), "--format", "parquet")
    rows = pq.read_table(tmp_path / "dataset_info" / "ds" / "train.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["ok", "multi", "text"]
    assert Image.open(io.BytesIO(rows[0]["images"][0]["bytes"])).size == (40, 30)


def test_coco_captions(tmp_path):
    root = tmp_path / "coco"
    _jpeg(root / "train2017" / "000000000009.jpg")
    ann = {"images": [{"id": 9, "file_name": "000000000009.jpg", "height": 30, "width": 40}],
           "annotations": [{"id": 1, "image_id": 9, "caption": " A red\nsquare. "},
                           {"id": 2, "image_id": 9, "caption": ""}, {"id": 3, "image_id": 77, "caption": "x"}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(ann))
    captions = root / "annotations" / "captions_train2017.json"
    _, records, report = convert(tmp_path, "coco-captions", "--input", str(captions))
    assert len(records) == 1 and records[0]["messages"][1]["content"] == "A red square."
    assert records[0]["image_id"] == 9 and records[0]["images"] == ["ds/media/000000000009.jpg"]
    assert reasons(report) == {"2": "empty_turn", "3": "malformed_record"}


def test_vqav2_keeps_ten_answers(tmp_path):
    root = tmp_path / "vqa"
    _jpeg(root / "val2014" / "COCO_val2014_000000000042.jpg")
    questions = {"questions": [{"image_id": 42, "question": "What color?", "question_id": 420},
                               {"image_id": 42, "question": "Why?", "question_id": 421},
                               {"image_id": 42, "question": "How many?", "question_id": 422}]}
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
               for i, a in enumerate(["red"] * 9 + ["pink"])]
    annotations = {"annotations": [
        {"question_id": 422, "image_id": 42, "answer_type": "number", "multiple_choice_answer": "2",
         "answers": answers[:3]},
        {"question_id": 420, "image_id": 42, "answer_type": "other", "multiple_choice_answer": "red",
         "answers": answers}]}
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(questions))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(annotations))
    _, records, report = convert(tmp_path, "vqav2", "--input", str(root / "v2_OpenEnded_mscoco_val2014_questions.json"))
    assert len(records) == 1
    r = records[0]
    assert r["answers"] == ["red"] * 9 + ["pink"] and r["answer_type"] == "other" and r["question_id"] == 420
    assert r["messages"][0]["content"] == "<image>What color?\nAnswer the question using a single word or phrase."
    assert reasons(report) == {"421": "malformed_record", "422": "malformed_record"}


def test_ai_challenger_seeded_choices(tmp_path):
    root = tmp_path / "aic"
    raw = []
    for i in range(12):
        name = f"{i:040x}.jpg"
        _jpeg(root / "caption_train_images_20170902" / name, color=(i * 20, 0, 0))
        raw.append({"url": "http://x", "image_id": name, "caption": [f"\n一个 男人 {i}-{k}。" for k in range(5)]})
    raw.append({"url": "http://x", "image_id": "e.jpg", "caption": [" ", "\n"]})
    src = root / "caption_train_annotations_20170902.json"
    src.write_text(json.dumps(raw, ensure_ascii=False))
    _, a, report = convert(tmp_path, "ai-challenger", "--input", str(src), "--seed", "1", name="a")
    _, b, _ = convert(tmp_path, "ai-challenger", "--input", str(src), "--seed", "1", name="b")
    _, c, _ = convert(tmp_path, "ai-challenger", "--input", str(src), "--seed", "2", name="c")
    assert [r["messages"] for r in a] == [r["messages"] for r in b] != [r["messages"] for r in c]
    assert a[0]["references"] == [f"一个男人0-{k}。" for k in range(5)]
    assert a[0]["messages"][1]["content"] in a[0]["references"]
    assert reasons(report) == {"e.jpg": "empty_turn"}


def test_minimind_parquet_and_legacy(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    img = _jpeg(None)
    def conv(text):
        return json.dumps([{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}])

    pq.write_table(pa.table({"conversations": [conv("<image>\n描述"), conv("你好"), conv("<image><image>两张"), "{bad"],
                             "image_bytes": [img, _jpeg(None, (4, 4), (0, 0, 0)), img, img]}),
                   tmp_path / "sft_i2t.parquet")
    _, records, report = convert(tmp_path, "minimind-v", "--input", str(tmp_path / "sft_i2t.parquet"))
    assert [len(r["images"]) for r in records] == [1, 0]  # the text-only row drops its placeholder image
    assert reasons(report) == {"sft_i2t-2": "image_count_mismatch", "sft_i2t-3": "malformed_record"}

    _jpeg(tmp_path / "sft_images" / "0.jpg")
    _jpeg(tmp_path / "sft_images" / "1.jpg")
    rows = [{"conversations": [{"role": "user", "content": "<image>\n<image>\n比较"},
                               {"role": "assistant", "content": "a"}],
             "image": "0.jpg, 1.jpg"},
            {"conversations": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "a"}],
             "image": "0.jpg, 1.jpg"}]
    (tmp_path / "sft_data.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\nnot json\n")
    _, records, report = convert(tmp_path, "minimind-v", "--input", str(tmp_path / "sft_data.jsonl"), name="legacy")
    assert records[0]["images"] == ["legacy/media/0.jpg", "legacy/media/1.jpg"]
    assert reasons(report) == {"sft_data.jsonl:2": "image_count_mismatch", "sft_data.jsonl:3": "malformed_record"}


def _image_parquet(path: Path, **columns) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_medtrinity_ct_filter(tmp_path):
    img = {"bytes": _jpeg(None), "path": None}
    _image_parquet(tmp_path / "mt" / "train-00000.parquet", id=["a", "b", "c", "d"],
                   image=[img, img, {"bytes": None, "path": None}, img],
                   caption=["A computed tomography (CT) scan of the chest.", "An MRI of the knee.",
                            "CT scan of the head.", "The distinct OCT layers."])
    _, records, report = convert(tmp_path, "medtrinity", "--input", str(tmp_path / "mt"))
    assert [r["id"] for r in records] == ["a"]
    assert reasons(report) == {"b": "filtered", "c": "missing_image", "d": "filtered"}


def test_vqa_rad_slake_pathvqa_answer_types(tmp_path):
    _jpeg(tmp_path / "rad" / "VQA_RAD Image Folder" / "synpic1.jpg")
    rad = [{"qid": 1, "image_name": "synpic1.jpg", "answer": "Yes", "answer_type": "CLOSED", "question_type": "PRES",
            "question": "Is there a mass?", "phrase_type": "freeform"},
           {"qid": 2, "image_name": "synpic1.jpg", "answer": "left", "answer_type": "OPEN ", "question_type": "POS",
            "question": "Where?", "phrase_type": "test_freeform"},
           {"qid": 3, "image_name": "synpic1.jpg", "answer": "x", "answer_type": "MAYBE", "question": "?",
            "phrase_type": "para"}]
    (tmp_path / "rad" / "VQA_RAD Dataset Public.json").write_text(json.dumps(rad))
    _, records, report = convert(tmp_path, "vqa-rad", "--input", str(tmp_path / "rad" / "VQA_RAD Dataset Public.json"),
                                 split="test")
    assert [(r["id"], r["answer_type"], r["question_type"]) for r in records] == [("2", "open", "POS")]
    assert reasons(report) == {"1": "filtered", "3": "filtered"}
    _, records, report = convert(tmp_path, "vqa-rad", "--input", str(tmp_path / "rad" / "VQA_RAD Dataset Public.json"))
    assert records[0]["answer_type"] == "closed" and reasons(report)["3"] == "bad_label"

    _jpeg(tmp_path / "slake" / "imgs" / "xmlab1" / "source.jpg")
    slake = [{"img_id": 1, "img_name": "xmlab1/source.jpg", "question": q, "answer": a, "q_lang": lang,
              "modality": "CT", "answer_type": t, "qid": i}
             for i, (q, a, lang, t) in enumerate([("Is this CT?", "Yes", "en", "CLOSED"),
                                                  ("这是什么?", "肝", "zh", "OPEN"),
                                                  ("Which organ?", "", "en", "OPEN")])]
    (tmp_path / "slake" / "train.json").write_text(json.dumps(slake, ensure_ascii=False))
    _, records, report = convert(tmp_path, "slake", "--input", str(tmp_path / "slake" / "train.json"), name="slake")
    assert [(r["answer_type"], r["modality"]) for r in records] == [("closed", "CT")]
    assert records[0]["images"] == ["slake/media/xmlab1/source.jpg"]
    assert reasons(report) == {"1": "filtered", "2": "empty_turn"}

    img = {"bytes": _jpeg(None), "path": None}
    _image_parquet(tmp_path / "pv" / "train-00000-of-00001.parquet", image=[img, img],
                   question=["Are bile duct cells present?", "What is shown?"], answer=["yes", "fibrosis"])
    _, records, _ = convert(tmp_path, "pathvqa", "--input", str(tmp_path / "pv"), name="pv")
    assert [r["answer_type"] for r in records] == ["closed", "open"]


def _affectnet_csv(path: Path, rows) -> None:
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    lines = [f"{f},{x},{y},{w},{h},1.0;2.0,{e},0.1,0.2" for f, x, y, w, h, e in rows]
    path.write_text("\n".join([header, *lines]) + "\n")


def test_affectnet_crop_labels_and_cap(tmp_path):
    root = tmp_path / "affectnet"
    _jpeg(root / "Manually_Annotated_Images" / "1" / "a.jpg", size=(100, 80))
    rows = [("1/a.jpg", 10, 10, 50, 40, 1), ("1/a.jpg", 10, 10, 50, 40, 1), ("1/a.jpg", 0, 0, 20, 20, 7),
            ("1/a.jpg", 10, 10, 50, 40, 9), ("1/a.jpg", 10, 10, 50, 40, 12), ("1/a.jpg", 10, 10, "x", 40, 1),
            ("1/missing.jpg", 10, 10, 50, 40, 2), ("1/a.jpg", 500, 500, 10, 10, 3)]
    _affectnet_csv(root / "training.csv", rows)
    _, records, report = convert(tmp_path, "affectnet", "--input", str(root / "training.csv"), "--max-per-class", "1")
    assert [r["label"] for r in records] == ["happy", "contempt"]
    assert "neutral, happy, sad, surprise, fear, disgust, anger, contempt" in records[0]["messages"][0]["content"]
    crop = Image.open(tmp_path / "dataset_info" / records[0]["images"][0])
    assert crop.size == (70, 56)  # 50x40 box + 20% margin each side: (10-10, 10-8) .. (70, 58)
    assert reasons(report) == {"training.csv:3": "over_class_cap", "training.csv:5": "filtered",
                               "training.csv:6": "bad_label", "training.csv:7": "malformed_record",
                               "training.csv:8": "missing_image", "training.csv:9": "malformed_record"}
    _, records, report = convert(tmp_path, "affectnet", "--input", str(root / "training.csv"), "--classes", "7",
                                 "--strict", check=False, name="seven")
    assert "training.csv:6" in _.stderr  # strict: the first non-policy skip (bad label 12)


def test_fer2013_pixels_and_usage(tmp_path):
    pixels = " ".join(str((i * 7) % 256) for i in range(48 * 48))
    lines = ["emotion,pixels,Usage", f"3,{pixels},Training", f"9,{pixels},Training", "0,1 2 3,Training",
             f"0,{pixels},PrivateTest"]
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    _, records, report = convert(tmp_path, "fer2013", "--input", str(tmp_path / "fer2013.csv"))
    assert [r["label"] for r in records] == ["happy"]
    image = Image.open(tmp_path / "dataset_info" / records[0]["images"][0])
    assert image.size == (48, 48) and image.getpixel((1, 0)) == (7, 7, 7)
    assert reasons(report) == {"fer2013.csv:3": "bad_label", "fer2013.csv:4": "malformed_record",
                               "fer2013.csv:5": "filtered"}


def test_image_folder(tmp_path):
    _jpeg(tmp_path / "pets" / "cat" / "1.jpg")
    _jpeg(tmp_path / "pets" / "hot_dog" / "2.PNG")  # a JPEG behind a .PNG name: stored as .jpg
    (tmp_path / "pets" / "cat" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    _, records, report = convert(tmp_path, "image-folder", "--input", str(tmp_path / "pets"), "--subject", "the food")
    assert [(r["label"], r["images"][0]) for r in records] == [("cat", "ds/media/cat/1.jpg"),
                                                                ("hot dog", "ds/media/hot_dog/2.jpg")]
    question = "<image>What is the food in the image? Answer with one of: cat, hot dog."
    assert records[0]["messages"][0]["content"] == question
    assert reasons(report) == {"cat/notes.txt": "unreadable_image"}
