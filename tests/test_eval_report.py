"""`vlmr eval` end to end: reports for each task, the --dataset join, --compare, and predict -> eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from vlmrecipes.data_converters import fer2013
from vlmrecipes.data_converters.tasks import CLASSIFY_PROMPT
from vlmrecipes.eval.bench import RequestResult, summarize, write_report
from vlmrecipes.eval.metrics import UNMAPPED
from vlmrecipes.eval.plots import bar_figure
from vlmrecipes.eval.report import compare, evaluate
from vlmrecipes.eval.scoring import score_emotion
from vlmrecipes.eval.tasks import TASKS


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _pred(predict: str, label: str) -> dict:
    return {"prompt": "user\n<image>q", "predict": predict, "label": label}


def _cells(markdown: str) -> list[list[str]]:
    """The stripped cells of each Markdown table line (tabulate pads every column to one width)."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]


def _record(answer: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": answer}],
            "images": ["x.png"], **extra}


def test_vqa_joins_the_dataset_answers_by_line(tmp_path):
    preds = _jsonl(tmp_path / "generated_predictions.jsonl", [_pred("Two.", "2"), _pred("<think>.</think>yes", "yes")])
    data = _jsonl(tmp_path / "vqa.jsonl", [_record("2", answers=["2"] * 3 + ["3"] * 7, answer_type="number"),
                                           _record("yes", answers=["yes"] * 10, answer_type="yes/no")])
    run_cli(["vlmr", "eval", str(preds), "--task", "vqa", "--dataset", str(data), "--out", str(tmp_path / "r")])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["metrics"]["vqa_accuracy"] == pytest.approx((0.9 + 1.0) / 2)  # see test_eval_metrics
    assert report["metrics"]["exact_match"] == 1.0
    assert report["details"]["vqa_accuracy_by_answer_type"]["number"]["score"] == pytest.approx(0.9)
    assert report["notes"] == []
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert ["vqa_accuracy", "95.0%"] in _cells(markdown) and "![vqa_by_answer_type.png]" in markdown
    assert (tmp_path / "r" / "vqa_by_answer_type.png").stat().st_size > 0


def test_dataset_of_another_length_is_refused(tmp_path):
    preds = _jsonl(tmp_path / "p.jsonl", [_pred("a", "a")])
    data = _jsonl(tmp_path / "d.jsonl", [_record("a"), _record("b")])
    proc = run_cli(["vlmr", "eval", str(preds), "--task", "vqa", "--dataset", str(data)], check=False)
    assert proc.returncode == 1 and "2 records for 1 predictions" in proc.stderr


def test_emotion_report_with_unmapped_answers(tmp_path):
    rows = [_pred("Happiness.", "happy"), _pred("sad", "sad"), _pred("I don't know", "neutral"),
            _pred("calm", "neutral")]
    report = evaluate(_jsonl(tmp_path / "p.jsonl", rows), "emotion", tmp_path / "r",
                      labels=["neutral", "happy", "sad", "angry"])
    assert report["metrics"]["accuracy"] == 0.75 and report["details"]["unmapped"] == 1
    assert report["details"]["per_class"]["neutral"]["recall"] == 0.5
    assert {"emotion_confusion.png", "emotion_recall.png"} <= set(report["plots"])


def test_emotion_gold_labels_without_labels_are_normalised_like_predictions(tmp_path):
    """No --labels: "Happy", "happy", "HAPPY." (and the synonym "Happiness") are one gold class, as they are
    one class for predictions; FER2013's own word "angry" names its class."""
    rows = [_pred("happy", "Happy"), _pred("HAPPY", "happy"), _pred("sad", "HAPPY."), _pred("joyful", "Happiness"),
            _pred("Sad.", "sad"), _pred("furious", "angry"), _pred("I don't know", "Angry!")]
    report = evaluate(_jsonl(tmp_path / "p.jsonl", rows), "emotion", tmp_path / "r")
    assert report["details"]["labels"] == ["angry", "happy", "sad"]
    assert report["details"]["gold_counts"] == {"happy": 4, "angry": 2, "sad": 1}
    assert report["details"]["per_class"]["happy"] == pytest.approx(
        {"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4})  # 3 of 4 happy found, no false happy
    assert report["metrics"]["accuracy"] == pytest.approx(5 / 7) and report["details"]["unmapped"] == 1
    per_class_rows = (tmp_path / "r" / "report.md").read_text().split("## per_class")[1].split("\n\n")[1]
    assert [cells[0] for cells in _cells(per_class_rows)[2:]] == ["angry", "happy", "sad"]


def test_emotion_report_lists_every_class_of_the_converted_dataset(tmp_path):
    """--dataset of a converted FER2013 file holding only happy and sad faces: the question offers the seven
    FER2013 classes, and the report lists all seven (five with no support), macro-F1 unchanged by them."""
    question = "<image>" + CLASSIFY_PROMPT.format(subject="the facial expression", classes=", ".join(fer2013.LABELS))
    data = _jsonl(tmp_path / "fer2013_test.jsonl", [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": label}],
         "images": ["x.png"], "label": label} for label in ("happy", "happy", "sad")])
    preds = _jsonl(tmp_path / "p.jsonl", [{"predict": p, "label": g}
                                          for p, g in [("happy", "happy"), ("sad", "happy"), ("sad", "sad")]])
    run_cli(["vlmr", "eval", str(preds), "--task", "emotion", "--dataset", str(data), "--out", str(tmp_path / "r")])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(report["details"]["per_class"]) == list(fer2013.LABELS)
    assert report["details"]["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # happy P 1/1 R 1/2, sad P 1/2 R 1/1: F1 2/3 each; the five absent classes are not averaged in as zeros
    assert report["metrics"]["macro_f1"] == pytest.approx(2 / 3)
    assert report["details"]["label_set"] == "FER2013"
    per_class_rows = (tmp_path / "r" / "report.md").read_text().split("## per_class")[1].split("\n\n")[1]
    assert [cells[0] for cells in _cells(per_class_rows)[2:]] == list(fer2013.LABELS)


def test_run_name_is_the_model_folder_above_predict(tmp_path):
    """A predict recipe writes saves/<task>/<model>_<method>/predict/: the run is named after the model folder."""
    predict_dir = tmp_path / "saves" / "emotion" / "qwen3_vl_4b_lora" / "predict"
    predict_dir.mkdir(parents=True)
    preds = _jsonl(predict_dir / "generated_predictions.jsonl", [_pred("happy", "happy")])
    assert evaluate(preds, "emotion", tmp_path / "r")["name"] == "qwen3_vl_4b_lora"
    assert evaluate(_jsonl(tmp_path / "base.jsonl", [_pred("happy", "happy")]), "emotion",
                    tmp_path / "r2")["name"] == tmp_path.name
    assert compare([preds], tmp_path / "cmp", task="emotion")["runs"] == ["0_qwen3_vl_4b_lora"]


def test_rate_charts_span_zero_to_one_whatever_the_values(tmp_path):
    """All recalls 0: the axis is 0..1, not matplotlib's -0.04..0.04 around the zero bars."""
    assert bar_figure({"happy": 0.0, "sad": 0.0}, "recall", rate=True).axes[0].get_ylim() == (0.0, 1.0)
    assert bar_figure({"happy": 0.2, "sad": 0.4}, "recall", rate=True).axes[0].get_ylim() == (0.0, 1.0)
    assert bar_figure({"cider": 2.5}, "caption").axes[0].get_ylim()[1] > 2.5  # a raw-scale metric keeps its range


def test_unmapped_answers_are_a_confusion_column_only_when_there_are_some():
    """No gold label is ever unmapped: `<unmapped>` is a predicted column, never an (always empty) row."""
    rows = [_pred("happy", "happy"), _pred("no idea", "sad"), _pred("sad", "sad")]
    confusion = score_emotion(rows).confusion
    assert confusion.classes == ["happy", "sad"] and confusion.columns == ["happy", "sad", UNMAPPED]
    assert confusion.counts() == [[1, 0, 0], [0, 1, 1]]
    mapped = score_emotion([_pred("happy", "happy"), _pred("happy", "sad")]).confusion
    assert mapped.columns == ["happy", "sad"] and mapped.counts() == [[1, 0], [1, 0]]


@pytest.mark.parametrize("content, message", [
    (b'{"predict": "yes", "label": "yes"}\n{"predict": "caf\xe9", "label": "x"}\n',
     "p.jsonl:2: not UTF-8 (byte 0xe9 at byte 17 of the line); save the file as UTF-8"),
    (b'{"predict": 3, "label": "3"}\n',
     "p.jsonl:1: 'predict' is a JSON number (3), not a string; write the answer as text, e.g. \"3\""),
    (b'{"predict": "yes", "label": null}\n', "p.jsonl:1: 'label' is a JSON null (null), not a string"),
    (b'{"predict": "yes", "label": "yes"}\n\n{"predict": "no", "label": "no"\n',
     "p.jsonl:3: not JSON (Expecting ',' delimiter at column 32); each line must be one JSON object"),
    (b'["yes", "yes"]\n', "p.jsonl:1: a JSON array, expected an object"),
    (b'{"prompt": "q", "label": "yes"}\n', "p.jsonl:1: no 'predict' field; is this a generated_predictions.jsonl"),
])
def test_bad_prediction_files_are_one_line_errors_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "p.jsonl").write_bytes(content)
    proc = run_cli(["vlmr", "eval", str(tmp_path / "p.jsonl"), "--task", "vqa", "--out", str(tmp_path / "r")],
                   check=False)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(f"vlmr eval: {tmp_path / message.split(':')[0]}:") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_medvqa_caption_choice_reports(tmp_path):
    med = evaluate(_jsonl(tmp_path / "m.jsonl", [
        {**_pred("normal", "no"), "answer_type": "CLOSED"}, _pred("Yes.", "yes"), _pred("left lung", "left kidney")]),
        "medvqa", tmp_path / "m")
    assert med["metrics"]["strict.closed_accuracy"] == 0.5 and med["metrics"]["strict.open_recall"] == 0.5
    assert med["metrics"]["llava_med.closed_accuracy"] == 1.0  # "no" is a substring of "normal" there
    cap = evaluate(_jsonl(tmp_path / "c.jsonl", [
        {**_pred("a red square", "a red square"), "image_id": 1}, {**_pred("ignored", "red box"), "image_id": 1},
        {**_pred("blue circle", "a blue circle"), "image_id": 2}]), "caption", tmp_path / "c")
    assert cap["details"]["images"] == 2 and cap["metrics"]["cider"] > 0
    choice = evaluate(_jsonl(tmp_path / "q.jsonl", [_pred("The answer is (B).", "B"), _pred("C", "A. a cat"),
                                                    _pred("hmm", "D")]), "choice", tmp_path / "q")
    assert choice["metrics"]["accuracy"] == pytest.approx(1 / 3) and choice["details"]["unmapped"] == 1


@pytest.mark.parametrize("task", TASKS)
def test_scorers_return_numbers_and_write_nothing(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{**_pred("B", "B"), "_line": 1}, {**_pred("happy", "C"), "_line": 2}]
    result = TASKS[task].run(rows)
    assert result.metrics and len(result.scores) == 2
    assert list(tmp_path.iterdir()) == []  # no report folder, no PNG: drawing is report.py's and plots.py's job
    if TASKS[task].labels is None:  # a task that takes no labels refuses them instead of ignoring them
        with pytest.raises(ValueError, match="--labels goes with --task emotion or choice"):
            TASKS[task].run(rows, ["B", "C"])


def test_bench_task_metrics_leave_no_task_charts_behind(tmp_path):
    """`vlmr bench --task emotion` scores the answers; the confusion matrix and recall charts are `vlmr eval`'s."""
    answers = [("happy", "happy"), ("sad", "happy"), ("neutral", "neutral")]
    results = [RequestResult(i, i + 1, 0.1 * i, ttft_s=0.01, latency_s=0.05, output_tokens=2, status=200, answer=a,
                             label=label) for i, (a, label) in enumerate(answers)]
    config = {"base_url": "http://127.0.0.1:1/v1", "dataset": "faces", "concurrency": 1, "stream": True}
    report = write_report(results, summarize(results, 1.0, False), tmp_path, "emotion", None, config)
    assert report["task"]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md", "latency_cdf.png", "requests.csv",
                                                          "timeline.png"]


def test_compare_runs(tmp_path):
    base = _jsonl(tmp_path / "base.jsonl", [_pred("no", "yes"), _pred("no", "no")])
    tuned = _jsonl(tmp_path / "tuned.jsonl", [_pred("yes", "yes"), _pred("no", "no")])
    evaluate(base, "vqa", tmp_path / "base", name="base")
    run_cli(["vlmr", "eval", "--compare", str(tmp_path / "base"), str(tuned), "--task", "vqa", "--names", "base",
             "tuned", "--out", str(tmp_path / "cmp")])
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["metrics"]["base"]["exact_match"] == 0.5 and result["metrics"]["tuned"]["exact_match"] == 1.0
    # a difference of rates is in percentage points: 50% -> 100% is +50 points, not "+50%" (which reads as x1.5)
    assert ["exact_match", "50.0%", "100.0% (+50.0 pp)"] in _cells((tmp_path / "cmp" / "compare.md").read_text())
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    captions = [_jsonl(tmp_path / f"cap{i}.jsonl", [{**_pred(p, "a red square"), "image_id": 1},
                                                    {**_pred(p, "a blue circle"), "image_id": 2}])
                for i, p in enumerate(["a red square", "a green thing"])]
    caption = compare(captions, tmp_path / "cap_cmp", task="caption", names=["good", "bad"])
    cider = caption["metrics"]["bad"]["cider"] - caption["metrics"]["good"]["cider"]
    assert f"({cider:+.3f})" in (tmp_path / "cap_cmp" / "compare.md").read_text()  # CIDEr in its own unit
    evaluate(base, "medvqa", tmp_path / "med")
    with pytest.raises(ValueError, match="different tasks"):
        compare([tmp_path / "base", tmp_path / "med"], tmp_path / "bad")


@pytest.mark.slow
def test_predict_then_eval(tmp_path, tiny_model, demo_data):
    """LLaMA-Factory's do_predict on the tiny Qwen2.5-VL writes generated_predictions.jsonl; vlmr eval reads it."""
    dataset_dir = demo_data()
    limited = dataset_dir / "demo_emotion" / "test.jsonl"
    config = {
        "model_name_or_path": str(tiny_model("qwen2_5_vl")), "stage": "sft", "do_predict": True,
        "finetuning_type": "full", "predict_with_generate": True, "eval_dataset": "demo_emotion_test",
        "dataset_dir": str(dataset_dir), "template": "qwen2_vl", "cutoff_len": 256, "max_samples": 40,
        "per_device_eval_batch_size": 8, "max_new_tokens": 4, "do_sample": False, "output_dir": str(tmp_path / "out"),
        "overwrite_output_dir": True, "report_to": "none", "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0, "overwrite_cache": True,
    }
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(config))
    run_cli(["llamafactory-cli", "train", str(tmp_path / "predict.yaml")])
    predictions = tmp_path / "out" / "generated_predictions.jsonl"
    run_cli(["vlmr", "eval", str(predictions), "--task", "emotion", "--dataset", str(limited),
             "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    # labels line up with the dataset's answers: the only note names the label set (demo_emotion's is none published)
    assert report["count"] == 40 and [n for n in report["notes"] if not n.startswith("label set:")] == []
    assert 0 <= report["metrics"]["accuracy"] <= 1 and set(report["details"]["labels"]) >= {"happy", "neutral"}
    assert (tmp_path / "report" / "emotion_confusion.png").stat().st_size > 0
