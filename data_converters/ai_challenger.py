"""AI Challenger 2017 image captioning (Chinese): `caption_train_annotations_20170902.json` and images in
`caption_train_images_20170902/`.

Raw format (the challenge's release): one JSON array, five Chinese captions per image:

    {"url": "http://img5.cache.netease.com/photo/0005/2013-09-25/99LA1FC60B6P0005.jpg",
     "image_id": "8f00f3d0f1008e085ab660e70dffced16a8259f6.jpg",
     "caption": ["\\n一个穿着白色上衣的女人在草地上奔跑", "草地上有一个女人在奔跑。", ...]}

Output: one record per image with one caption and one prompt template chosen by `record_rng(seed, image_id)`
(independent of record order); captions are cleaned (whitespace and newlines removed, which Chinese does not
use between words, and one final "。"); all five cleaned captions are kept in `references` for BLEU/CIDEr.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import EMPTY_TURN, MALFORMED, ImageRef, Record, Sample, Skipped, chat, record_rng

DEFAULT_NAME = "ai_challenger_caption"
PROMPTS = ("请用一句话描述这张图片。", "这张图片里有什么？请用一句话回答。", "请为这张图片写一句简短的中文描述。")


def clean_caption(text: str) -> str:
    text = "".join(str(text).split()).rstrip("。")
    return text + "。" if text else ""


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    images_dir = images or input.parent / input.stem.replace("_annotations_", "_images_")
    for index, raw in iter_json_array(input):
        if not isinstance(raw, dict) or not isinstance(raw.get("image_id"), str) \
                or not isinstance(raw.get("caption"), list):
            yield Skipped(str(index), MALFORMED, "expected {image_id: str, caption: [str, ...]}")
            continue
        record_id = raw["image_id"]
        captions = [c for c in (clean_caption(c) for c in raw["caption"]) if c]
        if not captions:
            yield Skipped(record_id, EMPTY_TURN, "all captions are empty")
            continue
        rng = record_rng(seed, record_id)
        yield Sample(record_id, chat(rng.choice(PROMPTS), rng.choice(captions)),
                     [ImageRef(images_dir / record_id, record_id)], {"references": captions})
