# Sourced by scripts/gpu_check.sh on a lent GPU machine, where there is no .venv and no registry: installs the
# bundle that scripts/gpu_bundle.sh made here (.gpu/, carried with the working tree) for the image's python3 into
# $GPU_SITE, and sets PY and PYTHONPATH. Our code is read from the working tree; the installed copy gives the
# `metatune.domains` entry points. Also usable here to rehearse it: PY_DEVICE=<a python> GPU_SITE=<a folder>.
GPU_SITE=${GPU_SITE:-/tmp/gpu_site}
GPU_BUNDLE=${GPU_BUNDLE:-.gpu}
PY=${PY_DEVICE:-python3}
[ -d "$GPU_BUNDLE/whl" ] || { echo "[gpu_env] no .venv and no bundle in $GPU_BUNDLE/: run scripts/gpu_bundle.sh on an online machine and carry .gpu" >&2; exit 1; }
if ! ldconfig -p | grep -q 'libEGL.so.1'; then  # glvnd's loaders; the NVIDIA driver brings the EGL vendor library
  for f in "$GPU_BUNDLE"/deb/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU_SITE" \
  "$GPU_BUNDLE"/whl/*.whl && cp -r "$GPU_BUNDLE"/py/. "$GPU_SITE"/ \
  && "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$GPU_SITE/self" . \
  || { echo "[gpu_env] installing the bundle for $PY failed (above)" >&2; exit 1; }
export PYTHONPATH="$PWD:$GPU_SITE:$GPU_SITE/self${PYTHONPATH:+:$PYTHONPATH}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYOPENGL_PLATFORM=$MUJOCO_GL
echo "[gpu_env] $("$PY" -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__)'); bundle in $GPU_SITE"
