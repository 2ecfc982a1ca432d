"""The GPU harness's inputs: a random-weight checkpoint at real size, and synthetic ShareGPT data of a recipe's shape.

Checkpoint (`build_checkpoint`). The weights' values change neither speed nor memory, so the model is the
recipe's real architecture at real size (`vlmrecipes.realsize`: the stored config.json of the checkpoint the
recipe names, or the config `vlmr build` would give a custom architecture) with random weights, created directly
on the device in bf16 (the checkpoints' dtype) and saved with safetensors. Two parts cannot come from the hub:
- the tokenizer: the recipe's tiny twin's (`vlmr tiny`, cached as `vlmr smoke` caches it) is used. It is a
  byte-level BPE of a few hundred tokens followed by every special token of the family, in the family's real
  order. The embedding matrix keeps the real `vocab_size` rows (same memory and lm_head FLOPs), and every
  special-token id of the real config (those from 151643 = `<|endoftext|>`, the size of Qwen's BPE, on) is
  remapped to the twin's id of the same token; the result is checked on the image token. Text is then made of
  single-token words (`synthesize_data`), so prompt and answer lengths are exact in this tokenizer.
- the image processor: the twin's keeps its class and is given the real checkpoint's patch/merge sizes and
  pixel limits (`realsize.preprocessor_facts`), or the tower's image size for a fixed-size (SigLIP) tower.
Qwen2.5-Omni is saved without its talker (`enable_audio_output: false`): LLaMA-Factory trains the Thinker only,
so the talker would only cost loading time.

Data (`synthesize_data`): for each dataset of the recipe, images and turns shaped like our converters' output of
that dataset (`DATASET_SHAPES`), registered in a dataset_info.json of their own.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from vlmrecipes import realsize, recipes, smoke
from vlmrecipes.data_converters.datasets import entry_for, register
from vlmrecipes.plugins.qwen.tiny import QWEN2_5_OMNI_SPECIAL, QWEN2_5_SPECIAL, QWEN3_SPECIAL

# <|endoftext|>: the first special token of every Qwen2 / 2.5 / 3 tokenizer, after 151,643 byte-level BPE tokens
QWEN_FIRST_SPECIAL_ID = 151643
# files of the twin that describe the model rather than the text/image pipeline
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")


# ------------------------------------------------------------------------------------------------------
# Checkpoint
# ------------------------------------------------------------------------------------------------------

def model_key(recipe_path: Path, tiny: bool) -> str:
    """What two recipes share when they train the same model (a hub id, or the recipe's model path)."""
    recipe = recipes.load(recipe_path)
    kind = recipes.tiny_kind(recipe, recipe_path)
    model = str(recipe["model_name_or_path"])
    return f"tiny-{kind}" if tiny else f"{kind}-{model.replace('/', '--')}"


def _family_order(tokenizer) -> list[str]:
    """The twin's special tokens in the real tokenizer's id order (tokens the family list lacks, e.g. the
    `<image>` that `vlmr build siglip-qwen` appends, follow in the twin's own order)."""
    added = sorted(tokenizer.get_added_vocab().items(), key=lambda item: item[1])
    names = {name for name, _ in added}
    family = next(order for order in (QWEN2_5_OMNI_SPECIAL, QWEN3_SPECIAL, QWEN2_5_SPECIAL) if set(order) <= names)
    return family + [name for name, _ in added if name not in family]


def remap_special_ids(config: dict, tokenizer) -> dict:
    """`config` with every real special-token id (>= 151643) replaced by the twin tokenizer's id of that token."""
    order = _family_order(tokenizer)

    def remap(node):
        if isinstance(node, dict):
            return {key: remap_value(key, value) for key, value in node.items()}
        return node

    def remap_value(key, value):
        if isinstance(value, dict):
            return remap(value)
        if not str(key).endswith(("token_id", "token_index", "token_ids")):
            return value
        if isinstance(value, list):
            return [remap_value(key, v) for v in value]
        if isinstance(value, int) and QWEN_FIRST_SPECIAL_ID <= value < QWEN_FIRST_SPECIAL_ID + len(order):
            return tokenizer.convert_tokens_to_ids(order[value - QWEN_FIRST_SPECIAL_ID])
        return value  # regular-vocabulary ids (Omni's user_token_id) and the talker's codec ids: unused here

    return remap(config)


def _image_token_id(config) -> int | None:
    for holder in (config, getattr(config, "thinker_config", None)):
        for name in ("image_token_id", "image_token_index"):
            value = getattr(holder, name, None) if holder is not None else None
            if value is not None:
                return value
    return None


def _real_image_geometry(processor, built: realsize.BuiltModel) -> None:
    """Give the twin's processor the real checkpoint's image geometry (in place)."""
    image_processor = processor.image_processor
    if built.image_processor_of is None:  # Llava: a fixed-size tower; the processor counts its patches
        vision = built.model.config.vision_config
        image_processor.size = {"height": vision.image_size, "width": vision.image_size}
        processor.patch_size = vision.patch_size
        return
    facts = realsize.preprocessor_facts(built.image_processor_of)
    for name in ("patch_size", "merge_size", "temporal_patch_size"):
        setattr(image_processor, name, facts[name])
    image_processor.size = {"shortest_edge": facts["min_pixels"], "longest_edge": facts["max_pixels"]}


def checkpoint_parts(recipe_path: Path):
    """(real-size config with the twin's token ids, the twin's processor with the real image geometry, the
    realsize model description, the twin's folder) for a recipe; nothing is allocated."""
    from transformers import AutoConfig, AutoProcessor

    recipe = recipes.load(recipe_path)
    twin = smoke.tiny_model(recipes.tiny_kind(recipe, recipe_path))
    processor = AutoProcessor.from_pretrained(twin)
    tokenizer = processor.tokenizer
    built = realsize.build_recipe_model(recipe_path, recipe)
    model_id = str(recipe["model_name_or_path"])
    config_dict = realsize.stored_config(model_id) if realsize.is_stored(model_id) else built.model.config.to_dict()
    if "thinker_config" in config_dict:
        config_dict["enable_audio_output"] = False
    config = AutoConfig.for_model(**remap_special_ids(config_dict, tokenizer))
    image_token = getattr(processor, "image_token", None) or "<image>"
    if _image_token_id(config) != tokenizer.convert_tokens_to_ids(image_token):
        raise RuntimeError(f"{recipe_path}: the remapped image token id {_image_token_id(config)} is not the twin "
                           f"tokenizer's {image_token!r} ({tokenizer.convert_tokens_to_ids(image_token)})")
    _real_image_geometry(processor, built)
    return config, processor, built, twin


def build_checkpoint(recipe_path: Path, out: Path, device: str) -> dict:
    """Write the recipe's real-size random-weight model to `out`; returns facts about it."""
    import torch

    config, processor, built, twin = checkpoint_parts(recipe_path)
    # bf16 as the real checkpoints ship; fp32 on the CPU, where the runs train without bf16 (as `vlmr smoke`)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = realsize._load_class(config).from_config(config, dtype=dtype)
    out.mkdir(parents=True, exist_ok=True)
    for path in twin.iterdir():
        if path.is_file() and path.name not in _MODEL_FILES and not path.name.startswith("."):
            shutil.copy2(path, out / path.name)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"path": str(out), "model": built.description, "class": type(model).__name__,
            "parameters": realsize.count_parameters(model), "tokenizer": f"tiny twin of {twin.name}, "
            f"{len(processor.tokenizer)} tokens, embeddings at the real vocab_size"}


# ------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """One dataset's samples as our converter writes them: image size and mode, turn lengths in tokens."""

    width: int
    height: int
    mode: str  # PIL mode: "L" for CT / FER2013 greys, "RGB" otherwise
    prompt_tokens: int
    answer_tokens: int
    source: str  # where the numbers come from


# Keyed by the registered dataset name without its split (`vqav2_train` -> `vqav2`).
DATASET_SHAPES = {
    "medtrinity_ct": Shape(512, 512, "L", 8, 150, "512x512 CT slices; 'Describe this medical image in detail.' "
                                                  "and ~150-token captions (recipes/medct_lora.yaml)"),
    "vqa_rad": Shape(512, 512, "L", 12, 3, "radiology slices; short questions, closed/short answers"),
    "slake": Shape(512, 512, "L", 12, 3, "radiology slices; short questions, closed/short answers"),
    "affectnet": Shape(224, 224, "RGB", 30, 1, "faces cropped to ~224 px; CLASSIFY_PROMPT over 8 classes, "
                                              "one-word label (data_converters/tasks.py)"),
    "fer2013": Shape(48, 48, "L", 30, 1, "48x48 grey faces; CLASSIFY_PROMPT over 7 classes, one-word label"),
    "vqav2": Shape(640, 480, "RGB", 10, 2, "COCO images (640x480 typical); short question, 1-3 word answer"),
    "coco_captions": Shape(640, 480, "RGB", 10, 14, "COCO images; caption prompt, ~11-word captions"),
    "llava_instruct": Shape(640, 480, "RGB", 16, 120, "COCO images; LLaVA-Instruct turns, ~120-token answers"),
    "llava_cc3m_pretrain": Shape(400, 400, "RGB", 8, 14, "CC3M images; caption prompt, short captions"),
    "minimind_v_sft": Shape(400, 400, "RGB", 16, 80, "COCO-like images; Chinese instruction turns"),
    "chinese_llava_instruct": Shape(640, 480, "RGB", 16, 120, "COCO images; Chinese LLaVA-Instruct turns"),
}
DISTINCT_IMAGES = 8  # per dataset, cycled: the loader decodes each sample's file all the same


def dataset_shape(name: str) -> Shape:
    for key, shape in DATASET_SHAPES.items():
        if name == key or name.startswith(key + "_"):
            return shape
    raise ValueError(f"dataset {name!r} has no synthetic shape; add its converter's image size and turn lengths "
                     f"to DATASET_SHAPES in {__file__}")


def single_token_words(tokenizer) -> list[str]:
    """Words that the tokenizer encodes, after a space, as exactly one token."""
    words = []
    for token in tokenizer.get_vocab():
        word = tokenizer.convert_tokens_to_string([token]).strip()
        if word.isalpha() and word.isascii() and len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1:
            words.append(word)
    if len(words) < 10:
        raise RuntimeError(f"the tokenizer has only {len(words)} single-token words; cannot shape synthetic text")
    return sorted(words)


def _text(rng: random.Random, words: list[str], tokens: int) -> str:
    return " " + " ".join(rng.choice(words) for _ in range(tokens))


def synthesize_data(recipe_path: Path, tokenizer, out: Path, samples: int, seed: int = 0) -> dict:
    """Write `samples` records (split evenly) for each dataset of the recipe; returns {dataset name: shape}."""
    import numpy as np
    from PIL import Image

    recipe = recipes.load(recipe_path)
    names = [d.strip() for d in str(recipe["dataset"]).split(",") if d.strip()]
    words = single_token_words(tokenizer)
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    shapes = {}
    for name in names:
        shape = dataset_shape(name)
        folder = out / name
        (folder / "images").mkdir(parents=True, exist_ok=True)
        channels = 1 if shape.mode == "L" else 3
        images = []
        for i in range(DISTINCT_IMAGES):
            pixels = generator.integers(0, 256, (shape.height, shape.width, channels), dtype=np.uint8)
            path = folder / "images" / f"{i}.png"
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, shape.mode).save(path)
            images.append(f"{name}/images/{i}.png")
        with open(folder / "train.jsonl", "w") as f:
            for i in range(max(1, samples // len(names))):
                record = {"messages": [{"role": "user", "content": "<image>" + _text(rng, words, shape.prompt_tokens)},
                                       {"role": "assistant", "content": _text(rng, words, shape.answer_tokens)}],
                          "images": [images[i % DISTINCT_IMAGES]]}
                f.write(json.dumps(record) + "\n")
        register(out, name, entry_for(folder / "train.jsonl", out))
        shapes[name] = shape.__dict__
    return shapes


def main(argv: list[str] | None = None) -> int:
    """`python synth.py checkpoint RECIPE OUT --device cuda`: run by run.py in a child process, so the GPU memory
    the model took is returned before training starts."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("what", choices=["checkpoint"])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    facts = build_checkpoint(args.recipe, args.out, args.device)
    (args.out / "harness_checkpoint.json").write_text(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
