"""The record of one model architecture our recipes train, kept in the architecture's own folder.

Everything the rest of vlm-recipes needs to know about an architecture is in its record: what the plugin
registers with LLaMA-Factory and transformers (templates, multimodal plugins, LlamaBoard entries, composite-model
keys, Auto classes), its tiny twin, its `vlmr build` subcommand (and the config it would build, for `vlmr realsize`)
and the recipe templates it serves. The records are listed once, in `plugins/architectures.py`; `registry`,
`vlmr tiny`, `vlmrecipes.recipes`, `vlmr build` and `vlmr realsize` derive their tables from that list.

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
class StoredCheckpoint:
    """What `vlmr realsize` knows of a pretrained checkpoint without downloading it (its stored files).

    Attributes:
        config: the transformers config of the checkpoint's config.json.
        tokenizer_size: the number of entries of its tokenizer (`len(tokenizer)`) where stored, else None.
    """

    config: object
    tokenizer_size: int | None = None


@dataclass(frozen=True)
class PretrainedPart:
    """A pretrained checkpoint a built model is made of, checked against the checkpoint's published parameter count.

    Attributes:
        checkpoint: its hub id.
        what: the check's name in reports, a `str.format` template: `{checkpoint}` is the hub id and, where `owns`
            is set, `{others}` the built model's parameters outside this part.
        owns: whether a parameter of the built model, by name, comes from the checkpoint (tied weights counted
            once). None: the build keeps only a piece of the checkpoint (the vision half of a SigLIP pair), so the
            checkpoint's own whole model, built from its stored config, is counted instead.
    """

    checkpoint: str
    what: str
    owns: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class ComposedConfig:
    """The model a `vlmr build` command line would write, as a config without weights (`vlmr realsize` builds it).

    Attributes:
        config: its transformers config (a class AutoModelForImageTextToText builds once the plugin is loaded).
        parts: the pretrained checkpoints it is made of, each compared with its published parameter count.
        description: what the model is, for reports, e.g. "Multiway on Qwen/Qwen2.5-VL-3B-Instruct".
        label: a short name for tables, e.g. "Multiway-Qwen2.5-VL-3B-Instruct".
        image_processor_of: the stored checkpoint whose (Qwen-style) image processor the model uses; None for a
            fixed-size tower, whose config's `vision_config.image_size` and `image_seq_length` give the image tokens.
    """

    config: object
    parts: tuple[PretrainedPart, ...]
    description: str
    label: str
    image_processor_of: str | None


@dataclass(frozen=True)
class BuildCommand:
    """`vlmr build NAME ...`: assemble the architecture from pretrained checkpoints.

    Attributes:
        name: the subcommand.
        help: its one-line help.
        add_arguments: adds its flags to an argparse parser.
        run: builds from the parsed flags; returns the exit status.
        compose: (parsed flags, hub id -> its `StoredCheckpoint`) -> the `ComposedConfig` that `run` would build,
            from the same config functions `run` uses; `vlmr realsize` passes the stored checkpoints (no download)
            and builds the result on the meta device for recipes whose header names this command.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    compose: Callable[[argparse.Namespace, Callable[[str], StoredCheckpoint]], ComposedConfig]


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
