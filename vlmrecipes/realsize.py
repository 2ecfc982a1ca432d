"""Real-size models without a GPU: the stored config.json of every checkpoint a recipe names, built on the meta device.

`vlmrecipes/model_configs/<hub id, '/' as '--'>.json` holds each checkpoint's config.json (its `_source` key says
where it was read), plus `_preprocessor`, the image-processor facts the token count needs.
`published_counts.json` beside them holds the published parameter counts they are checked against.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
PUBLISHED_COUNTS = CONFIG_DIR / "published_counts.json"
# keys of the stored files that are ours, not config.json's
_METADATA_KEYS = ("_source", "_preprocessor")


def config_path(model_id: str) -> Path:
    return CONFIG_DIR / f"{model_id.replace('/', '--')}.json"


@lru_cache(maxsize=None)
def _stored(model_id: str) -> dict:
    path = config_path(model_id)
    if not path.exists():
        known = sorted(p.stem.replace("--", "/") for p in CONFIG_DIR.glob("*--*.json"))
        raise KeyError(f"no stored config for {model_id!r} (looked for {path}); stored: {', '.join(known)}. "
                       f"Add the checkpoint's config.json there with a `_source` key saying where it was read.")
    with open(path) as f:
        return json.load(f)


def stored_config(model_id: str) -> dict:
    """The checkpoint's config.json as stored (without our `_source` / `_preprocessor` keys); a fresh copy."""
    return {k: v for k, v in json.loads(json.dumps(_stored(model_id))).items() if k not in _METADATA_KEYS}


def preprocessor_facts(model_id: str) -> dict:
    """patch_size / merge_size / temporal_patch_size / min_pixels / max_pixels (Qwen) or image_size (SigLIP)."""
    facts = dict(_stored(model_id).get("_preprocessor", {}))
    facts.pop("_source", None)
    return facts


def config_source(model_id: str) -> str:
    return _stored(model_id)["_source"]


def published_count(model_id: str) -> dict:
    """{'parameters': int, 'published_as': str, 'source': str} for a stored checkpoint."""
    with open(PUBLISHED_COUNTS) as f:
        table = json.load(f)
    if model_id not in table:
        raise KeyError(f"{PUBLISHED_COUNTS}: no published parameter count for {model_id!r}; add one with its source")
    return table[model_id]


def pretrained_config(model_id: str):
    """The transformers config object of a stored checkpoint (the class its `model_type` names)."""
    from transformers import AutoConfig

    values = stored_config(model_id)
    return AutoConfig.for_model(**values)


def build_on_meta(config, auto_class=None):
    """Instantiate `config`'s model on the meta device: real shapes, no memory, no weights.

    `auto_class` (a transformers Auto class) defaults to AutoModelForImageTextToText, what LLaMA-Factory loads VLMs
    with.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return (auto_class or AutoModelForImageTextToText).from_config(config)


def count_parameters(module, trainable_only: bool = False) -> int:
    """Distinct parameters (tied weights counted once, as a checkpoint stores them)."""
    seen, total = set(), 0
    for parameter in module.parameters():
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total
