#!/usr/bin/env bash
# Every CUDA path in one short run, with timings, for a machine with NVIDIA GPUs (nothing here runs on CPU only):
#   1. engine: MetaTuner meta-training and an adjoint rollout gradient on cuda
#   2. gsplat (pip install gsplat==1.5.3, the [cuda] extra) against our CPU rasterizer
#   3. PyTorch3D's CUDA mesh renderer
#   4. MuJoCo off-screen rendering with MUJOCO_GL=egl
#   5. 2-GPU meta-training under torchrun with nccl (skipped with fewer than 2 GPUs)
#   6. every domain's train and evaluate with --device cuda for a few steps (relight needs gsplat), and
#      tests/test_devices.py (those runs on the GPU against the CPU, and the demo's engine part on the GPU)
# Sized to stay under 5 minutes on one GPU once gsplat's kernels are built (not run yet: no GPU was lent to the
# sessions that wrote it).
# Usage: bash scripts/gpu_check.sh     (from the repository root, after make setup)
# On a lent machine (no .venv, no registry): bash scripts/gpu_bundle.sh here, then run this there with .gpu
# carried; scripts/gpu_env.sh installs the bundle for the image's python3 first. PyTorch3D's CUDA renderer is
# then skipped: our PyTorch3D build is for this machine's torch and Python.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || source scripts/gpu_env.sh
fail=0
logs=$(mktemp -d)
step() {  # name, command...: run it into its own log; print its wall time, status, and its indented lines (timings),
  local name=$1; shift  # or its last lines when it failed
  local log; log="$logs/$(echo "$name" | tr -c 'A-Za-z0-9.\n' '_').log"
  local t0; t0=$(date +%s%N)
  if "$@" >"$log" 2>&1; then status=ok; else status=FAILED; fail=1; fi
  local ds=$(( ($(date +%s%N) - t0) / 100000000 ))  # tenths of a second (no bc on every image)
  printf '[gpu_check] %-38s %4d.%d s  %s\n' "$name" $((ds / 10)) $((ds % 10)) "$status"
  if [ $status = ok ]; then grep -a -E '^  |passed|skipped|SKIPPED' "$log" | tail -n 20; else tail -n 25 "$log" | tr '\r' '\n' | tail -n 25; fi
}
export DEV=${GPU_CHECK_DEVICE:-cuda}  # GPU_CHECK_DEVICE=cpu rehearses every step that does not need CUDA, here
if [ "$DEV" = cuda ]; then
  "$PY" -c "import torch, sys; print('[gpu_check]', torch.cuda.device_count(), 'GPU(s):', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'); sys.exit(not torch.cuda.is_available())" \
    || { echo "[gpu_check] no CUDA device: nothing to check"; exit 1; }
else
  echo "[gpu_check] rehearsal on $DEV: the CUDA-only steps are left out"
fi

step "engine on $DEV" "$PY" - <<'PYEOF'
import os, time, torch, metatune as mt
dev = torch.device(os.environ["DEV"])
sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
curv = torch.linspace(0.1, 10, 64, device=dev)
gen = torch.Generator().manual_seed(0)
def sample(n): return [torch.randn(64, generator=gen).to(dev) for _ in range(n)]
def quad(x, c): return 0.5 * (curv * (x - c) ** 2).sum()
t = mt.MetaTuner(torch.zeros(64, device=dev), quad, sample_tasks=sample,
                 config=mt.MetaConfig(method="uncertainty", inner_steps=3, meta_batch=8))
t0 = time.perf_counter(); t.train(20, progress=False); sync()
print(f"  MetaTuner uncertainty, 20 steps x 8 tasks: {time.perf_counter() - t0:.2f} s")
def step(x, u): return torch.stack([x[..., 0] + 0.01 * x[..., 1], x[..., 1] + 0.01 * (u[..., 0] - torch.sin(x[..., 0]))], -1)
k = torch.tensor([1.0, 0.5], device=dev, requires_grad=True)
x0 = torch.randn(256, 2, device=dev)
t0 = time.perf_counter()
out = mt.rollout(step, x0, lambda x, t, k: -(k * x).sum(-1, keepdim=True), k, 1000, grad="adjoint",
                 cost=lambda x, u, t: (x ** 2).sum(-1), store_states=False)
out.cost.sum().backward(); sync()
print(f"  adjoint rollout gradient, batch 256 x 1000 steps: {time.perf_counter() - t0:.2f} s")
PYEOF
step "MuJoCo MUJOCO_GL=egl" env MUJOCO_GL=egl "$PY" - <<'PYEOF'
import time
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 3"/><geom type="sphere" size="0.3"/></worldbody></mujoco>')
d = mujoco.MjData(m); mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, 256, 256)
t0 = time.perf_counter(); r.update_scene(d); img = r.render(); r.close()
assert img.shape == (256, 256, 3) and img.max() > 0
print(f"  256x256 frame: {1000 * (time.perf_counter() - t0):.1f} ms")
PYEOF
# One-time builds, timed apart from the checks: gsplat's CUDA kernels (torch's JIT at first import, for this GPU's
# architecture only) and our fused CPU rasterizer, which the gsplat comparison also runs against.
gsplat=no
if [ "$DEV" = cuda ] && "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gsplat') is None)"; then
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
  export TORCH_CUDA_ARCH_LIST MAX_JOBS=${MAX_JOBS:-$(nproc)}
  gsplat=yes
  step "gsplat CUDA kernels (JIT build)" "$PY" -c "from gsplat.cuda._backend import _C; assert _C is not None, 'no build'"
fi
step "relight fused CPU kernel (build)" "$PY" -m relight.kernel --build
runs=$(mktemp -d)
step "robot train+evaluate --device $DEV" bash -c "\"$PY\" -m metatune robot train --task pendulum --horizon 50 \
  --robots-per-task 2 --steps 3 --out $runs/robot --device $DEV >/dev/null && \"$PY\" -m metatune robot evaluate \
  --checkpoint $runs/robot --robots 2 --steps 1 --backend mujoco --out $runs/robot_eval --device $DEV >/dev/null"
step "hmr train+evaluate --device $DEV" bash -c "\"$PY\" -m metatune hmr train --pretrain-steps 20 --steps 3 \
  --people 8 --train-pool 256 --calibration-people 16 --out $runs/hmr --device $DEV >/dev/null && \"$PY\" -m metatune \
  hmr evaluate --checkpoint $runs/hmr --people 16 --out $runs/hmr_eval --device $DEV >/dev/null"
if [ "$DEV" != cuda ] || [ $gsplat = yes ]; then
  step "relight train+evaluate --device $DEV" bash -c "\"$PY\" -m metatune relight generate --out $runs/scene \
    --resolution 32 >/dev/null && \"$PY\" -m metatune relight train --scene $runs/scene --resolution 32 --steps 20 \
    --meta-steps 2 --out $runs/relight --device $DEV >/dev/null && \"$PY\" -m metatune relight evaluate \
    --checkpoint $runs/relight --scene $runs/scene --out $runs/relight_eval --device $DEV >/dev/null"
else
  echo "[gpu_check] relight --device cuda: skipped (gsplat is not installed: .venv/bin/pip install -e '.[cuda]')"
fi
step "tests/test_devices.py -k on_cuda" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_devices.py -k on_cuda
rm -rf "$runs"
step "gsplat vs CPU rasterizer" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_relight_rasterize.py -k gsplat
if [ "$DEV" != cuda ]; then
  echo "[gpu_check] PyTorch3D CUDA renderer: left out (CUDA only)"
elif ! "$PY" -c "import pytorch3d.renderer" 2>/dev/null; then
  echo "[gpu_check] PyTorch3D CUDA renderer: skipped (no PyTorch3D build for this torch: the device bundle has its pure-Python part only)"
else
step "PyTorch3D CUDA renderer" "$PY" - <<'PYEOF'
import time, torch
from pytorch3d.renderer import (FoVPerspectiveCameras, MeshRasterizer, MeshRenderer, PointLights, RasterizationSettings,
                                SoftPhongShader, TexturesVertex, look_at_view_transform)
from pytorch3d.utils import ico_sphere
dev = torch.device("cuda")
mesh = ico_sphere(5, dev)
mesh.textures = TexturesVertex(torch.ones_like(mesh.verts_padded()))
R, T = look_at_view_transform(2.7, 0, 0)
cams = FoVPerspectiveCameras(device=dev, R=R, T=T)
r = MeshRenderer(MeshRasterizer(cams, RasterizationSettings(image_size=512)),
                 SoftPhongShader(device=dev, cameras=cams, lights=PointLights(device=dev)))
img = r(mesh); torch.cuda.synchronize(); t0 = time.perf_counter(); img = r(mesh); torch.cuda.synchronize()
assert img.shape == (1, 512, 512, 4) and float(img[..., 3].mean()) > 0.1
print(f"  512x512 Phong sphere: {1000 * (time.perf_counter() - t0):.1f} ms")
PYEOF
fi
if [ "$DEV" = cuda ] && [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  out=$(mktemp -d)
  cat > "$out/nccl.py" <<'PYEOF'
import torch, torch.distributed as dist
from metatune import distributed
distributed.init_from_env("cuda")
t = torch.full((4,), float(dist.get_rank() + 1), device="cuda")
distributed.all_reduce_sum([t])
assert torch.allclose(t, torch.full_like(t, 3.0)), t
distributed.shutdown()
PYEOF
  step "all-reduce, 2 GPUs (nccl)" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 "$out/nccl.py"
  step "robot train, torchrun x2 (nccl)" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m metatune \
    robot train --task pendulum --horizon 50 --robots-per-task 4 --steps 4 --out "$out/run" --device cuda
  rm -rf "$out"
else
  echo "[gpu_check] torchrun 2 GPUs: skipped (fewer than 2 GPUs)"
fi
[ -n "${OUT:-}" ] && tar -czf "$OUT/gpu_check_logs.tgz" -C "$logs" .  # the device tool brings $OUT back
rm -rf "$logs"
exit $fail
