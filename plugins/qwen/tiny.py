"""Tiny random-weight twins of the Qwen vision-language families our recipes train (and of the Qwen2.5 LM
that the SigLIP+Qwen twin is assembled from).

Each builder keeps the real architecture class (what LLaMA-Factory loads for the real checkpoint), shrinks
every width and depth, and saves next to the weights a byte-level BPE tokenizer trained here with every
special token of the family (so token ids such as `image_token_id` are real entries of the vocabulary), the
family's chat template, and the family's processor. A model is ~1-3 MB and identical for a given seed.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"  # as each family's tokenizer_config.json ships it

# Special tokens of the Qwen2.5 / Qwen2.5-VL tokenizer (in their real order after the BPE vocabulary).
QWEN2_5_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
QWEN3_SPECIAL = QWEN2_5_SPECIAL + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
# Qwen2.5-Omni renames the vision/audio slots (<|IMAGE|>, <|audio_bos|>, ...).
QWEN2_5_OMNI_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>",
    "<|IMAGE|>", "<|VIDEO|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]

# Enough text for a BPE that splits our demo prompts/answers and common task words into few tokens.
_CORPUS = [
    "You are a helpful assistant.", "What color is the shape?", "What shape is in the image?",
    "red green blue yellow purple orange white black gray circle square triangle star",
    "Answer with one word.", "Describe this CT slice.", "Which emotion does this face show?",
    "neutral happy sad surprise fear disgust anger contempt yes no normal abnormal left right",
    "lung liver brain bone kidney heart chest abdomen axial computed tomography scan lesion nodule",
    "a photo of a person a dog a cat on the table in the street 0 1 2 3 4 5 6 7 8 9",
    "The image shows", "Provide a brief description of the given image.", "图片 描述 这是 一个",
]


def train_tokenizer(special_tokens: list[str], named_tokens: dict[str, str] | None = None, vocab_size: int = 400):
    """Byte-level BPE trained on `_CORPUS` (deterministic), wrapped as the Qwen2 tokenizer class.

    `named_tokens` become tokenizer attributes (e.g. `tokenizer.image_token`), which some processors read.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    merges = [tuple(pair) for pair in json.loads(tok.to_str())["model"]["merges"]]
    # Qwen2Tokenizer rebuilds the pipeline around vocab + merges with Qwen's own pre-tokenizer regex.
    qwen = Qwen2Tokenizer(
        vocab=tok.get_vocab(), merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", add_prefix_space=False, extra_special_tokens=named_tokens or {},
    )
    qwen.add_special_tokens({"additional_special_tokens": special_tokens})
    return qwen


def chat_template(family: str) -> str:
    """`chat_templates/<family>.jinja`: qwen2_5 (the text LM), qwen2_5_vl, qwen3_vl, qwen2_5_omni."""
    return (CHAT_TEMPLATES / f"{family}.jinja").read_text()


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _vocab_size(tokenizer) -> int:
    return (len(tokenizer) + 63) // 64 * 64  # padded like real checkpoints (embedding rows > vocabulary)


def _tiny_text(tokenizer, **overrides) -> dict:
    """A 2-layer decoder; head_dim 16 so M-RoPE's (t, h, w) sections sum to head_dim / 2 = 8."""
    cfg = dict(
        vocab_size=_vocab_size(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return cfg


def _save(model, tokenizer, processor, out_dir: Path, template: str) -> Path:
    model.generation_config.eos_token_id = _ids(tokenizer, "<|im_end|>", "<|endoftext|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.chat_template = processor.chat_template = chat_template(template)
    processor.save_pretrained(out_dir)
    return out_dir


def _qwen2_vl_processors(tokenizer, patch_size: int, video_cls):
    """Image/video processors with small pixel budgets: a 56x56 image -> (56/14)^2 / 2^2 = 4 image tokens."""
    from transformers import Qwen2VLImageProcessor

    merge = 2
    budget = dict(min_pixels=(patch_size * merge) ** 2, max_pixels=(patch_size * merge * 8) ** 2)
    image = Qwen2VLImageProcessor(patch_size=patch_size, merge_size=merge, temporal_patch_size=2, **budget)
    video = video_cls(patch_size=patch_size, merge_size=merge, temporal_patch_size=2,
                      size={"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]})
    return image, video


_QWEN2_5_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                       fullatt_block_indexes=[1])


def _build_qwen_vl(out_dir: Path, seed: int, classes: tuple, special: list[str], patch_size: int, text: dict,
                   vision: dict, template: str) -> Path:
    """Shared by the Qwen2.5-VL and Qwen3-VL twins: tokenizer -> config -> seeded model -> processor -> save.

    `classes` is (config, model, processor, video processor) of the family.
    """
    import torch

    config_cls, model_cls, processor_cls, video_cls = classes
    tokenizer = train_tokenizer(special)
    image_id, video_id, start_id, end_id = _ids(
        tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    config = config_cls(
        text_config=_tiny_text(tokenizer, **text), vision_config=vision, image_token_id=image_id,
        video_token_id=video_id, vision_start_token_id=start_id, vision_end_token_id=end_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    image, video = _qwen2_vl_processors(tokenizer, patch_size, video_cls)
    processor = processor_cls(image_processor=image, tokenizer=tokenizer, video_processor=video)
    return _save(model, tokenizer, processor, out_dir, template)


def build_qwen2_5_vl(out_dir: Path, seed: int = 0, text: dict | None = None, vision: dict | None = None) -> Path:
    """Qwen2_5_VLForConditionalGeneration (the class of Qwen/Qwen2.5-VL-*-Instruct)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    classes = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor)
    return _build_qwen_vl(out_dir, seed, classes, QWEN2_5_SPECIAL, 14, text or {},
                          {**_QWEN2_5_VISION, **(vision or {})}, "qwen2_5_vl")


def build_qwen2_5_vl_demo(out_dir: Path, seed: int = 0) -> Path:
    """The `vlmr demo` model: the tiny twin at 2x width (~0.7M parameters), full attention in the ViT."""
    return build_qwen2_5_vl(
        out_dir, seed,
        text=dict(hidden_size=128, intermediate_size=256,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
        vision=dict(hidden_size=64, intermediate_size=128, out_hidden_size=128, window_size=112,
                    fullatt_block_indexes=[0, 1]),
    )


def build_qwen3_vl(out_dir: Path, seed: int = 0) -> Path:
    """Qwen3VLForConditionalGeneration (Qwen/Qwen3-VL-*-Instruct and -Thinking): 16 px patches, DeepStack."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    classes = (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)
    # Qwen3-VL interleaves the (t, h, w) rotary sections
    text = dict(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                              "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                  deepstack_visual_indexes=[0])
    return _build_qwen_vl(out_dir, seed, classes, QWEN3_SPECIAL, 16, text, vision, "qwen3_vl")


def build_qwen2_5_omni(out_dir: Path, seed: int = 0) -> Path:
    """Qwen2_5OmniForConditionalGeneration without the talker (LLaMA-Factory trains its `.thinker`)."""
    import torch
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = train_tokenizer(QWEN2_5_OMNI_SPECIAL, {
        "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    })
    audio_id, audio_bos, audio_eos, image_id, video_id, vision_bos, vision_eos = _ids(
        tokenizer, "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>",
        "<|vision_eos|>",
    )
    thinker = dict(
        text_config=_tiny_text(tokenizer),
        vision_config=_QWEN2_5_VISION,
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=64, max_source_positions=1500, n_window=100),
        audio_token_index=audio_id, image_token_index=image_id, video_token_index=video_id,
        audio_start_token_id=audio_bos, audio_end_token_id=audio_eos,
        # not declared by the config class but read by the thinker's M-RoPE index (as in the real config.json)
        vision_start_token_id=vision_bos, vision_end_token_id=vision_eos,
        user_token_id=tokenizer.encode("user")[0],  # the id after <|im_start|> of a user turn
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config)
    image, video = _qwen2_vl_processors(tokenizer, 14, Qwen2VLVideoProcessor)
    processor = Qwen2_5OmniProcessor(
        image_processor=image, video_processor=video, tokenizer=tokenizer,
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
    )
    _save(model, tokenizer, processor, out_dir, "qwen2_5_omni")
    # from_pretrained of the Omni class always loads the talker's speaker table; the real checkpoint ships
    # one per voice (conditioning vector, reference mel, talker BOS). Ours is tiny and unused (no talker).
    speakers = {name: {"cond": torch.zeros(8), "ref_mel": torch.zeros(4, 8), "bos_token": 0}
                for name in ("Chelsie", "Ethan")}
    torch.save(speakers, out_dir / "spk_dict.pt")
    return out_dir


def build_qwen2_lm(out_dir: Path, seed: int = 0) -> Path:
    """A 2-layer random Qwen2 LM (tied embeddings, as Qwen2.5-0.5B-Instruct) with a local BPE tokenizer and
    Qwen2.5's ChatML (the LM of the SigLIP+Qwen twin).

    Its vocabulary is exactly the tokenizer's, so adding `<image>` exercises the embedding resize.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(QWEN2_5_SPECIAL)
    tokenizer.chat_template = chat_template("qwen2_5")
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=end, pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [end, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = pad
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
