#!/usr/bin/env bash
# Install what tests/test_webui.py drives: Debian's headless-capable `chromium` (from apt, not Playwright's
# own browser download, which needs the network at test time and bundles its own libraries) and the
# Playwright Python client pinned in pyproject's `test` extra.
#
# Usage (as root, or with sudo available): tests/install_browser.sh [PYTHON]
#   PYTHON defaults to the repo's .venv/bin/python. Idempotent: does nothing that is already done.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${1:-$REPO/.venv/bin/python}"
# Keep in step with pyproject.toml [project.optional-dependencies] test.
PLAYWRIGHT_PIN="playwright==1.65.2"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v chromium >/dev/null 2>&1; then
    $SUDO apt-get update
    # --no-install-recommends: the test needs the browser binary and its libraries, not fonts for every
    # script or a desktop integration.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi
chromium --version

# Only the Python client: we never run `playwright install` (the test launches /usr/bin/chromium).
if ! "$PYTHON" -c "import playwright" >/dev/null 2>&1; then
    "$PYTHON" -m pip install "$PLAYWRIGHT_PIN"
fi
"$PYTHON" -c "from importlib.metadata import version; print('playwright', version('playwright'))"
