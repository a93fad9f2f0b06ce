"""The fast overlay (a painter's algorithm at full resolution) against PyTorch3D's rasteriser, the reference."""
import numpy as np
import torch

from hmr.body_model import BodyModel
from hmr.objective import global_rotation, unpack
from hmr.overlay import overlay, paint_mesh, render_mesh
from hmr.synthetic import SyntheticConfig, make_people


def test_painted_silhouette_and_depth_order_match_pytorch3d():
    body = BodyModel.load()
    people = make_people(body, 2, seed=5, cfg=SyntheticConfig(min_width=400, max_width=480))
    faces = torch.as_tensor(body.faces)
    for i in range(2):
        o, p, b, t = unpack(people.params[i:i + 1])
        with torch.no_grad():
            verts = body(b, global_rotation(o), p)[0][0] + t[0]
        w, h, f = int(people.width[i]), int(people.height[i]), float(people.focal[i])
        k = torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
        _, ref = render_mesh(verts, faces, k, w, h, np.ones(3))
        fast = (paint_mesh(verts, faces, f, (w / 2, h / 2), w, h, np.ones(3))[1] > 0.5).astype(np.float32)
        inter, union = (ref * fast).sum(), np.maximum(ref, fast).sum()
        assert ref.sum() > 500 and inter / union > 0.97, (i, inter / union)
    # the nearer of two meshes is drawn on top: a far red body behind a near green one
    o, p, b, t = unpack(people.params[:1])
    with torch.no_grad():
        verts = body(b, global_rotation(o), p)[0][0] + t[0]
    w, h, f = int(people.width[0]), int(people.height[0]), float(people.focal[0])
    both = torch.stack([verts * 1.0, verts + torch.tensor([0.0, 0.0, 1.0])])   # same place, one 1 m further
    img = overlay(np.zeros((h, w, 3), np.uint8), both, faces, f, (w / 2, h / 2), opacity=1.0,
                  colours=np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    near = paint_mesh(both[0], faces, f, (w / 2, h / 2), w, h, np.ones(3))[1] == 1   # fully covered by it
    far = paint_mesh(both[1], faces, f, (w / 2, h / 2), w, h, np.ones(3))[1] == 1
    assert (near & far).sum() > 500
    assert (img[near][:, 0] == 0).all() and (img[near][:, 1] > 0).all()
    assert (img[far & ~near][:, 0] > 0).all()
