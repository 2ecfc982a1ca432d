"""Where a recipe's model comes from, decided before anything waits on the network.

`model_name_or_path` is a local folder, or a Hugging Face Hub id whose files are either in the local cache or must be
downloaded. Loading a Hub id without network access makes transformers retry for about a minute and end in a long
traceback ("Failed to load tokenizer"); `require_model` answers in well under a second instead, with one line that
names the fix: point the recipe at a local copy (`model_name_or_path=/path/to/model`), or download it once.
`HF_HUB_OFFLINE=1` is respected: the Hub is not contacted at all, only the cache is looked at.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

PROBE_SECONDS = 5  # one request to the Hub API; a reachable Hub answers in well under a second


class ModelUnavailable(RuntimeError):
    """The recipe's model can be neither found locally nor downloaded now; the message names the fix."""


def _fix(model: str) -> str:
    return (f"point the recipe at a local copy (`model_name_or_path=/path/to/model` after the recipe) or download it "
            f"once with network access (`hf download {model}`)")


def require_model(model: str) -> str:
    """'local', 'cached' or 'hub' (downloadable now) for `model_name_or_path`; ModelUnavailable when it is none.

    A Hub id counts as cached when its `config.json` is in the Hugging Face cache: transformers then loads it with
    `HF_HUB_OFFLINE=1` as well.
    """
    if Path(model).expanduser().is_dir():
        return "local"
    if model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:
        raise ModelUnavailable(f"model_name_or_path {model}: no such folder; fix the path "
                               "(`model_name_or_path=/path/to/model` after the recipe)")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return "cached"
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                               + _fix(model))
    request = urllib.request.Request(f"{constants.ENDPOINT}/api/models/{model}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ModelUnavailable(f"model {model} is neither a folder nor a model on {constants.ENDPOINT}: fix "
                                   "`model_name_or_path`, or " + _fix(model)) from exc
        # any other answer (401/403 for a gated or private model): the Hub is reachable, transformers logs in
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelUnavailable(f"model {model} is not in the Hugging Face cache and {constants.ENDPOINT} cannot be "
                               f"reached ({reason}): " + _fix(model)) from exc
    return "hub"
