"""COCO 2017 captions (`annotations/captions_<split>2017.json`, images in `<split>2017/`).

Raw format (cocodataset.org, "Data format"): one JSON object with an `images` array and an `annotations`
array, about five captions per image:

    {"images": [{"id": 9, "file_name": "000000000009.jpg", "height": 480, "width": 640}],
     "annotations": [{"id": 48, "image_id": 9, "caption": "A plate of food with broccoli."}]}

Output: one record per caption, prompt chosen per annotation with the seed from `PROMPTS`; `image_id` is kept
for the evaluator (it groups the reference captions of an image). Both arrays are streamed; only the
image id -> file name map (one short string per image) is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import EMPTY_TURN, MALFORMED, ImageRef, Record, Sample, Skipped, chat, record_rng

DEFAULT_NAME = "coco_captions"
PROMPTS = (
    "Describe this image in one sentence.",
    "Write a short caption for this image.",
    "What does this image show? Answer in one sentence.",
)


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    # captions_train2017.json -> train2017/ beside the annotations/ folder
    images_dir = images or input.parent.parent / input.stem.removeprefix("captions_")
    files: dict[int, str] = {}
    for _, image in iter_json_array(input, "images.item"):
        if (isinstance(image, dict) and isinstance(image.get("file_name"), str)
                and isinstance(image.get("id"), (int, str))):
            files[image["id"]] = image["file_name"]
    for index, ann in iter_json_array(input, "annotations.item"):
        if not isinstance(ann, dict):
            yield Skipped(str(index), MALFORMED, "annotation must be an object {id, image_id, caption}")
            continue
        record_id = str(ann.get("id", index))
        caption = " ".join(str(ann.get("caption") or "").split())  # raw captions carry newlines and double spaces
        image_id = ann.get("image_id")
        if not isinstance(image_id, (int, str)) or image_id not in files:
            yield Skipped(record_id, MALFORMED,
                          f"image_id {ann.get('image_id')!r} is not in `images`: wrong annotation file?")
        elif not caption:
            yield Skipped(record_id, EMPTY_TURN, "empty caption")
        else:
            name = files[ann["image_id"]]
            prompt = record_rng(seed, record_id).choice(PROMPTS)
            yield Sample(record_id, chat(prompt, caption), [ImageRef(images_dir / name, name)],
                         {"image_id": ann["image_id"]})
