"""Shared test helpers: run the real CLIs in a subprocess with an offline, CPU, single-thread environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# vlmr works in its working directory (vlmrecipes.paths): the tests' is the checkout, wherever pytest starts
# (set before vlmrecipes is imported; the CLIs run by the tests inherit it).
os.environ.setdefault("VLMR_HOME", str(REPO))

from vlmrecipes import smoke  # noqa: E402
from vlmrecipes.smoke import free_port  # noqa: E402,F401  (re-exported for the tests)

BIN = Path(sys.executable).parent  # the venv's bin: llamafactory-cli, vlmr, torchrun


def cli_env(**extra: str) -> dict[str, str]:
    """`vlmr smoke`'s offline CPU environment, plus one thread per process (pytest-xdist runs 2 workers)."""
    env = smoke.cli_env()
    # `vlmr realsize`/`plan` run in-process by some tests quiet LLaMA-Factory through os.environ: that must not
    # reach the CLIs later tests of the same xdist worker start (their assertions read LLaMA-Factory's INFO lines)
    env.pop("LLAMAFACTORY_VERBOSITY", None)
    env.update(TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_cli(args: list[str], *, cwd: str | Path = REPO, timeout: float = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `args` (first item a program in the venv's bin, e.g. "llamafactory-cli"); fail with its output."""
    program = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    proc = subprocess.run([program, *args[1:]], cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def run_chat_cli(model: str | Path, template: str, prompt: str, max_new_tokens: int = 4) -> str:
    """`llamafactory-cli chat` answering `prompt` on stdin; returns its stdout.

    Under a loaded 2-core machine the CLI sometimes aborts at interpreter exit, after it has answered and read
    `exit` ("terminate called without an active exception": a torch thread torn down at shutdown, upstream and
    not reproducible on an idle machine). That exit status is accepted only once the answer was printed.
    """
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), "chat", "--model_name_or_path", str(model), "--template", template,
         "--max_new_tokens", str(max_new_tokens)],
        input=f"{prompt}\nexit\n", capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert proc.stdout.count("Assistant: ") == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0 or "terminate called without an active exception" in proc.stderr, proc.stderr[-3000:]
    return proc.stdout
