"""`vlmr baseline blip` on a tiny random BLIP built here (real transformers classes, a few KB of weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a the what color is of background red blue green pink cyan "
         "shape square circle triangle yes no picture").split()


def build_tiny_blip(out: Path, task: str) -> Path:
    """A BLIP of the real class with 2-layer 32-wide towers, a word-level BERT vocabulary and a 32 px processor."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    ids = {w: i for i, w in enumerate(WORDS)}
    # the text decoder starts from [DEC] and stops at [SEP], as BLIP's BERT vocabulary does
    text = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32, bos_token_id=ids["[DEC]"],
                pad_token_id=ids["[PAD]"], sep_token_id=ids["[SEP]"], eos_token_id=ids["[SEP]"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=16)
    torch.manual_seed(0)
    cls = BlipForQuestionAnswering if task == "vqa" else BlipForConditionalGeneration
    model = cls(BlipConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.mark.parametrize("task", ["vqa", "caption"])
def test_blip_baseline_writes_predictions_that_vlmr_eval_scores(task, tmp_path, demo_data):
    demo_data()
    model = build_tiny_blip(tmp_path / "blip", task)
    predictions = tmp_path / "pred.jsonl"
    run_cli(["vlmr", "baseline", "blip", "--task", task, "--model", str(model), "--dataset", "demo_shapes_test",
             "--out", str(predictions), "--limit", "5", "--batch-size", "2", "--max-new-tokens", "4"])
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 5 and all(set(r) >= {"prompt", "predict", "label"} for r in rows)
    assert all(r["predict"] and set(r["predict"].split()) <= set(WORDS) for r in rows)
    if task == "vqa":  # the bare question, without <image> or an answer-format instruction
        assert all(r["prompt"] and "<image>" not in r["prompt"] for r in rows)
    run_cli(["vlmr", "eval", str(predictions), "--task", task, "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["count"] == 5 and report["plots"]


def test_missing_image_names_the_line(tmp_path, demo_data):
    model = build_tiny_blip(tmp_path / "blip", "vqa")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "<image>what color?"},
                                             {"role": "assistant", "content": "red"}], "images": ["nope.png"]}) + "\n")
    proc = run_cli(["vlmr", "baseline", "blip", "--task", "vqa", "--model", str(model), "--dataset", str(data),
                    "--out", str(tmp_path / "p.jsonl")], check=False)
    assert proc.returncode == 1 and "line 1" in proc.stderr and "nope.png" in proc.stderr
    assert not (tmp_path / "p.jsonl").exists()
