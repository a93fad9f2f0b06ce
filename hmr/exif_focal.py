"""The focal length in pixels a photo's EXIF data implies, when it has one."""
from __future__ import annotations

from pathlib import Path

FOCAL_35MM = 41989      # FocalLengthIn35mmFilm (mm): the full frame is 36 mm across its longer side
FOCAL_MM = 37386        # FocalLength (mm)
PLANE_X_RES = 41486     # FocalPlaneXResolution: sensor pixels per unit
PLANE_UNIT = 41488      # FocalPlaneResolutionUnit: 2 inch, 3 cm, 4 mm, 5 um
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
EXIF_IFD = 0x8769       # the sub-directory that holds the camera tags


def exif_focal_px(path: str | Path) -> float | None:
    """Focal length in pixels from EXIF: the 35 mm equivalent across the longer side, else the focal length
    times the sensor's resolution; None when the photo says neither."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            tags = {**dict(exif), **dict(exif.get_ifd(EXIF_IFD))}
            long_side = max(im.size)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    try:
        f35 = float(tags.get(FOCAL_35MM) or 0)
        if f35 > 0:
            return f35 / 36.0 * long_side
        f_mm, res = float(tags.get(FOCAL_MM) or 0), float(tags.get(PLANE_X_RES) or 0)
        unit = UNIT_MM.get(int(tags.get(PLANE_UNIT) or 2))
        if f_mm > 0 and res > 0 and unit:
            return f_mm * res / unit
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return None
