"""eval/lmms_tasks/ run by the real lmms-eval (`pip install -e .[eval]`): its numbers equal `vlmr eval`'s.

Two runs, each through lmms-eval's task loader (`--include_path`), its JSON dataset loading, `doc_to_*`,
`process_results` and aggregation, and through `vlmr eval` on the same answers; every metric must agree:
- served: lmms-eval's OpenAI-compatible backend (`--model openai`) queries a tiny Qwen2.5-VL twin served by
  `llamafactory-cli api` on loopback, images sent as data URLs; its logged samples become the predictions
  JSONL that `vlmr eval` scores, as a user comparing the two would do.
- replay: lmms-eval's `from_log` model replays hand-written answers, so the numbers are checked by hand too.
Skipped where lmms-eval is not installed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from helpers import BIN, REPO, cli_env, free_port, run_cli
from PIL import Image

from vlmrecipes.eval.metrics import EMOTION_LABEL_SETS as LABEL_SETS
from vlmrecipes.eval.report import evaluate

pytest.importorskip("lmms_eval", reason="lmms-eval is the [eval] extra: pip install -e .[eval]")

TASKS = REPO / "eval" / "lmms_tasks"
API_KEY = "test-key-7d2a"
MAX_NEW_TOKENS = 32  # eval/lmms_tasks/_medvqa_template_yaml generation_kwargs

# (question, answer, extra fields, the model's answer): VQA-RAD-shaped and FER2013-shaped converted records
VQA_RAD = [("Is there a mass?", "yes", {"answer_type": "closed", "question_type": "PRES"}, "Yes, there is."),
           ("Is the lung normal?", "no", {"answer_type": "closed", "question_type": "ABN"}, "normal"),
           ("Which side?", "left", {"answer_type": "closed", "question_type": "POS"}, "left"),
           ("Is it enlarged?", "yes", {"answer_type": "closed", "question_type": "SIZE"}, "no"),
           ("What organ?", "liver", {"answer_type": "open", "question_type": "ORGAN"}, "The liver"),
           ("Where is it?", "left lung", {"answer_type": "open", "question_type": "POS"}, "left left lung")]
FER2013 = [("What is the facial expression?", label, {"label": label}, answer)
           for label, answer in [("happy", "happy"), ("sad", "The face looks sad."), ("angry", "furious"),
                                 ("neutral", "happy"), ("fear", "I cannot tell")]]


def _image(root, folder: str, i: int):
    """A distinct 32x32 PNG per record, under dataset_info/<folder>/media/; returns its path."""
    path = root / "dataset_info" / folder / "media" / f"{i}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (40 * i, 90, 0)).save(path)
    return path


def _record(folder: str, i: int, question: str, answer: str, extra: dict) -> dict:
    """One converted ShareGPT record as `vlmr convert` writes it (image path relative to dataset_info/)."""
    return {"id": f"{folder}_test_{i}", "images": [f"{folder}/media/{i}.png"], **extra,
            "messages": [{"role": "user", "content": "<image>" + question}, {"role": "assistant", "content": answer}]}


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _lmms_eval(args: list[str], cwd) -> subprocess.CompletedProcess:
    """`python -m lmms_eval ARGS --include_path eval/lmms_tasks`, offline, from `cwd` (which holds dataset_info/)."""
    env = cli_env(HF_HOME=str(cwd / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    return run_cli([sys.executable, "-m", "lmms_eval", *args, "--include_path", str(TASKS)], cwd=cwd, env=env)


def _our_metrics(report_dir) -> dict[str, float]:
    """report.json's metrics named as lmms-eval names them (`.` is not allowed in its metric names)."""
    metrics = json.loads((report_dir / "report.json").read_text())["metrics"]
    return {name.replace(".", "_"): value for name, value in metrics.items()}


def _lmms_metrics(results: dict, task: str) -> dict[str, float]:
    """lmms-eval's `<metric>,<filter>` results of `task`, without the stderr entries."""
    return {key.split(",")[0]: value for key, value in results["results"][task].items()
            if key.endswith(",none") and "_stderr" not in key}


# --- served: lmms-eval's OpenAI-compatible backend against `llamafactory-cli api` ----------------------------
def _chat(port: int, question: str, image) -> str:
    """The served model's answer to `question` about `image`, asked as lmms-eval's openai (chat) backend asks: one
    user turn, the image as a PNG data URL then the text (the server reads `<image>question`, the converted
    records' order), greedy (temperature 0), MAX_NEW_TOKENS."""
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    body = {"model": "tiny", "max_tokens": MAX_NEW_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": question}]}]}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    except urllib.error.HTTPError:  # 401 without the key: it is up
        return True
    except OSError:  # not listening yet
        return False
    return True


@contextmanager
def _served(model, tmp_path):
    """`llamafactory-cli api` serving `model` on 127.0.0.1 with API_KEY; yields the port once it answers."""
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"model_name_or_path: {model}\ntemplate: qwen2_vl\ninfer_backend: huggingface\n")
    log_path = tmp_path / "api.log"
    env = cli_env(API_HOST="127.0.0.1", API_PORT=str(port), API_KEY=API_KEY)
    with open(log_path, "w") as log, subprocess.Popen([str(BIN / "llamafactory-cli"), "api", str(config)],
                                                      stdout=log, stderr=subprocess.STDOUT, env=env) as server:
        try:
            deadline = time.monotonic() + 300
            while not _answers(port):
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the API server did not start: " + log_path.read_text()[-3000:]
                time.sleep(0.5)
            yield port
        finally:  # the server runs in this one process (llamafactory's launcher calls run_api) and keeps no state
            server.kill()


def test_lmms_eval_on_a_served_model_equals_vlmr_eval(tmp_path, tiny_model):
    questions = [("Is there a mass?", {"answer_type": "closed", "question_type": "PRES"}),
                 ("What organ is shown?", {"answer_type": "open", "question_type": "ORGAN"}),
                 ("Is the heart enlarged?", {"answer_type": "closed", "question_type": "SIZE"}),
                 ("Where is the lesion?", {"answer_type": "open", "question_type": "POS"}),
                 ("Is there a fracture?", {"answer_type": "closed", "question_type": "ABN"})]  # left out by --limit
    limit = 4
    images = [_image(tmp_path, "vqa_rad", i) for i in range(len(questions))]
    with _served(tiny_model("qwen2_5_vl"), tmp_path) as port:
        direct = [_chat(port, question, image) for (question, _), image in zip(questions[:limit], images)]
        # A random-weight twin answers gibberish. So that the scores are neither all 0 nor all 1, the second
        # (open) question's reference answer is the model's own answer; the rest have real-looking answers.
        answers = ["yes", direct[1], "no", "left lung", "no"]
        records = [_record("vqa_rad", i, question, answer, extra)
                   for i, ((question, extra), answer) in enumerate(zip(questions, answers))]
        _write_jsonl(tmp_path / "dataset_info" / "vqa_rad" / "test.jsonl", records)
        _lmms_eval(["--model", "openai", "--model_args",
                    f"model=tiny,base_url=http://127.0.0.1:{port}/v1,api_key={API_KEY},num_concurrent=1,timeout=120",
                    "--tasks", "vlmr_vqa_rad", "--limit", str(limit), "--log_samples",
                    "--output_path", str(tmp_path / "lmms")], cwd=tmp_path)

    # lmms-eval's logged samples -> the predictions JSONL vlmr eval reads; --dataset: the records it evaluated
    samples = sorted((json.loads(line) for line in next((tmp_path / "lmms").rglob("*_samples_vlmr_vqa_rad.jsonl"))
                      .read_text().splitlines()), key=lambda sample: sample["doc_id"])
    assert [sample["doc_id"] for sample in samples] == list(range(limit))
    predictions = [{"prompt": question, "predict": sample["filtered_resps"], "label": sample["target"]}
                   for (question, _), sample in zip(questions, samples)]
    assert [row["predict"] for row in predictions] == direct  # the served model's answers, in doc order
    _write_jsonl(tmp_path / "predictions.jsonl", predictions)
    _write_jsonl(tmp_path / "evaluated.jsonl", records[:limit])
    run_cli(["vlmr", "eval", str(tmp_path / "predictions.jsonl"), "--task", "medvqa",
             "--dataset", str(tmp_path / "evaluated.jsonl"), "--out", str(tmp_path / "report")], cwd=tmp_path)

    results = json.loads(next((tmp_path / "lmms").rglob("*_results.json")).read_text())
    ours = _our_metrics(tmp_path / "report")
    assert _lmms_metrics(results, "vlmr_vqa_rad") == pytest.approx(ours)
    assert ours["strict_open_exact_match"] == 0.5  # the open answer that is the model's own, of two


# --- replay: lmms-eval's from_log model, hand-checked numbers -----------------------------------------------
def _write_replay(root, folder: str, records) -> None:
    """The converted split, the predictions JSONL and the from_log log file of `records`' answers."""
    converted = []
    for i, (question, answer, extra, _) in enumerate(records):
        _image(root, folder, i)
        converted.append(_record(folder, i, question, answer, extra))
    _write_jsonl(root / "dataset_info" / folder / "test.jsonl", converted)
    _write_jsonl(root / f"{folder}_predictions.jsonl",
                 [{"prompt": question, "predict": said, "label": answer} for question, answer, _, said in records])
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / f"{folder}.json").write_text(json.dumps({  # what from_log reads
        "args": {"model": "from_log", "model_args": "", "limit": None}, "model_configs": {"task": f"vlmr_{folder}"},
        "time": "0101_0000", "logs": [{"doc_id": i, "resps": [[r[3]]]} for i, r in enumerate(records)]}))


def test_lmms_eval_scores_equal_vlmr_eval(tmp_path):
    _write_replay(tmp_path, "vqa_rad", VQA_RAD)
    _write_replay(tmp_path, "fer2013", FER2013)
    _lmms_eval(["--model", "from_log", "--model_args", f"logs={tmp_path / 'logs'}",
                "--tasks", "vlmr_vqa_rad,vlmr_fer2013", "--output_path", str(tmp_path / "lmms")], cwd=tmp_path)
    results = json.loads(next((tmp_path / "lmms").rglob("*_results.json")).read_text())
    for folder, task, labels in (("vqa_rad", "medvqa", None), ("fer2013", "emotion", LABEL_SETS["fer2013"].labels)):
        # what `vlmr eval PREDICTIONS --task TASK --dataset FILE [--label-set fer2013]` runs
        evaluate(tmp_path / f"{folder}_predictions.jsonl", task, tmp_path / folder, labels,
                 str(tmp_path / "dataset_info" / folder / "test.jsonl"))
        assert _lmms_metrics(results, f"vlmr_{folder}") == pytest.approx(_our_metrics(tmp_path / folder))
    # the numbers themselves, by hand: LLaVA-Med closed = Yes 1, normal 1 ("no" substring), left 0, no/yes 0
    assert results["results"]["vlmr_vqa_rad"]["llava_med_closed_accuracy,none"] == 0.5
    assert results["results"]["vlmr_fer2013"]["accuracy,none"] == 0.6  # happy, sad, furious -> angry
