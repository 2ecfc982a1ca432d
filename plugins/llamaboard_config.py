"""Fix: LlamaBoard (LLaMA-Factory 0.9.5) sometimes keeps the previous model's path when a model is picked.

Picking a model in the "Model name" dropdown sends two requests at once, each run in its own server thread:
`save_config` (remembers the last model) and `get_model_info` (fills "Model path" and "Chat template").
`save_config` rewrites `llamaboard_cache/user_config.yaml` in place (truncate, then write), so the
`load_config` of the other request can read an empty file; `safe_load` then returns None and
`get_model_info` raises `TypeError: 'NoneType' object is not subscriptable`. The form keeps the previous
model's path, and a user who presses Start trains the wrong model. tests/test_webui.py hit it in 1 run of 3
on a loaded 2-core machine. A crash in the middle of that write leaves an empty file that breaks every later
pick, until the user deletes it by hand.

Saves now write a temporary file beside the config and rename it over the old one (a reader sees the old or
the new file, never a partial one), under a lock so that two saves of one server do not drop each other's
keys; a config that is empty or not a mapping reads as the defaults.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading

# What LlamaBoard itself starts from when there is no config file.
DEFAULTS = {"lang": None, "hub_name": None, "last_model": None, "path_dict": {}, "cache_dir": None}


def patch_user_config(common) -> None:
    """Replace `load_config` and `save_config` of `llamafactory.webui.common` (imported by name elsewhere)."""
    original_load = common.load_config
    lock = threading.Lock()

    @functools.wraps(original_load)
    def load_config() -> dict:
        config = original_load()
        if not isinstance(config, dict):  # an empty or garbled file
            config = {}
        merged = {**DEFAULTS, "path_dict": {}, **config}
        if not isinstance(merged["path_dict"], dict):
            merged["path_dict"] = {}
        return merged

    @functools.wraps(common.save_config)
    def save_config(lang: str, hub_name: str | None = None, model_name: str | None = None,
                    model_path: str | None = None) -> None:
        with lock:
            config = load_config()
            config["lang"] = lang or config["lang"]
            if hub_name:
                config["hub_name"] = hub_name
            if model_name:
                config["last_model"] = model_name
                if model_path:
                    config["path_dict"][model_name] = model_path
            path = common._get_config_path()
            folder = os.path.dirname(path) or "."
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".user_config.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    common.safe_dump(config, f)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise

    common.load_config = load_config
    common.save_config = save_config
