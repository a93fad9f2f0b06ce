"""Write an example for `metatune hmr infer`: a rendered generated person, its BODY_25 and COCO-17 keypoints,
and the generated body model file.

    python scripts/hmr_make_example.py --out runs/hmr_example --people 2
    metatune hmr infer runs/hmr_example/image.png --keypoints runs/hmr_example/body25.json --out runs/hmr_example/fit
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hmr.body_model import BodyModel, generated_model_path  # noqa: E402
from hmr.demo import gradient_background  # noqa: E402
from hmr.keypoints import BODY25_TO_SMPLX, COCO17_TO_SMPLX, body25_json  # noqa: E402
from hmr.objective import global_rotation, unpack  # noqa: E402
from hmr.overlay import overlay  # noqa: E402
from hmr.synthetic import SyntheticConfig, make_people  # noqa: E402
from metatune.atomic import write_bytes, write_json, write_with


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/hmr_example"))
    ap.add_argument("--people", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    body = BodyModel.load()
    w, h = 640, 480
    people = make_people(body, args.people, args.seed, SyntheticConfig(min_width=w, max_width=w, missing=0.1,
                                                                     outliers=0, height_frac=(0.5, 0.7)))
    # One shared camera: place everyone side by side at their own depth.
    f = float(people.focal[0])
    for i in range(args.people):
        people.params[i, 82] = ((i + 0.5) / args.people - 0.5) * people.params[i, 84] * w / f
    o, p, b, t = unpack(people.params)
    with torch.no_grad():
        verts, joints = body(b, global_rotation(o), p)
    verts, joints = verts + t[:, None], joints + t[:, None]
    uv = f * joints[..., :2] / joints[..., 2:] + torch.tensor([w / 2, h / 2])
    img = overlay(gradient_background(w, h), verts, torch.as_tensor(body.faces), f, (w / 2, h / 2), opacity=1.0,
                  colours=np.array([[0.62, 0.70, 0.82]]))
    args.out.mkdir(parents=True, exist_ok=True)
    write_with(args.out / "image.png", lambda tmp: cv2.imwrite(str(tmp), img[..., ::-1]))
    g = torch.Generator().manual_seed(args.seed)
    kp25 = uv[:, BODY25_TO_SMPLX] + 2 * torch.randn(args.people, 25, 2, generator=g)
    write_json(args.out / "body25.json", body25_json(kp25, torch.ones(args.people, 25)), indent=None)
    kp17 = uv[:, COCO17_TO_SMPLX]
    anns = [{"image_id": 1, "category_id": 1, "num_keypoints": 17,
             "keypoints": torch.cat([kp17[i], torch.full((17, 1), 2.0)], 1).flatten().tolist()}
            for i in range(args.people)]
    write_json(args.out / "coco17.json", {"images": [{"id": 1, "width": w, "height": h}], "annotations": anns},
               indent=None)
    write_bytes(args.out / "SMPL_NEUTRAL_generated.pkl", generated_model_path().read_bytes())
    print(f"wrote {args.out}/image.png, body25.json, coco17.json, SMPL_NEUTRAL_generated.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
