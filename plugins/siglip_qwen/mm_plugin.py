"""LLaMA-Factory's llava mm plugin for the SigLIP+Qwen template, failing early and clearly on image-token errors.

LLaVA replaces each of the `image_seq_length` `<image>` tokens of an image by one projected patch feature, so
the token count of a sample must equal images x `image_seq_length`. LLaMA-Factory 0.9.5 breaks this silently
in one case and vaguely in another:
- a record whose `images` and `<image>` placeholders disagree raises "The number of images does not match
  ..." without the counts or the fix;
- `cutoff_len` shorter than a sample cuts its image tokens without a warning; the forward pass then fails
  with transformers' "Image features and image tokens do not match, tokens: 0, features: 2048" (elements,
  not tokens), which names neither the sample nor the cause.
`SiglipQwenPlugin` checks both (the second in the collator, on the token ids after truncation) and says which
sample and what to change. Registered as mm plugin "siglip_qwen" by the record in __init__.py.
"""

from __future__ import annotations

from typing import Any

from llamafactory.data.mm_plugin import LlavaPlugin
from llamafactory.extras.constants import IMAGE_PLACEHOLDER

_SNIPPET = 160  # characters of a sample quoted in an error


def _quote(text: str) -> str:
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


class SiglipQwenPlugin(LlavaPlugin):
    """`LlavaPlugin` + the two invariants above."""

    def _validate_messages(self, messages: list[dict[str, str]], images: list, videos: list, audios: list) -> None:
        placeholders = sum(message["content"].count(IMAGE_PLACEHOLDER) for message in messages)
        if placeholders != len(images):
            text = " | ".join(message["content"] for message in messages)
            raise ValueError(
                f"a record has {len(images)} image(s) but {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) in its "
                f"messages: {_quote(text)}. Each image needs exactly one {IMAGE_PLACEHOLDER} in a user turn, in the "
                f"order of `images`; fix the record (`vlmr validate DATASET` lists every such line)"
            )
        super()._validate_messages(messages, images, videos, audios)

    def get_mm_inputs(self, images: list, videos: list, audios: list, imglens: list[int], vidlens: list[int],
                      audlens: list[int], batch_ids: list[list[int]], processor: Any) -> dict[str, Any]:
        mm_inputs = super().get_mm_inputs(images, videos, audios, imglens, vidlens, audlens, batch_ids, processor)
        if "pixel_values" in mm_inputs and self.expand_mm_tokens:
            per_image = _image_seqlen(processor, mm_inputs["pixel_values"])
            for index, (ids, count) in enumerate(zip(batch_ids, imglens)):
                found = sum(token == processor.image_token_id for token in ids)
                if found != count * per_image:
                    text = processor.tokenizer.decode([t for t in ids if t != processor.image_token_id])
                    raise ValueError(
                        f"sample {index} of the batch has {found} {self.image_token} tokens for {count} image(s) of "
                        f"{per_image} tokens each: `cutoff_len` cut its image tokens (text: {_quote(text)}). Raise "
                        "`cutoff_len` in the recipe, or find and shorten such records with "
                        "`vlmr validate DATASET --recipe RECIPE` / `vlmr stats RECIPE`"
                    )
        return mm_inputs


def _image_seqlen(processor: Any, pixel_values: Any) -> int:
    """Tokens per image, as `LlavaPlugin.process_messages` expands `<image>`: patches (+ CLS, minus it if dropped)."""
    height, width = pixel_values.shape[-2:]  # (images, channels, height, width)
    seqlen = (height // processor.patch_size) * (width // processor.patch_size) + processor.num_additional_image_tokens
    return seqlen - (processor.vision_feature_select_strategy == "default")
