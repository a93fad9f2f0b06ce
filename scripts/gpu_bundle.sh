#!/usr/bin/env bash
# Packs, on this (online) machine, what scripts/gpu_check.sh needs on a lent GPU machine, whose image reaches no
# registry and lacks part of our stack (/work/.library/device/KINDS.md: Python 3.12 and torch 2.11 with numpy,
# scipy, matplotlib, OpenCV, tqdm, pytest, ninja and nvcc; no MuJoCo, smplx, PyTorch3D, iopath or gsplat, and no
# EGL loader), into .gpu/ (git-ignored, about 45 MB; carry it to the device with the working tree):
#   .gpu/whl/  wheels for that Python: mujoco (+ core, studio, glfw, PyOpenGL), smplx, iopath, gsplat (its CUDA
#              kernels are compiled there, at first import, by torch's JIT)
#   .gpu/py/   PyTorch3D's pure-Python modules (transforms, io, structures: what hmr imports), from .venv;
#              its compiled renderer is built for this machine's torch, so PyTorch3D CUDA is not in the bundle
#   .gpu/deb/  Debian's glvnd EGL / OpenGL loaders, for MuJoCo's MUJOCO_GL=egl
# scripts/gpu_env.sh installs the bundle there. Usage: bash scripts/gpu_bundle.sh  (after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}  # the device image's Python (KINDS.md)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/py .gpu/deb
tags=()
for n in 17 27 28 31 34; do tags+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${tags[@]}" --platform manylinux2014_x86_64 -d .gpu/whl \
  mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw==2.11.0 pyopengl==3.1.10 smplx==0.1.28 gsplat==1.5.3
.venv/bin/python -m pip wheel -q --no-deps -w .gpu/whl iopath==0.1.10  # source only on the registry; pure Python
site=$(.venv/bin/python -c "import pytorch3d, os; print(os.path.dirname(os.path.dirname(pytorch3d.__file__)))")
tar -C "$site" --exclude='_C*.so' --exclude='__pycache__' -cf - pytorch3d | tar -C .gpu/py -xf -
lists=$(mktemp -d)
apt="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
mkdir -p "$lists/partial"
# shellcheck disable=SC2086
apt-get $apt update -qq >/dev/null
# shellcheck disable=SC2086
(cd .gpu/deb && apt-get $apt download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
rm -rf "$lists"
du -sh .gpu .gpu/*
ls .gpu/whl .gpu/deb
