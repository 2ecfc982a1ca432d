"""Dependencies point one way: the CLI (`vlmr` and its subcommand modules) -> library -> model and data code.

Model and data code (plugins/, data_converters/, eval/) may use vlmrecipes' library modules (`paths`, `recipes`,
...) but never a module of the CLI layer, by an import statement or by a module name in a string.
"""

from __future__ import annotations

import ast

from helpers import REPO

from vlmrecipes.cli import COMMANDS

# `vlmr` itself and the modules of vlmrecipes/ it runs as subcommands (argument parsing, printing, exit codes):
# cli, workdir, doctor, tiny, demo_data, smoke, demo, realsize, plan, build. The subcommands of the model and data
# packages (`vlmrecipes.data_converters.cli`, `vlmrecipes.eval.report`, ...) belong to those packages.
CLI_LAYER = {"vlmrecipes.cli"} | {module for module, _ in COMMANDS.values() if module.count(".") == 1}
MODEL_AND_DATA = {"plugins": "vlmrecipes.plugins", "data_converters": "vlmrecipes.data_converters",
                  "eval": "vlmrecipes.eval"}


def _imported(tree: ast.AST) -> set[str]:
    """Absolute names of every module an import statement names (in functions too), and module-name strings."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from vlmrecipes import smoke`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value.partition(":")[0])  # importlib.import_module("...") / "module:attr" loaders
    return names


def test_the_cli_layer_is_the_vlmr_subcommand_modules():
    assert CLI_LAYER == {f"vlmrecipes.{name}" for name in
                         ("cli", "workdir", "doctor", "tiny", "demo_data", "smoke", "demo", "realsize", "plan",
                          "build")}


def test_model_and_data_code_never_import_the_cli_layer():
    offenders = []
    for folder in MODEL_AND_DATA:
        for path in sorted((REPO / folder).rglob("*.py")):
            wrong = sorted(_imported(ast.parse(path.read_text(), str(path))) & CLI_LAYER)
            if wrong:
                offenders.append(f"{path.relative_to(REPO)}: {', '.join(wrong)}")
    assert not offenders, "model/data code importing the CLI layer (move the helper down a layer):\n" + \
        "\n".join(offenders)
