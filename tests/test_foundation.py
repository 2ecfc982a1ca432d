"""The plugin is visible to plain LLaMA-Factory processes, lazily, idempotently, and `vlmr` tells its state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import BIN, REPO, cli_env, run_cli
from PIL import Image

PY = str(BIN / "python")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code], env=cli_env(**env), capture_output=True, text=True, timeout=300,
                          cwd="/")


def test_llamafactory_sees_registrations_without_importing_us():
    code = (
        "import sys\n"
        "from llamafactory.data.template import TEMPLATES\n"
        "from llamafactory.extras.constants import DEFAULT_TEMPLATE, MULTIMODAL_SUPPORTED_MODELS\n"
        "print('siglip_qwen' in TEMPLATES, DEFAULT_TEMPLATE.get('SigLIP-Qwen2.5-0.5B-Instruct'),\n"
        "      'SigLIP-Qwen2.5-0.5B-Instruct' in MULTIMODAL_SUPPORTED_MODELS)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "siglip_qwen", "True"]


def test_hook_is_lazy_at_interpreter_start():
    code = (
        "import sys\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'llamafactory', 'typing')]\n"
        "print('vlmrecipes._autoload' in sys.modules, heavy)\n"
    )
    proc = _python(code)
    assert proc.stdout.strip() == "True []", proc.stdout + proc.stderr


def test_hook_can_be_disabled_per_process():
    proc = _python("from llamafactory.data.template import TEMPLATES; print('siglip_qwen' in TEMPLATES)",
                   VLMR_NO_AUTOLOAD="1")
    assert proc.stdout.strip() == "False", proc.stderr


def test_register_all_is_idempotent():
    code = (
        "from vlmrecipes.plugins import registry\n"
        "from llamafactory.data.template import TEMPLATES\n"
        "before = len(TEMPLATES)\n"
        "registry.register_all(); registry.register_all()\n"
        "print('RESULT', before == len(TEMPLATES), 'siglip_qwen' in TEMPLATES)\n"
    )

    def result(proc) -> list[str]:  # LLaMA-Factory may log to stdout too: read our line only
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()[1:]

    # with the hook disabled the first register_all() adds ours, the second adds nothing
    assert result(_python(code, VLMR_NO_AUTOLOAD="1"))[1] == "True"
    assert result(_python(code)) == ["True", "True"]


# A save of LlamaBoard's user config held in the middle of its write while the model-path lookup of the same
# click reads the file (what two concurrent requests do on a loaded server): the reader must see a whole file.
LLAMABOARD_RACE = """
import os, sys, threading
os.chdir(sys.argv[1])
from llamafactory.webui import common
from llamafactory.webui.components import top
assert top.save_config is common.save_config  # the form calls the same function we test
common.save_config("en", "huggingface", "Qwen2.5-VL-3B-Instruct")
inside, release = threading.Event(), threading.Event()
dump = common.safe_dump
def held_dump(data, stream):
    inside.set(); release.wait(30); dump(data, stream)
common.safe_dump = held_dump
writer = threading.Thread(target=common.save_config, args=("en", "huggingface", "Qwen2.5-Omni-7B"))
writer.start(); inside.wait(30)
try:
    seen = common.get_model_path("Qwen2.5-VL-3B-Instruct")
except Exception as err:
    seen = type(err).__name__
release.set(); writer.join()
common.safe_dump = dump
open(common._get_config_path(), "w").close()  # an empty file left by a crash mid-write
try:
    after_crash = common.get_model_path("Qwen2.5-Omni-7B")
except Exception as err:
    after_crash = type(err).__name__
print("RESULT", seen, after_crash)
"""


def test_llamaboard_model_pick_reads_a_whole_user_config(tmp_path):
    def result(**env: str) -> list[str]:
        proc = subprocess.run([PY, "-c", LLAMABOARD_RACE, str(tmp_path)], env=cli_env(**env), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()[1:]

    # Upstream: the half-written file reads as None and the lookup raises, so the form keeps the old path.
    assert result(VLMR_NO_AUTOLOAD="1")[0] == "TypeError"
    # Fixed: the reader sees the previous whole file; an empty file left by a crash reads as the defaults.
    assert result() == ["Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-Omni-7B"]


def test_doctor_green_after_install():
    proc = run_cli(["vlmr", "doctor"])
    assert "hook           active" in proc.stdout
    assert "siglip_qwen" in proc.stdout
    assert "OK: llamafactory-cli sees everything" in proc.stdout


def test_doctor_fails_with_the_fix_when_hook_inactive():
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != 'PostImportFinder']\n"
        "from vlmrecipes.cli import main\n"
        "sys.exit(main(['doctor']))\n"
    )
    proc = _python(code)
    assert proc.returncode == 1
    assert "hook           NOT active" in proc.stdout
    assert "vlmr install-hook" in proc.stderr


def test_cli_help_lists_every_subcommand_and_each_module_has_its_entry_points():
    from vlmrecipes.cli import COMMANDS

    proc = run_cli(["vlmr", "--help"])
    for name, (module_name, _) in COMMANDS.items():
        assert name in proc.stdout
        module = __import__(module_name, fromlist=["_"])
        suffix = name.replace("-", "_")
        assert hasattr(module, f"add_{suffix}_arguments") or hasattr(module, "add_arguments"), name
        assert hasattr(module, f"run_{suffix}") or hasattr(module, "run"), name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the source (what git tracks or would add), as a fresh clone builds it: setuptools
    reuses the checkout's build/lib, where files moved or renamed since the last build would still ship."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file() or (REPO / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name, follow_symlinks=False)
    out = tmp_path_factory.mktemp("wheel")
    run_cli([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)], timeout=600)
    (built,) = out.glob("vlm_recipes-*.whl")
    return built


@pytest.mark.slow
def test_regular_wheel_ships_the_pth_recipes_and_registry_and_no_generic_top_level_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "vlmrecipes-autoload.pth" in names
    assert "vlmrecipes/plugins/registry.py" in names
    assert "vlmrecipes/eval/__init__.py" in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("vlm_recipes-")}
    assert top_level == {"vlmrecipes", "vlmrecipes-autoload.pth"}, top_level
    shipped = sorted(n.removeprefix("vlmrecipes/recipe_files/") for n in names if "/recipe_files/" in n)
    in_checkout = sorted(str(p.relative_to(REPO / "recipes")) for p in [
        *(REPO / "recipes").glob("*/*.yaml"), *(REPO / "recipes").glob("deepspeed/*.json")])
    assert shipped == in_checkout  # every recipe, no headline link (`vlmr init` makes those)
    assert "vlmrecipes/dataset_info.json" in names


@pytest.mark.slow
def test_regular_install_runs_convert_validate_smoke_from_any_directory(wheel, tmp_path):
    """`pip install` (not -e) into a fresh venv, then from an empty directory: vlmr init, convert, validate and
    one short smoke training. The venv reuses this one's packages (torch, LLaMA-Factory, ...) through a .pth
    line, added after the install so that pip never sees this venv's editable vlm-recipes."""
    venv = tmp_path / "venv"
    run_cli([PY, "-m", "venv", "--without-pip", str(venv)])
    run_cli([PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
             "--quiet", str(wheel)], timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run_cli([str(venv / "bin" / "python"), "-c", purelib]).stdout.strip())
    (site / "zz_layer_test_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    package_files = sorted(p for p in (site / "vlmrecipes").rglob("*") if "__pycache__" not in p.parts)

    env = cli_env(PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    env.pop("VLMR_HOME")  # the working directory decides

    def vlmr(*args: str, cwd: Path) -> str:
        return run_cli([str(venv / "bin" / "vlmr"), *args], cwd=cwd, env=env, timeout=600).stdout

    proc = run_cli([str(venv / "bin" / "python"), "-c", "import vlmrecipes; from llamafactory.data.template import "
                    "TEMPLATES; print(vlmrecipes.__file__, 'siglip_qwen' in TEMPLATES)"], env=env, cwd=tmp_path)
    assert proc.stdout.split() == [str(site / "vlmrecipes" / "__init__.py"), "True"]  # the wheel's, hook active

    vlmr("init", "project", cwd=tmp_path)
    project = tmp_path / "project"
    assert (project / "recipes" / "medct_lora.yaml").resolve() == \
        project / "recipes" / "medct" / "qwen3_vl_8b_thinking_lora.yaml"
    for label, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (project / "raw" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32 + 8 * i, 32), colour).save(project / "raw" / label / f"{i}.png")
    vlmr("convert", "image-folder", "--input", "raw", "--name", "colours", "--split", "train", cwd=project)
    assert "0 errors" in vlmr("validate", "colours_train", cwd=project)
    registry = json.loads((project / "dataset_info" / "dataset_info.json").read_text())
    assert {"colours_train", "medtrinity_ct_train", "demo_ct_train"} <= registry.keys()

    assert "smoke OK" in vlmr("smoke", "recipes/medct_lora.yaml", "--train-only", cwd=project)
    assert (project / "outputs" / "smoke" / "medct_lora" / "train" / "adapter_model.safetensors").exists()
    assert sorted(p for p in (site / "vlmrecipes").rglob("*") if "__pycache__" not in p.parts) == package_files


def test_autoload_benchmark_reports_the_cost():
    proc = run_cli([PY, "benchmarks/bench_autoload.py", "--runs", "5"])
    assert "hook cost" in proc.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
