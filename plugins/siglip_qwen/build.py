"""Build a LLaVA-style SigLIP (or CLIP) + Qwen2.5 model as a standard transformers `LlavaForConditionalGeneration`.

The architecture follows LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning", 2023): a
pretrained vision tower, a two-layer MLP projector (Linear-GELU-Linear) and a pretrained decoder LM that reads
the projected patch features in place of `<image>` placeholder tokens. With SigLIP (Zhai et al., "Sigmoid Loss
for Language Image Pre-Training", 2023) the tower has no CLS token, so every patch feature of the last encoder
layer is kept (`vision_feature_select_strategy="full"`, `vision_feature_layer=-1`, as LLaVA-OneVision does);
with CLIP we keep LLaVA-1.5's choice (penultimate layer, CLS dropped: "default", -2).

The result is a plain checkpoint of classes that ship with transformers (config, model, `LlavaProcessor` with
the tower's own image processor and the LLM's tokenizer): it loads with `AutoModelForImageTextToText` /
`AutoProcessor` anywhere, and LLaMA-Factory trains it as its built-in composite model "llava" with the
`siglip_qwen` template (the record in `__init__.py`).

    vlmr build siglip-qwen --vision google/siglip-base-patch16-224 --llm Qwen/Qwen2.5-0.5B-Instruct \
        --out models/siglip-qwen2.5-0.5b
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vlmrecipes.plugins.architecture import ComposedConfig, PretrainedPart, StoredCheckpoint

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class TowerRecipe:
    """How LLaVA reads one family of vision towers.

    Attributes:
        feature_layer: index into the tower's `hidden_states` (embeddings output first) fed to the projector.
        select_strategy: "default" drops the first (CLS) token of each image, "full" keeps every token.
        additional_tokens: tokens the tower emits beyond the patches (CLIP's CLS), for the processor's count.
        drop_head: config switch that removes a pooling head LLaVA never uses (its weights would be dead).
    """

    feature_layer: int
    select_strategy: str
    additional_tokens: int
    drop_head: str | None = None


# model_type of the vision config -> how its features are taken
TOWERS: dict[str, TowerRecipe] = {
    # SigLIP's last layer feeds its attention-pooling head, not a CLS token: all patches of the last layer.
    "siglip_vision_model": TowerRecipe(-1, "full", 0, drop_head="vision_use_head"),
    # LLaVA-1.5: the penultimate CLIP layer generalises better than the last (tuned for the contrastive CLS).
    "clip_vision_model": TowerRecipe(-2, "default", 1),
}

# Prepended to the LLM's own chat template so that it also renders processor-style messages whose content is a
# list of parts ({"type": "image"} / {"type": "text", ...}): each list is flattened to one string with an
# `<image>` placeholder per image, in order (LLaMA-Factory's ShareGPT layout, "<image>question"). Messages with
# string content pass through untouched, so text-only chats render exactly as with the LLM alone.
_FLATTEN_IMAGE_PARTS = (
    "{%- set _flat = namespace(messages=[]) -%}"
    "{%- for _m in messages -%}"
    "{%- if _m['content'] is string or _m['content'] is none -%}"
    "{%- set _flat.messages = _flat.messages + [_m] -%}"
    "{%- else -%}"
    "{%- set _text = namespace(value='') -%}"
    "{%- for _part in _m['content'] -%}"
    "{%- if _part['type'] == 'image' or 'image' in _part or 'image_url' in _part -%}"
    "{%- set _text.value = _text.value + '" + IMAGE_TOKEN + "' -%}"
    "{%- elif 'text' in _part -%}"
    "{%- set _text.value = _text.value + _part['text'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set _flat.messages = _flat.messages + [{'role': _m['role'], 'content': _text.value}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = _flat.messages -%}"
)


def multimodal_chat_template(llm_template: str) -> str:
    """The LLM's chat template, made to accept image parts (see `_FLATTEN_IMAGE_PARTS`)."""
    return _FLATTEN_IMAGE_PARTS + llm_template


def _tower_config(config, vision: str):
    """The vision config in a tower checkpoint's config: a bare vision model, or the vision half of a CLIP/SigLIP
    pair."""
    config = getattr(config, "vision_config", config)
    if config.model_type not in TOWERS:
        raise ValueError(
            f"{vision}: vision model type {config.model_type!r} is not supported; use a SigLIP or CLIP checkpoint "
            f"(model types: {', '.join(TOWERS)})"
        )
    return config


def _vision_config(vision: str):
    """The vision config of a tower checkpoint (see `_tower_config`)."""
    from transformers import AutoConfig

    return _tower_config(AutoConfig.from_pretrained(vision), vision)


def _load_vision_tower(vision: str, config, recipe: TowerRecipe):
    """The pretrained tower as the `*VisionModel` class (from a pair checkpoint too), without the unused head."""
    from transformers import AutoModel

    if recipe.drop_head:
        setattr(config, recipe.drop_head, False)
    # A SiglipModel/CLIPModel checkpoint stores the tower under `vision_model.*`, as the *VisionModel does; the
    # text tower's weights are reported as unused and skipped.
    return AutoModel.from_pretrained(vision, config=config, dtype="float32")


def _add_image_token(tokenizer) -> int:
    """Add `<image>` as a special token (idempotent) and name it `tokenizer.image_token`; returns its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    # LlavaProcessor prefers `tokenizer.image_token` over its own argument (a VL tokenizer may name another)
    tokenizer.image_token = IMAGE_TOKEN
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def _check_image_processor(image_processor, vision_config, source: str) -> None:
    """The processor must resize to the tower's input size, or the number of image tokens would be wrong."""
    size = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    size = size or image_processor.size
    height = size.get("height", size.get("shortest_edge"))
    width = size.get("width", size.get("shortest_edge"))
    if (height, width) != (vision_config.image_size, vision_config.image_size):
        raise ValueError(
            f"{source}: the image processor outputs {height}x{width} images but the tower expects "
            f"{vision_config.image_size}x{vision_config.image_size}; fix its preprocessor_config.json"
        )


def llava_config(vision_config, text_config, image_token_id: int, feature_layer: int | None = None):
    """The LlavaConfig `build` writes for a tower config (a family of TOWERS) and an LM config.

    Also used without checkpoints: `compose` gives it the stored configs `vlmr realsize` builds the model from.
    """
    from transformers import LlavaConfig

    recipe = TOWERS[vision_config.model_type]
    vision = vision_config.to_dict()
    if recipe.drop_head:
        vision[recipe.drop_head] = False
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=patches + recipe.additional_tokens - (recipe.select_strategy == "default"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy=recipe.select_strategy,
        vision_feature_layer=recipe.feature_layer if feature_layer is None else feature_layer,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def build(vision: str | Path, llm: str | Path, out_dir: str | Path, seed: int = 0,
          feature_layer: int | None = None) -> Path:
    """Assemble, save and check the Llava checkpoint of `vision` + `llm` in `out_dir`; returns `out_dir`.

    Every weight of the tower and of the LM is copied from its checkpoint (strict loads: a missing or extra
    tensor fails); only the projector is new. `feature_layer` overrides the tower family's default layer.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vision, llm, out_dir = str(vision), str(llm), Path(out_dir)
    vision_config = _vision_config(vision)
    recipe = TOWERS[vision_config.model_type]
    tower = _load_vision_tower(vision, vision_config, recipe)
    image_processor = AutoImageProcessor.from_pretrained(vision)
    _check_image_processor(image_processor, vision_config, vision)

    tokenizer = AutoTokenizer.from_pretrained(llm)
    if not tokenizer.chat_template:
        raise ValueError(f"{llm}: the tokenizer has no chat template; use an instruct/chat LLM checkpoint")
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype="float32")
    save_dtype = AutoConfig.from_pretrained(llm).dtype or torch.float32
    image_token_id = _add_image_token(tokenizer)
    if len(tokenizer) > lm.config.vocab_size:
        # new rows start at the mean embedding (transformers' default): `<image>` never reaches the LM as an
        # embedding (its positions are overwritten by image features), the padding keeps matmuls aligned
        lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)

    config = llava_config(vision_config, lm.config, image_token_id, feature_layer)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(tower.state_dict(), strict=True)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    _init_projector(model.model.multi_modal_projector, lm.config.initializer_range, seed)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.to(save_dtype)
    model.generation_config = _generation_config(llm, lm, GenerationConfig)

    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=recipe.select_strategy,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=recipe.additional_tokens,
        chat_template=multimodal_chat_template(tokenizer.chat_template),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    check(out_dir)
    return out_dir


def _init_projector(projector, std: float, seed: int) -> None:
    """Small normal weights and zero bias (the LLM's `initializer_range`, as LLaVA/nanoVLM initialise it)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in (projector.linear_1, projector.linear_2):
            linear.weight.normal_(0.0, std, generator=generator)
            linear.bias.zero_()


def _generation_config(llm: str, lm, generation_config_class):
    """The LLM's generation config (its stop tokens and sampling defaults), or one derived from its config."""
    try:
        return generation_config_class.from_pretrained(llm)
    except OSError:
        return generation_config_class.from_model_config(lm.config)


def check(model_dir: str | Path) -> int:
    """Reload `model_dir` with Auto classes; the processor must emit as many image tokens as the model expects.

    Returns the number of image tokens per image. Raises ValueError naming the mismatch.
    """
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    size = config.vision_config.image_size
    inputs = processor(text=IMAGE_TOKEN, images=Image.new("RGB", (size + 7, size - 3)), return_tensors="pt")
    count = int((inputs["input_ids"] == config.image_token_id).sum())
    if count != config.image_seq_length or tuple(inputs["pixel_values"].shape[-2:]) != (size, size):
        raise ValueError(
            f"{model_dir}: the processor gives {count} image tokens and {tuple(inputs['pixel_values'].shape)} "
            f"pixels, the model expects {config.image_seq_length} tokens of {size}x{size} images"
        )
    return count


def _from_llm(parameter_name: str) -> bool:
    """Whether a parameter of the Llava model is one of the LLM's (its decoder and lm_head)."""
    return parameter_name.startswith(("model.language_model.", "lm_head."))


def compose(args: argparse.Namespace, stored: Callable[[str], StoredCheckpoint]) -> ComposedConfig:
    """The model `run(args)` would write, as its config: `llava_config` of the tower's and the LLM's stored configs."""
    llm = stored(args.llm)
    # `build` appends <image> to the LLM's tokenizer: its id is the tokenizer's size (no embedding resize needed
    # while that stays below vocab_size, the case of Qwen2.5)
    image_token_id = llm.tokenizer_size
    if image_token_id is None:
        raise ValueError(f"{args.llm}: its tokenizer's size is not stored; <image> takes that id")
    if image_token_id >= llm.config.vocab_size:
        raise ValueError(f"{args.llm}: <image> (id {image_token_id}) would resize the embeddings; not modelled here")
    vision_config = _tower_config(stored(args.vision).config, args.vision)
    return ComposedConfig(
        config=llava_config(vision_config, llm.config, image_token_id, args.vision_feature_layer),
        # the tower's checkpoint is checked whole: its published count is the pair's, text tower included
        parts=(PretrainedPart(args.vision, "{checkpoint} (SiglipModel pair, vision tower used)"),
               PretrainedPart(args.llm, "{checkpoint} (language model + lm_head inside Llava)", owns=_from_llm)),
        description=f"Llava: {args.vision} + {args.llm}",
        label=f"{Path(args.vision).name} + {Path(args.llm).name}",
        image_processor_of=None,  # a fixed-size tower: image_seq_length tokens per image
    )


# ------------------------------------------------------------------------------------------------------
# vlmr build siglip-qwen
# ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vision", required=True,
                        help="SigLIP or CLIP checkpoint (hub id or dir), e.g. google/siglip-base-patch16-224")
    parser.add_argument("--llm", required=True, help="Qwen2.5 chat LM (hub id or dir), e.g. Qwen/Qwen2.5-0.5B-Instruct")
    parser.add_argument("--out", required=True, type=Path, help="output directory of the Llava checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the projector's initialisation")
    parser.add_argument("--vision-feature-layer", type=int,
                        help="tower layer fed to the projector (default: -1 for SigLIP, -2 for CLIP)")


def run(args: argparse.Namespace) -> int:
    out = build(args.vision, args.llm, args.out, args.seed, args.vision_feature_layer)
    print(f"Llava checkpoint ({args.vision} + {args.llm}) written to {out}")
    return 0
