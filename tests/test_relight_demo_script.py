"""The demos: scripts/relight_demo.py (turntable video, side-by-side image) and the `metatune demo` relight part."""
import importlib.util
import json
from pathlib import Path

import cv2

from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
from relight.scene_layout import LayoutConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "relight_demo.py"


def test_demo_script_writes_video_side_by_side_and_metrics(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("relight_demo", SCRIPT)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "demo"
    tiny = LayoutConfig(resolution=16, n_cameras=6, train_lights=3, test_lights=2, views_per_light=2)
    generate_mujoco_scene(out / "scene", MujocoSceneConfig("glossy", tiny, n_points=200))  # the script reuses it
    assert demo.main(["--out", str(out), "--resolution", "16", "--steps", "2", "--meta-steps", "1",
                      "--frames", "4"]) == 0
    video = cv2.VideoCapture(str(out / "turntable.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and video.read()[1].shape == (64, 64, 3)
    video.release()
    metrics = json.loads((out / "test_metrics.json").read_text())
    side = cv2.imread(str(out / "side_by_side.png"))
    assert side.shape == (metrics["frames"] * 16 * 2, 3 * 16 * 2, 3)  # rows: ground truth | prediction | error
    assert len(list((out / "test_pred").rglob("*.png"))) == metrics["frames"]
    assert json.loads(capsys.readouterr().out)["ood_psnr"] == metrics["psnr"]
    assert demo.main(["--out", str(tmp_path / "bad"), "--preset", "nonsense"]) == 2


def test_metatune_demo_part_writes_images_and_metrics(tmp_path):
    from relight.demo import DemoConfig, run_demo
    cfg = DemoConfig(resolution=16, train_lights=3, test_lights=2, views_per_light=2, points=200, fit_steps=2,
                     meta_steps=1)
    summary = run_demo(tmp_path / "relight", cfg)
    metrics = json.loads((tmp_path / "relight" / "metrics.json").read_text())
    assert summary["ood_psnr_meta"] == metrics["meta"]["ood_psnr"] and "plain" in metrics
    for method in ("meta", "plain"):
        assert len(list((tmp_path / "relight" / f"pred_{method}").rglob("*.png"))) == 2 * 2  # test lights x views
    assert cv2.imread(str(tmp_path / "relight" / "comparison_meta.png")).shape == (2 * 16 * 2, 3 * 16 * 2, 3)
