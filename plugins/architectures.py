"""The architectures our recipes train: one record each (`architecture.Architecture`), listed once here.

A new architecture is a folder `plugins/<name>/` whose `__init__.py` defines its `ARCHITECTURE` record, plus its
entry below (the import and the tuple) and its package in pyproject.toml's `packages` (a test names it if
missing). The plugin's registrations (`registry`), `vlmr tiny`, the recipes' tiny twins (`vlmrecipes.recipes`),
`vlmr build` and, through its table, `vlmr realsize` derive their tables from `ARCHITECTURES`.
"""

from __future__ import annotations

from vlmrecipes.plugins import multiway, qwen, siglip_qwen
from vlmrecipes.plugins.architecture import Architecture

ARCHITECTURES: tuple[Architecture, ...] = (*qwen.ARCHITECTURES, siglip_qwen.ARCHITECTURE, multiway.ARCHITECTURE)
