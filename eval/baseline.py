"""`vlmr baseline blip`: zero-shot BLIP predictions (Li et al. 2022, BLIP) in the `vlmr eval` format.

    vlmr baseline blip --task vqa --model Salesforce/blip-vqa-base --dataset vqav2_validation --out blip/vqa.jsonl
    vlmr baseline blip --task caption --model Salesforce/blip-image-captioning-base \\
        --dataset coco_captions_validation --out blip/caption.jsonl
    vlmr eval blip/vqa.jsonl --task vqa

Runs transformers' `BlipForQuestionAnswering` (vqa: the first user turn, without `<image>` and our
short-answer instruction, is the question) or `BlipForConditionalGeneration` (caption: unconditional, or
continuing `--prompt`) on each record's first image, greedy decoding. Each output line is
`{"prompt", "predict", "label", ...the record's extra fields}`, so `vlmr eval` needs no `--dataset` for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from vlmrecipes.data_converters.schema import IMAGE_TOKEN
from vlmrecipes.data_converters.tasks import SHORT_ANSWER
from vlmrecipes.eval.data import Example, load_examples

MODEL_CLASSES = {"vqa": "BlipForQuestionAnswering", "caption": "BlipForConditionalGeneration"}


def question(example: Example) -> str:
    """The bare question BLIP-VQA was trained on: no image placeholder, no answer-format instruction."""
    return example.prompt.replace(IMAGE_TOKEN, "").replace(SHORT_ANSWER.strip(), "").strip()


def _image(example: Example, dataset: str):
    from PIL import Image

    if not example.images:
        raise ValueError(f"{dataset} line {example.line}: no image; BLIP needs one image per record")
    path = example.images[0]
    try:
        return Image.open(path).convert("RGB")
    except OSError as e:
        raise ValueError(f"{dataset} line {example.line}: cannot read image {path} ({e}); fix the path or "
                         "run `vlmr validate` on the dataset") from e


def predict(task: str, model_id: str, dataset: str, out: Path, batch_size: int = 8, max_new_tokens: int = 20,
            limit: int | None = None, prompt: str | None = None, device: str = "auto") -> int:
    """Write BLIP's predictions for `dataset` to `out` (JSONL); returns the number of rows."""
    import torch
    import transformers
    from transformers import AutoProcessor

    examples = load_examples(dataset)[:limit]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model_cls = getattr(transformers, MODEL_CLASSES[task])
    model = model_cls.from_pretrained(model_id, dtype=torch.float16 if device == "cuda" else torch.float32)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(model_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # a crash never leaves a half file under the final name
    with open(partial, "w", encoding="utf-8") as f, tqdm(total=len(examples), unit=" records", disable=None) as bar:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            images = [_image(e, dataset) for e in batch]
            texts = [question(e) for e in batch] if task == "vqa" else ([prompt] * len(batch) if prompt else None)
            inputs = processor(images=images, text=texts, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            for example, text, answer in zip(batch, texts or [""] * len(batch),
                                              processor.batch_decode(generated, skip_special_tokens=True)):
                row = {"prompt": text, "predict": answer.strip(), "label": example.answer, **example.extra}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            bar.update(len(batch))
    partial.replace(out)
    return len(examples)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("family", choices=["blip"], help="baseline model family")
    parser.add_argument("--task", choices=list(MODEL_CLASSES), required=True)
    parser.add_argument("--model", required=True, help="hub id or local folder of a BLIP checkpoint")
    parser.add_argument("--dataset", required=True, help="ShareGPT JSONL file or dataset_info.json name")
    parser.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--prompt", help="caption: text the caption continues (e.g. 'a picture of')")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")


def run(args: argparse.Namespace) -> int:
    try:
        n = predict(args.task, args.model, args.dataset, args.out, args.batch_size, args.max_new_tokens,
                    args.limit, args.prompt, args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"vlmr baseline: {e}", file=sys.stderr)
        return 1
    print(f"{n} BLIP predictions written to {args.out}; score them with: vlmr eval {args.out} --task {args.task}")
    return 0
