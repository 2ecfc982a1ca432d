"""The record of one model architecture our recipes train, kept in the architecture's own folder.

Everything the rest of vlm-recipes needs to know about an architecture is in its record: what the plugin
registers with LLaMA-Factory and transformers (templates, multimodal plugins, LlamaBoard entries, composite-model
keys, Auto classes), its tiny twin, its `vlmr build` subcommand and the recipe templates it serves. The records
are listed once, in `plugins/architectures.py`; `registry`, `vlmr tiny`, `vlmrecipes.recipes` and `vlmr build`
derive their tables from that list.

A record holds small values and functions. Whatever imports LLaMA-Factory or a model class is behind a loader
(`mm_plugins`, `AutoClasses.load`): the registry reads the records while transformers is still importing itself
(its Auto modules are imported from the middle of its own model files), when those imports would fail.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# (out_dir, seed) -> out_dir: a tiny random-weight model of the real classes, identical for a seed
TinyBuilder = Callable[[Path, int], Path]


@dataclass(frozen=True)
class AutoClasses:
    """A model type we define, registered by class name with transformers' AutoConfig and AutoModelForImageTextToText.

    Attributes:
        model_type: the config's `model_type`.
        config_class: name of the config class.
        model_class: name of the model class.
        load: imports the two classes and returns (config class, model class); called on first use of either.
    """

    model_type: str
    config_class: str
    model_class: str
    load: Callable[[], tuple[type, type]]


@dataclass(frozen=True)
class BuildCommand:
    """`vlmr build NAME ...`: assemble the architecture from pretrained checkpoints.

    Attributes:
        name: the subcommand.
        help: its one-line help.
        add_arguments: adds its flags to an argparse parser.
        run: builds from the parsed flags; returns the exit status.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Architecture:
    """One architecture: what the plugin registers for it, its tiny twin and its build command.

    Attributes:
        name: the kind of its tiny twin (`vlmr tiny NAME`).
        recipe_templates: the LLaMA-Factory templates of the recipes that train it; their smoke runs use its twin.
        tiny: builds the tiny twin.
        tiny_variants: other tiny models of the same classes, by `vlmr tiny` kind (the `vlmr demo` model).
        templates: chat templates we add to LLaMA-Factory: name -> factory of `register_template`'s keywords.
        mm_plugins: multimodal plugins we add to LLaMA-Factory: name -> loader of the `BasePlugin` subclass.
        model_groups: entries of LlamaBoard's model list: display name -> (hub id, template).
        composite_models: LLaMA-Factory's composite-model keys (freeze flags, LoRA targets) by model type.
        auto: a model type we define, for transformers' Auto classes.
        build: the `vlmr build` subcommand that assembles it from checkpoints.
    """

    name: str
    recipe_templates: tuple[str, ...]
    tiny: TinyBuilder
    tiny_variants: Mapping[str, TinyBuilder] = field(default_factory=dict)
    templates: Mapping[str, Callable[[], dict[str, object]]] = field(default_factory=dict)
    mm_plugins: Mapping[str, Callable[[], type]] = field(default_factory=dict)
    model_groups: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    composite_models: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)
    auto: AutoClasses | None = None
    build: BuildCommand | None = None


def chatml_template(mm_plugin: str, **plugin_tokens: str) -> Callable[[], dict[str, object]]:
    """A template factory: ChatML (Qwen2.5's format) with the given LLaMA-Factory multimodal plugin."""

    def factory() -> dict[str, object]:
        from llamafactory.data.formatter import StringFormatter
        from llamafactory.data.mm_plugin import get_mm_plugin

        return dict(
            format_user=StringFormatter(slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]),
            format_assistant=StringFormatter(slots=["{{content}}<|im_end|>\n"]),
            format_system=StringFormatter(slots=["<|im_start|>system\n{{content}}<|im_end|>\n"]),
            default_system="You are a helpful assistant.",
            stop_words=["<|im_end|>"],
            replace_eos=True,
            mm_plugin=get_mm_plugin(name=mm_plugin, **plugin_tokens),
        )

    return factory
