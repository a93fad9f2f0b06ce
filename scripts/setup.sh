#!/usr/bin/env bash
# Install the pinned stack (see README "The stack") into .venv. Idempotent: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
# opencv-doc: its example photos of people are the real images hmr's tests fit (none may be committed);
# g++ and ninja-build: relight's fused CPU rasterizer is compiled at setup (build_kernel below)
for pkg in libsuitesparse-dev libosmesa6 opencv-doc g++ ninja-build; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] missing Debian packages: ${need_apt[*]}" >&2
    echo "[setup] run as root:  sudo apt-get update && sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
have() { "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

# relight's fused CPU rasterizer (C++ with OpenMP, relight/_ext/fused.cpp), built with torch's cpp_extension
# into relight/_ext/build; skipped when its stamp is newer than the source. Should the build fail, relight
# renders with its PyTorch rasterizer and tests/test_relight_kernel.py says why (and fails under CI).
# The same for the MuJoCo closed loop (envs/_ext/closed_loop.cpp, linked against the mujoco package's
# libmujoco): without it grad="forward" through MuJoCo says why, and the adjoint still works.
build_one() {  # stamp source flags-file module what-if-not
  if [ -f "$1" ] && [ "$1" -nt "$2" ] && [ "$1" -nt "$3" ]; then return 0; fi
  echo "[setup] building $2 (a minute or two)"
  "$VENV/bin/python" -m "$4" --build || echo "[setup] WARNING: $2 did not build; $5" >&2
}
build_kernel() {
  build_one relight/_ext/build/.built relight/_ext/fused.cpp relight/kernel.py relight.kernel \
    "the PyTorch rasterizer will be used"
  build_one envs/_ext/build/.built envs/_ext/closed_loop.cpp envs/mujoco_closed_loop.py envs.mujoco_closed_loop \
    "grad='forward' through MuJoCo is unavailable"
}

# Fast path: everything installed since the last change of pyproject.toml or this script.
if [ "$VENV/.installed" -nt pyproject.toml ] && [ "$VENV/.installed" -nt "$0" ] && have "
import sys, torch, pytorch3d.renderer, theseus, sksparse, smplx, mujoco, cv2, torchopt, dm_control, ruff, mypy
import mediapipe.python.solutions.pose, skimage
import metatune, envs, hmr, relight
sys.exit(torch.__version__.split('+')[0] != '2.12.1')"; then
  build_kernel
  echo "[setup] ready: $VENV (up to date)"
  exit 0
fi
# pip's own exit status decides; the filter only drops the index's noise about absent local mirrors.
PIP=pip_install
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# torch first: easypytorch3d's compiled _C is built against exactly this release.
have "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.12.1')" || {
  echo "[setup] installing torch 2.12.1 (several GB with its CUDA libraries)"
  $PIP "torch==2.12.1"
}
# theseus-ai ships source only and must build against the torch above (no build isolation);
# scikit-sparse 0.5 does not compile against Debian 12's SuiteSparse, 0.4.16 does.
have "import sksparse" || { echo "[setup] installing scikit-sparse<0.5"; $PIP "numpy>=2" cython setuptools wheel; $PIP --no-build-isolation "scikit-sparse<0.5"; }
have "import theseus" || { echo "[setup] installing theseus-ai 0.2.3"; $PIP --no-build-isolation "theseus-ai==0.2.3"; }

# The package itself (editable) with the rest of the stack and the dev extras.
echo "[setup] installing metatune (editable) and the rest of the stack"
$PIP -e ".[dev]"
"$VENV/bin/python" -c "import torch, pytorch3d.renderer, theseus, smplx, mujoco, cv2, torchopt, dm_control, metatune, mediapipe" \
  || { echo "[setup] the stack does not import; see the error above" >&2; exit 1; }
touch "$VENV/.installed"
build_kernel
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
