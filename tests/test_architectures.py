"""One record per architecture, in the architecture's own folder, listed once: every table derives from the list.

A third architecture is a folder `plugins/<name>/` whose `__init__.py` defines its `ARCHITECTURE` record, plus its
entry in `plugins/architectures.py`; these tests show it with the two we have (SigLIP+Qwen, Multiway).
"""

from __future__ import annotations

import inspect
import tomllib

import pytest
from helpers import REPO

from vlmrecipes import build, realsize, recipes, tiny
from vlmrecipes.plugins import registry
from vlmrecipes.plugins.architectures import ARCHITECTURES

CUSTOM = [arch for arch in ARCHITECTURES if arch.build is not None]  # the ones with model code of ours


def test_the_list_holds_one_record_per_architecture_our_recipes_train():
    assert [arch.name for arch in ARCHITECTURES] == ["qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "siglip_qwen",
                                                     "multiway"]
    assert [arch.name for arch in CUSTOM] == ["siglip_qwen", "multiway"]
    served = [template for arch in ARCHITECTURES for template in arch.recipe_templates]
    assert len(served) == len(set(served)), f"a recipe template is claimed by two architectures: {served}"
    used = {recipes.load(path).get("template") for path in recipes.all_recipes()}
    assert used <= set(served), f"recipe templates no architecture serves: {sorted(used - set(served))}"


@pytest.mark.parametrize("arch", CUSTOM, ids=lambda arch: arch.name)
def test_a_custom_architecture_lives_in_its_own_folder(arch):
    """Its tiny twin, build command (run and compose), mm plugins and Auto classes are all defined under
    plugins/<name>/."""
    # LLaMA-Factory's templates first, as in any real process: an mm plugin class imported before them would import
    # LLaMA-Factory's data package from inside its own import, and the hook registering it would find it half-made.
    import llamafactory.data.template  # noqa: F401

    folder = f"vlmrecipes.plugins.{arch.name}"
    functions = [arch.tiny, arch.build.add_arguments, arch.build.run, arch.build.compose]
    classes = [load() for load in arch.mm_plugins.values()]
    if arch.auto is not None:
        config_class, model_class = arch.auto.load()
        assert (config_class.__name__, model_class.__name__) == (arch.auto.config_class, arch.auto.model_class)
        assert config_class.model_type == arch.auto.model_type and model_class.config_class is config_class
        classes += [config_class, model_class]
    outside = [f"{x.__qualname__} ({x.__module__})" for x in functions + classes
               if not x.__module__.startswith(folder + ".")]
    assert not outside, f"{arch.name}: defined outside {folder}: {outside}"


def test_every_table_of_architectures_derives_from_the_list():
    assert set(tiny.TINY_KINDS) == {kind for arch in ARCHITECTURES for kind in (arch.name, *arch.tiny_variants)}
    assert recipes.TEMPLATE_TO_TINY == {t: arch.name for arch in ARCHITECTURES for t in arch.recipe_templates}
    assert build.BUILDERS == {arch.build.name: arch.build for arch in CUSTOM}
    registered = registry.registered()
    assert registered["templates"] == sorted(t for arch in ARCHITECTURES for t in arch.templates)
    assert registered["mm_plugins"] == sorted(p for arch in ARCHITECTURES for p in arch.mm_plugins)
    assert registered["model_groups"] == sorted(g for arch in ARCHITECTURES for g in arch.model_groups)
    assert registered["composite_models"] == sorted(m for arch in ARCHITECTURES for m in arch.composite_models)
    assert registered["architectures"] == sorted(arch.auto.model_type for arch in ARCHITECTURES if arch.auto)
    # ...and none of the consumers names a custom architecture: adding one edits none of them
    for module in (registry, tiny, recipes, build, realsize):
        source = inspect.getsource(module)
        named = [name for arch in CUSTOM for name in (arch.name, arch.build.name) if name in source]
        assert not named, f"{module.__name__} names {named}: read it from the architecture records instead"


def test_a_name_two_records_claim_is_an_error():
    with pytest.raises(ValueError, match="'same' is registered by two architectures: qwen2_5_vl and qwen3_vl"):
        registry._merged(lambda record: {"same": record.name}, "template")



def test_every_package_folder_is_shipped():
    """A new folder under plugins/ is in pyproject's package list, or a regular install goes without it."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join((package, *init.parent.relative_to(REPO / folder).parts))
               for package, folder in setuptools["package-dir"].items()
               for init in (REPO / folder).rglob("__init__.py")}
    missing = sorted(on_disk - set(setuptools["packages"]))
    assert not missing, f"add to `packages` in pyproject.toml: {missing}"
