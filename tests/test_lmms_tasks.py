"""eval/lmms_tasks/ run by the real lmms-eval (`pip install -e .[eval]`): its numbers equal `vlmr eval`'s.

lmms-eval's `from_log` model replays answers from a log file, so the same answers go through lmms-eval's task
loader (`--include_path`), its JSON dataset loading, `doc_to_*`, `process_results` and aggregation, and through
`vlmr eval PREDICTIONS --dataset FILE`; every metric must agree. Skipped where lmms-eval is not installed.
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers import REPO, cli_env, run_cli
from PIL import Image

from vlmrecipes.eval.metrics import EMOTION_LABEL_SETS as LABEL_SETS
from vlmrecipes.eval.report import evaluate

pytest.importorskip("lmms_eval", reason="lmms-eval is the [eval] extra: pip install -e .[eval]")

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


def _write(root, folder: str, records) -> None:
    (root / "dataset_info" / folder / "media").mkdir(parents=True)
    with open(root / "dataset_info" / folder / "test.jsonl", "w") as f:
        for i, (question, answer, extra, _) in enumerate(records):
            Image.new("RGB", (32, 32), (40 * i, 90, 0)).save(root / "dataset_info" / folder / "media" / f"{i}.png")
            f.write(json.dumps({"id": f"{folder}_test_{i}", "images": [f"{folder}/media/{i}.png"], **extra,
                                "messages": [{"role": "user", "content": "<image>" + question},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    with open(root / f"{folder}_predictions.jsonl", "w") as f:
        for question, answer, _, said in records:
            f.write(json.dumps({"prompt": question, "predict": said, "label": answer}) + "\n")
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / f"{folder}.json").write_text(json.dumps({  # what from_log reads
        "args": {"model": "from_log", "model_args": "", "limit": None}, "model_configs": {"task": f"vlmr_{folder}"},
        "time": "0101_0000", "logs": [{"doc_id": i, "resps": [[r[3]]]} for i, r in enumerate(records)]}))


def test_lmms_eval_scores_equal_vlmr_eval(tmp_path):
    _write(tmp_path, "vqa_rad", VQA_RAD)
    _write(tmp_path, "fer2013", FER2013)
    env = cli_env(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    run_cli([sys.executable, "-m", "lmms_eval", "--model", "from_log", "--model_args", f"logs={tmp_path / 'logs'}",
             "--tasks", "vlmr_vqa_rad,vlmr_fer2013", "--include_path", str(REPO / "eval" / "lmms_tasks"),
             "--output_path", str(tmp_path / "lmms")], cwd=tmp_path, env=env)
    results = json.loads(next((tmp_path / "lmms").rglob("*_results.json")).read_text())["results"]
    for folder, task, labels in (("vqa_rad", "medvqa", None), ("fer2013", "emotion", LABEL_SETS["fer2013"].labels)):
        # what `vlmr eval PREDICTIONS --task TASK --dataset FILE [--label-set fer2013]` runs
        ours = evaluate(tmp_path / f"{folder}_predictions.jsonl", task, tmp_path / folder, labels,
                        str(tmp_path / "dataset_info" / folder / "test.jsonl"))["metrics"]
        theirs = {key.split(",")[0]: value for key, value in results[f"vlmr_{folder}"].items()
                  if key.endswith(",none") and "_stderr" not in key}
        assert theirs == pytest.approx({name.replace(".", "_"): value for name, value in ours.items()})
    # the numbers themselves, by hand: LLaVA-Med closed = Yes 1, normal 1 ("no" substring), left 0, no/yes 0
    assert results["vlmr_vqa_rad"]["llava_med_closed_accuracy,none"] == 0.5
    assert results["vlmr_fer2013"]["accuracy,none"] == 0.6  # happy, sad, furious -> angry
