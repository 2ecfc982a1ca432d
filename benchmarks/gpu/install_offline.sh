#!/usr/bin/env bash
# The air-gapped install: put the wheelhouse (`make wheelhouse`, made on a machine with network access) over
# the machine's own Python, torch and CUDA, with no network.
#
#   bash benchmarks/gpu/install_offline.sh            # then: export PATH=/tmp/vlmr-overlay/bin:$PATH
#                                                     #       llamafactory-cli train recipes/medct_lora.yaml
# Environment: PYTHON      the machine's interpreter, the one that holds torch (default: python3)
#              WHEELHOUSE  the wheels (default: wheelhouse/ in this checkout)
#              VLMR_ENV    where the overlay environment goes (default: /tmp/vlmr-overlay; rebuilt each time)
#
# The overlay is a venv made from that interpreter whose site-packages holds the wheelhouse, followed on
# sys.path by the interpreter's own site-packages (a .pth line), so our pins (transformers 5.6.0, ...) shadow
# the image's copies and everything else (torch, triton, CUDA libraries) comes from the image. A venv rather
# than `pip install --target DIR` + PYTHONPATH: Python runs the .pth files of site directories only, and our
# plugin loads through one (vlmrecipes-autoload.pth) in every process, torchrun's workers included.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHEELHOUSE="${WHEELHOUSE:-$REPO/wheelhouse}"
ENV_DIR="${VLMR_ENV:-/tmp/vlmr-overlay}"

compgen -G "$WHEELHOUSE/*.whl" >/dev/null || {
    echo "no wheels in $WHEELHOUSE: run \`make wheelhouse\` on a machine with network access and copy it here" >&2
    exit 2
}

"$PYTHON" -m venv --without-pip --clear "$ENV_DIR"
OVERLAY_SITE="$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# every site directory of the image's interpreter (its .pth files run too), after the overlay's own
IMAGE_SITES="$("$PYTHON" -c 'import site; print(repr(site.getsitepackages()))')"
echo "import site; [site.addsitedir(p) for p in $IMAGE_SITES]" >"$OVERLAY_SITE/zz-image-site-packages.pth"

"$PYTHON" -m pip --python "$ENV_DIR/bin/python" install --quiet --no-index --no-deps --no-compile \
    --disable-pip-version-check "$WHEELHOUSE"/*.whl

# LLaMA-Factory starts `torchrun` from PATH (FORCE_TORCHRUN, DeepSpeed recipes): run it with the overlay's
# interpreter so that the workers see the overlay too.
printf '#!/bin/sh\nexec "%s" -m torch.distributed.run "$@"\n' "$ENV_DIR/bin/python" >"$ENV_DIR/bin/torchrun"
chmod +x "$ENV_DIR/bin/torchrun"

# the hook is active in the overlay, and what this machine gives the recipes (problems are printed, not fatal)
PATH="$ENV_DIR/bin:$PATH" VLMR_HOME="$REPO" "$ENV_DIR/bin/vlmr" doctor --quiet \
    || echo "[install_offline] vlmr doctor reported the problems above" >&2
echo "installed into $ENV_DIR: export PATH=$ENV_DIR/bin:\$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1"
