"""The one list of everything the plugin registers, and the one idempotent function that registers it.

Each registry is a plain dict filled by a `register_*` function (LLaMA-Factory's `TEMPLATES` style). The
entries are declarative: strings and small factories, so importing this module costs nothing; LLaMA-Factory
and transformers are imported only inside the `apply_*` functions.

`HOOKS` maps the module whose import triggers a registration to the function that performs it; the autoload
hook (`vlmrecipes._autoload`) calls them right after LLaMA-Factory imports its own module, in the main
process and in every torchrun worker. `register_all()` does everything at once (tests, `vlmr doctor`).
"""

from __future__ import annotations

from collections.abc import Callable  # not `typing`: it costs ~3 ms at every interpreter start

# name -> factory returning the keyword arguments of llamafactory.data.template.register_template
TEMPLATES: dict[str, Callable[[], dict[str, object]]] = {}
# name -> "module:Class" of a llamafactory.data.mm_plugin.BasePlugin subclass
MM_PLUGINS: dict[str, str] = {}
# LlamaBoard model list: display name -> (hub id, template)
MODEL_GROUPS: dict[str, tuple[str, str]] = {}
# model_type -> keyword arguments of llamafactory's _register_composite_model (freeze flags, LoRA targets)
COMPOSITE_MODELS: dict[str, dict[str, list[str]]] = {}
# model_type -> ("module:ConfigClass", "module:ModelClass") registered with transformers' Auto classes
ARCHITECTURES: dict[str, tuple[str, str]] = {}
# fixes of LLaMA-Factory behaviour our recipes depend on: its module -> "module:function(that module)"
PATCHES: dict[str, str] = {}


def register_template(name: str, factory: Callable[[], dict[str, object]]) -> None:
    TEMPLATES[name] = factory


def register_mm_plugin(name: str, plugin_class: str) -> None:
    MM_PLUGINS[name] = plugin_class


def register_model(display_name: str, hub_id: str, template: str) -> None:
    MODEL_GROUPS[display_name] = (hub_id, template)


def register_composite_model(model_type: str, **keys: list[str]) -> None:
    COMPOSITE_MODELS[model_type] = keys


def register_architecture(model_type: str, config_class: str, model_class: str) -> None:
    ARCHITECTURES[model_type] = (config_class, model_class)


def register_patch(module: str, patch: str) -> None:
    """Call `patch(module)` once, right after LLaMA-Factory imports `module` (before other modules import from it)."""
    PATCHES[module] = patch


def _load(path: str):
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------------------
# What we register
# ------------------------------------------------------------------------------------------------------


def _chatml(mm_plugin: str, **plugin_tokens: str) -> Callable[[], dict[str, object]]:
    """ChatML (Qwen2.5's format) with the given LLaMA-Factory multimodal plugin."""

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


# SigLIP+Qwen (LLaVA-style): Qwen2.5's ChatML, images as `<image>` placeholders expanded by the llava plugin
# to `image_seq_length` tokens; our subclass names the record and the fix when image tokens are miscounted or
# cut by cutoff_len.
register_mm_plugin("siglip_qwen", "vlmrecipes.plugins.siglip_qwen_mm_plugin:SiglipQwenPlugin")
register_template("siglip_qwen", _chatml("siglip_qwen", image_token="<image>"))
register_model("SigLIP-Qwen2.5-0.5B-Instruct", "vlm-recipes/siglip-qwen2.5-0.5b-instruct", "siglip_qwen")

# Multiway Qwen2.5-VL (issue 6): Qwen2.5-VL plus Multiway blocks; same tokens, processor and towers as Qwen2.5-VL.
register_architecture(
    "multiway_qwen2_5_vl",
    "vlmrecipes.plugins.configuration_multiway:MultiwayQwen2_5_VLConfig",
    "vlmrecipes.plugins.modeling_multiway:MultiwayQwen2_5_VLForConditionalGeneration",
)
register_template("multiway_qwen", _chatml("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>"))
register_model("Multiway-Qwen2.5-VL-3B-Instruct", "vlm-recipes/multiway-qwen2.5-vl-3b-instruct", "multiway_qwen")
# LLaMA-Factory's qwen2_5_vl keys: the Multiway blocks live in `language_model.layers.N.multiway`, so
# freeze_vision_tower / freeze_multi_modal_projector behave as for Qwen2.5-VL.
register_composite_model(
    "multiway_qwen2_5_vl",
    projector_keys=["visual.merger"],
    vision_model_keys=["visual.patch_embed", "visual.blocks"],
    language_model_keys=["language_model", "lm_head"],
    lora_conflict_keys=["patch_embed"],
)
# LLaMA-Factory 0.9.5 generates from M-RoPE models (Qwen2/2.5/3-VL) with 1-D image positions on transformers 5:
# predictions and chat answers then ignore where things are in the image (see plugins/mrope_generation.py).
register_patch("llamafactory.train.sft.trainer", "vlmrecipes.plugins.mrope_generation:patch_trainer_prediction_step")
register_patch("llamafactory.chat.hf_engine", "vlmrecipes.plugins.mrope_generation:patch_chat_engine")
# LlamaBoard 0.9.5 rewrites its user config in place while another request reads it: picking a model can then
# leave the previous model's path in the form (see plugins/llamaboard_config.py).
register_patch("llamafactory.webui.common", "vlmrecipes.plugins.llamaboard_config:patch_user_config")
# LLaMA-Factory 0.9.5's image loader clips 16-bit and float images to white or black, ignores EXIF rotation and
# drops transparency; a broken image fails with a bare Pillow error (see plugins/image_decode.py).
register_patch("llamafactory.data.mm_plugin", "vlmrecipes.plugins.image_decode:patch_image_loading")
# A record LLaMA-Factory cannot preprocess (bad image, miscounted <image>) stops training with a traceback that
# names no dataset or line: the error names the dataset, file:line and the fix (see plugins/dataset_errors.py).
register_patch("llamafactory.data.processor", "vlmrecipes.plugins.dataset_errors:patch_dataset_processors")
# transformers 5.6.0 (the newest LLaMA-Factory 0.9.5 accepts) crashes in flash_attention_forward on every model
# without attention sinks, i.e. at the first forward of each `flash_attn: fa2` recipe (see plugins/flash_attention.py).
register_patch("transformers.integrations.flash_attention",
               "vlmrecipes.plugins.flash_attention:patch_flash_attention_forward")

# model_type "llava" is already a composite model in LLaMA-Factory (vision_tower / multi_modal_projector /
# language_model), and the recipes' hub models (Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni) are already in its model
# list: we register only what it lacks.


# ------------------------------------------------------------------------------------------------------
# How it is registered (idempotent: LLaMA-Factory raises on a duplicate template name)
# ------------------------------------------------------------------------------------------------------


def apply_mm_plugins() -> None:
    from llamafactory.data import mm_plugin

    for name, path in MM_PLUGINS.items():
        if name not in mm_plugin.PLUGINS:
            mm_plugin.register_mm_plugin(name, _load(path))


def apply_templates() -> None:
    from llamafactory.data import template

    apply_mm_plugins()
    for name, factory in TEMPLATES.items():
        if name not in template.TEMPLATES:
            template.register_template(name=name, **factory())


def apply_model_groups() -> None:
    from llamafactory.extras import constants

    for display_name, (hub_id, template_name) in MODEL_GROUPS.items():
        if display_name not in constants.SUPPORTED_MODELS:
            constants.register_model_group(
                models={display_name: {constants.DownloadSource.DEFAULT: hub_id}},
                template=template_name,
                multimodal=True,
            )


def apply_composite_models() -> None:
    from llamafactory.model.model_utils import visual

    for model_type, keys in COMPOSITE_MODELS.items():
        if model_type not in visual.COMPOSITE_MODELS:
            visual._register_composite_model(model_type=model_type, **keys)


def _architecture_module(model_type: str):
    """`transformers.models.<model_type>`: where transformers' lazy Auto mappings import a model type's classes.

    A module of attributes resolved on first access (PEP 562), so that registering costs no import of our
    modeling code: the hooks below fire while transformers is still importing itself (its auto modules are
    imported from the middle of `configuration_qwen2_5_vl`, `modeling_utils`, ...), when the Qwen2.5-VL
    classes ours subclass may not exist yet.
    """
    import sys
    import types

    name = f"transformers.models.{model_type}"
    if name not in sys.modules:
        classes = {path.rpartition(":")[2]: path for path in ARCHITECTURES[model_type]}

        def resolve(attr: str):
            if attr not in classes:
                raise AttributeError(f"module {name!r} (vlm-recipes) has no attribute {attr!r}")
            return _load(classes[attr])

        module = types.ModuleType(name, f"vlm-recipes' {model_type} classes, imported on first use")
        module.__getattr__ = resolve
        sys.modules[name] = module
    return sys.modules[name]


def apply_config_names() -> None:
    """AutoConfig: each model type names its config class, as transformers' own models do (strings only)."""
    from transformers.models.auto import configuration_auto

    for model_type, (config_path, _) in ARCHITECTURES.items():
        _architecture_module(model_type)
        configuration_auto.CONFIG_MAPPING_NAMES.setdefault(model_type, config_path.rpartition(":")[2])


def apply_model_names() -> None:
    """AutoModelForImageTextToText (LLaMA-Factory's loader for vision-language models): the model class name.

    modeling_auto builds its mappings from CONFIG_MAPPING_NAMES, which the hook above filled first (modeling_auto
    imports configuration_auto); the reverse entry covers a hook installed after both were imported.
    """
    from transformers.models.auto import modeling_auto

    mapping = modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    for model_type, (config_path, model_path) in ARCHITECTURES.items():
        modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.setdefault(model_type, model_path.rpartition(":")[2])
        mapping._reverse_config_mapping.setdefault(config_path.rpartition(":")[2], model_type)


def apply_patch(module_name: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    if not getattr(module, "_vlmr_patched", False):  # idempotent
        _load(PATCHES[module_name])(module)
        module._vlmr_patched = True


HOOKS: dict[str, Callable[[], None]] = {
    "llamafactory.data.template": apply_templates,
    "llamafactory.extras.constants": apply_model_groups,
    "llamafactory.model.model_utils.visual": apply_composite_models,
    "transformers.models.auto.configuration_auto": apply_config_names,
    "transformers.models.auto.modeling_auto": apply_model_names,
}


HOOKS.update({module: (lambda module=module: apply_patch(module)) for module in PATCHES})


def register_all() -> None:
    """Register everything now (idempotent)."""
    for hook in HOOKS.values():
        hook()


def registered() -> dict[str, list[str]]:
    """What this plugin registers, by kind (for `vlmr doctor` and the docs)."""
    return {
        "templates": sorted(TEMPLATES),
        "mm_plugins": sorted(MM_PLUGINS),
        "model_groups": sorted(MODEL_GROUPS),
        "composite_models": sorted(COMPOSITE_MODELS),
        "architectures": sorted(ARCHITECTURES),
        "patches": sorted(PATCHES),
    }
