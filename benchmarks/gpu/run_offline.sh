#!/usr/bin/env bash
# The GPU harness on a machine with no network: the air-gapped install (install_offline.sh: the wheelhouse over
# the machine's own Python, torch and CUDA), then benchmarks/gpu/run.py with the given arguments.
#
#   bash benchmarks/gpu/run_offline.sh --recipes recipes/medct_lora.yaml recipes/emotion_lora.yaml --out gpu_results
#
# Environment: PYTHON, WHEELHOUSE, VLMR_ENV as install_offline.sh reads them.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="${VLMR_ENV:-/tmp/vlmr-overlay}"
VLMR_ENV="$ENV_DIR" bash "$REPO/benchmarks/gpu/install_offline.sh"
export PATH="$ENV_DIR/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLMR_HOME="$REPO"
exec "$ENV_DIR/bin/python" "$REPO/benchmarks/gpu/run.py" "$@"
