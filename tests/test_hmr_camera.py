"""The camera's focal length: --focal, --fov, a photo's EXIF (35 mm equivalent or sensor resolution), default."""
import math

import numpy as np
from PIL import Image

from hmr.camera import focal_from_fov
from hmr.exif_focal import FOCAL_35MM, FOCAL_MM, PLANE_UNIT, PLANE_X_RES, exif_focal_px
from hmr.infer import image_focal


def _jpeg(path, tags: dict) -> None:
    img = Image.fromarray(np.full((300, 400, 3), 90, np.uint8))
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub.update(tags)
    img.save(path, exif=exif)


def test_focal_from_exif_fov_flags_and_default(tmp_path):
    _jpeg(tmp_path / "f35.jpg", {FOCAL_35MM: 28})
    assert math.isclose(exif_focal_px(tmp_path / "f35.jpg"), 28 / 36 * 400)
    _jpeg(tmp_path / "sensor.jpg", {FOCAL_MM: 4.0, PLANE_X_RES: 100.0, PLANE_UNIT: 4})   # 100 px per mm
    assert math.isclose(exif_focal_px(tmp_path / "sensor.jpg"), 400.0)
    _jpeg(tmp_path / "none.jpg", {})
    assert exif_focal_px(tmp_path / "none.jpg") is None
    assert image_focal(tmp_path / "f35.jpg", 400, 300) == (28 / 36 * 400, "exif")
    assert image_focal(tmp_path / "f35.jpg", 400, 300, focal=500.0) == (500.0, "--focal")
    f, src = image_focal(tmp_path / "f35.jpg", 400, 300, fov=90.0)
    assert src == "--fov" and math.isclose(f, 200.0) and math.isclose(focal_from_fov(90.0, 400, 300), 200.0)
    f, src = image_focal(tmp_path / "none.jpg", 400, 300)
    assert src.startswith("default") and math.isclose(f, 480.0, rel_tol=1e-6)   # 1.2 x 400
