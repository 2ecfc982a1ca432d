"""Everything the plugin registers with LLaMA-Factory and transformers, and the one idempotent function that does it.

What an architecture adds (templates, multimodal plugins, LlamaBoard entries, composite-model keys, Auto classes)
comes from its record (`plugins/architectures.py`); the fixes of upstream behaviour are the `register_patch` lines
below. LLaMA-Factory and transformers are imported only inside the `apply_*` functions.

`HOOKS` maps the module whose import triggers a registration to the function that performs it; the autoload
hook (`vlmrecipes._autoload`) calls them right after LLaMA-Factory imports its own module, in the main
process and in every torchrun worker. `register_all()` does everything at once (tests, `vlmr doctor`).

This module is imported at every interpreter start (by the autoload hook), so it imports nothing at the top but
`collections.abc`: the records are imported on first use (`architectures()`; their dataclasses cost ~7 ms), and a
patch is named as "module:function" and imported when LLaMA-Factory imports the module it fixes.
"""

from __future__ import annotations

from collections.abc import Callable  # not `typing`: it costs ~3 ms at every interpreter start

# fixes of LLaMA-Factory behaviour our recipes depend on: its module -> "module:function(that module)"
PATCHES: dict[str, str] = {}


def register_patch(module: str, patch: str) -> None:
    """Call `patch(module)` once, right after LLaMA-Factory imports `module` (before other modules import from it)."""
    PATCHES[module] = patch


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
# LLaMA-Factory 0.9.5's neat_packing of M-RoPE models crashes when cutoff_len is not a multiple of 8 or a batch has
# no image, and refuses Qwen2.5-Omni: packed positions now cover the collated row (see plugins/packing.py).
register_patch("llamafactory.data.collator", "vlmrecipes.plugins.packing:patch_packed_collator")
# LLaMA-Factory 0.9.5 evaluates only the loss during training and rejects unknown recipe keys: `vlmr_eval_task`
# makes every evaluation also generate answers and log the task metric (see plugins/train_metrics.py).
register_patch("llamafactory.hparams.parser", "vlmrecipes.plugins.train_metrics:patch_train_parser")
register_patch("llamafactory.train.sft.workflow", "vlmrecipes.plugins.train_metrics:patch_sft_trainer")
register_patch("llamafactory.train.callbacks", "vlmrecipes.plugins.train_metrics:patch_log_callback")
# transformers' get_last_checkpoint (LLaMA-Factory's automatic resume) picks the newest checkpoint-N even when a kill
# left it half-written, and the rerun then fails on it: pick the newest complete one (see plugins/resume.py).
register_patch("transformers.trainer_utils", "vlmrecipes.plugins.resume:patch_last_checkpoint")


# ------------------------------------------------------------------------------------------------------
# What the architecture records add, merged over the records
# ------------------------------------------------------------------------------------------------------


def architectures():
    """The architecture records (imported here, on first use: see the module docstring)."""
    from vlmrecipes.plugins.architectures import ARCHITECTURES

    return ARCHITECTURES


def _merged(entries: Callable[[object], dict], kind: str) -> dict:
    """One table of `entries(record)` over all records; a name two records claim is an error."""
    merged: dict = {}
    owner: dict = {}
    for record in architectures():
        for name, value in entries(record).items():
            if name in merged:
                raise ValueError(f"{kind} {name!r} is registered by two architectures: {owner[name]} and {record.name}")
            merged[name], owner[name] = value, record.name
    return merged


def templates() -> dict[str, Callable[[], dict[str, object]]]:
    """name -> factory of the keyword arguments of llamafactory.data.template.register_template"""
    return _merged(lambda record: record.templates, "template")


def mm_plugins() -> dict[str, Callable[[], type]]:
    """name -> loader of a llamafactory.data.mm_plugin.BasePlugin subclass"""
    return _merged(lambda record: record.mm_plugins, "mm plugin")


def model_groups() -> dict[str, tuple[str, str]]:
    """LlamaBoard's model list: display name -> (hub id, template)"""
    return _merged(lambda record: record.model_groups, "model group")


def composite_models() -> dict[str, dict[str, list[str]]]:
    """model_type -> keyword arguments of llamafactory's _register_composite_model (freeze flags, LoRA targets)"""
    return _merged(lambda record: record.composite_models, "composite model")


def auto_classes() -> dict[str, object]:
    """model_type -> the `AutoClasses` of a model type we define"""
    return _merged(lambda record: {record.auto.model_type: record.auto} if record.auto else {}, "model type")


# ------------------------------------------------------------------------------------------------------
# How it is registered (idempotent: LLaMA-Factory raises on a duplicate template name)
# ------------------------------------------------------------------------------------------------------


def _load(path: str):
    """The function a patch names as "module:function", imported when the hook fires (see the module docstring)."""
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def apply_mm_plugins() -> None:
    from llamafactory.data import mm_plugin

    for name, load in mm_plugins().items():
        if name not in mm_plugin.PLUGINS:
            mm_plugin.register_mm_plugin(name, load())


def apply_templates() -> None:
    from llamafactory.data import template

    apply_mm_plugins()
    for name, factory in templates().items():
        if name not in template.TEMPLATES:
            template.register_template(name=name, **factory())


def apply_model_groups() -> None:
    from llamafactory.extras import constants

    for display_name, (hub_id, template_name) in model_groups().items():
        if display_name not in constants.SUPPORTED_MODELS:
            constants.register_model_group(
                models={display_name: {constants.DownloadSource.DEFAULT: hub_id}},
                template=template_name,
                multimodal=True,
            )


def apply_composite_models() -> None:
    from llamafactory.model.model_utils import visual

    for model_type, keys in composite_models().items():
        if model_type not in visual.COMPOSITE_MODELS:
            visual._register_composite_model(model_type=model_type, **keys)


def _architecture_module(auto):
    """`transformers.models.<model_type>`: where transformers' lazy Auto mappings import a model type's classes.

    A module of attributes resolved on first access (PEP 562), so that registering costs no import of our
    modeling code: the hooks below fire while transformers is still importing itself (its auto modules are
    imported from the middle of `configuration_qwen2_5_vl`, `modeling_utils`, ...), when the Qwen2.5-VL
    classes ours subclass may not exist yet.
    """
    import sys
    import types

    name = f"transformers.models.{auto.model_type}"
    if name not in sys.modules:
        names = (auto.config_class, auto.model_class)

        def resolve(attr: str):
            if attr not in names:
                raise AttributeError(f"module {name!r} (vlm-recipes) has no attribute {attr!r}")
            return dict(zip(names, auto.load(), strict=True))[attr]

        module = types.ModuleType(name, f"vlm-recipes' {auto.model_type} classes, imported on first use")
        module.__getattr__ = resolve
        sys.modules[name] = module
    return sys.modules[name]


def apply_config_names() -> None:
    """AutoConfig: each model type names its config class, as transformers' own models do (strings only)."""
    from transformers.models.auto import configuration_auto

    for model_type, auto in auto_classes().items():
        _architecture_module(auto)
        configuration_auto.CONFIG_MAPPING_NAMES.setdefault(model_type, auto.config_class)


def apply_model_names() -> None:
    """AutoModelForImageTextToText (LLaMA-Factory's loader for vision-language models): the model class name.

    modeling_auto builds its mappings from CONFIG_MAPPING_NAMES, which the hook above filled first (modeling_auto
    imports configuration_auto); the reverse entry covers a hook installed after both were imported.
    """
    from transformers.models.auto import modeling_auto

    mapping = modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    for model_type, auto in auto_classes().items():
        modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.setdefault(model_type, auto.model_class)
        mapping._reverse_config_mapping.setdefault(auto.config_class, model_type)


def apply_patch(module_name: str) -> None:
    # by name: `register_all()` also patches modules nothing has imported yet
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
        "templates": sorted(templates()),
        "mm_plugins": sorted(mm_plugins()),
        "model_groups": sorted(model_groups()),
        "composite_models": sorted(composite_models()),
        "architectures": sorted(auto_classes()),
        "patches": sorted(PATCHES),
    }
