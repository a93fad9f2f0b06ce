"""A humanoid body model in the SMPL file format, generated deterministically.

No SMPL file may be redistributed, so tests and the demo use this one: a mannequin of tubes
and an ellipsoid head (6890 vertices, the SMPL kinematic tree, skinning weights, a joint
regressor, 10 shape and 207 pose blend shapes). Landmark vertices (nose, eyes, ears, toes,
heels, fingertips) sit at the vertex ids smplx uses for SMPL, so its 45 joints mean the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

NUM_VERTS = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])

# Rest (T-pose) joint locations in metres; SMPL axes: +y up, +x the body's left, +z forward.
JOINTS = np.array([
    [0.00, 0.00, 0.00],    # 0 pelvis
    [0.09, -0.08, 0.00],   # 1 left hip
    [-0.09, -0.08, 0.00],  # 2 right hip
    [0.00, 0.11, 0.00],    # 3 spine1
    [0.10, -0.48, 0.01],   # 4 left knee
    [-0.10, -0.48, 0.01],  # 5 right knee
    [0.00, 0.24, 0.00],    # 6 spine2
    [0.10, -0.87, -0.02],  # 7 left ankle
    [-0.10, -0.87, -0.02],  # 8 right ankle
    [0.00, 0.31, 0.00],    # 9 spine3
    [0.10, -0.93, 0.10],   # 10 left foot (ball)
    [-0.10, -0.93, 0.10],  # 11 right foot
    [0.00, 0.50, 0.00],    # 12 neck
    [0.07, 0.43, 0.00],    # 13 left collar
    [-0.07, 0.43, 0.00],   # 14 right collar
    [0.00, 0.60, 0.01],    # 15 head
    [0.18, 0.44, 0.00],    # 16 left shoulder
    [-0.18, 0.44, 0.00],   # 17 right shoulder
    [0.44, 0.44, 0.00],    # 18 left elbow
    [-0.44, 0.44, 0.00],   # 19 right elbow
    [0.69, 0.44, 0.00],    # 20 left wrist
    [-0.69, 0.44, 0.00],   # 21 right wrist
    [0.77, 0.44, 0.00],    # 22 left hand
    [-0.77, 0.44, 0.00],   # 23 right hand
])
HEAD_CENTRE = np.array([0.0, 0.70, 0.01])
HEAD_RADII = np.array([0.085, 0.11, 0.10])


@dataclass
class _Mesh:
    """Vertices under construction, with what the blend shapes and skinning need per vertex."""
    verts: list = field(default_factory=list)       # [3] each
    faces: list = field(default_factory=list)       # [3] each
    weights: list = field(default_factory=list)     # [24] each
    radial: list = field(default_factory=list)      # [3] offset from the tube axis
    part: list = field(default_factory=list)        # "torso" | "limb" | "head"
    rings: dict = field(default_factory=dict)       # joint -> list of ring vertex ids centred on it

    def add(self, v: np.ndarray, w: np.ndarray, radial: np.ndarray, part: str) -> int:
        self.verts.append(v)
        self.weights.append(w)
        self.radial.append(radial)
        self.part.append(part)
        return len(self.verts) - 1


def _frame(axis: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = width - axis * (width @ axis)
    u = u / np.linalg.norm(u)
    return u, np.cross(axis, u)


def _one_hot(j: int) -> np.ndarray:
    w = np.zeros(NUM_JOINTS)
    w[j] = 1.0
    return w


def _tube(mesh: _Mesh, a: int, b: int, radii0: tuple, radii1: tuple, width: np.ndarray, rings: int,
          seg: int, part: str, skin, p0: np.ndarray | None = None, p1: np.ndarray | None = None,
          caps: bool = True) -> None:
    """A tapered elliptic tube from joint a to joint b; `skin(t) -> [24]` gives weights along it."""
    p0 = JOINTS[a] if p0 is None else p0
    p1 = JOINTS[b] if p1 is None else p1
    axis = (p1 - p0) / np.linalg.norm(p1 - p0)
    u, v = _frame(axis, width)
    ids = np.zeros((rings, seg), dtype=int)
    for i, t in enumerate(np.linspace(0.0, 1.0, rings)):
        centre = p0 + t * (p1 - p0)
        ru, rv = (1 - t) * np.array(radii0) + t * np.array(radii1)
        for k, ang in enumerate(np.linspace(0, 2 * np.pi, seg, endpoint=False)):
            off = ru * np.cos(ang) * u + rv * np.sin(ang) * v
            ids[i, k] = mesh.add(centre + off, skin(t), off, part)
    for i in range(rings - 1):
        for k in range(seg):
            k2 = (k + 1) % seg
            mesh.faces += [[ids[i, k], ids[i, k2], ids[i + 1, k2]], [ids[i, k], ids[i + 1, k2], ids[i + 1, k]]]
    if caps:
        for end, ring, sgn in ((p0, ids[0], -1.0), (p1, ids[-1], 1.0)):
            r = 0.5 * min(radii0 if sgn < 0 else radii1)
            c = mesh.add(end + sgn * r * axis, skin(0.0 if sgn < 0 else 1.0), sgn * r * axis, part)
            for k in range(seg):
                k2 = (k + 1) % seg
                mesh.faces.append([c, ring[k2], ring[k]] if sgn < 0 else [c, ring[k], ring[k2]])
    if np.allclose(p0, JOINTS[a]):
        mesh.rings.setdefault(a, []).append(ids[0])
    if np.allclose(p1, JOINTS[b]):
        mesh.rings.setdefault(b, []).append(ids[-1])


def _limb_skin(j: int, parent: int | None, child: int | None):
    """Weights along a bone driven by joint j, blended with its parent near the start and child near the end."""
    def skin(t: float) -> np.ndarray:
        w = _one_hot(j)
        if parent is not None and t < 0.25:
            w[parent] += 0.5 * (1 - t / 0.25)
        if child is not None and t > 0.75:
            w[child] += 0.5 * (t - 0.75) / 0.25
        return w / w.sum()
    return skin


def _torso_skin(y_lo: float, y_hi: float):
    """Weights up the torso, blending between the spine joints by height."""
    levels = np.array([JOINTS[0, 1], JOINTS[3, 1], JOINTS[6, 1], JOINTS[9, 1], JOINTS[12, 1]])
    joints = [0, 3, 6, 9, 12]

    def skin(t: float) -> np.ndarray:
        y = y_lo + t * (y_hi - y_lo)
        w = np.zeros(NUM_JOINTS)
        if y <= levels[0]:
            w[0] = 1.0
        elif y >= levels[-1]:
            w[12] = 1.0
        else:
            i = int(np.searchsorted(levels, y)) - 1
            s = (y - levels[i]) / (levels[i + 1] - levels[i])
            w[joints[i]], w[joints[i + 1]] = 1 - s, s
        return w
    return skin


def _head(mesh: _Mesh, lat: int, lon: int) -> None:
    ids = np.zeros((lat, lon), dtype=int)
    w = _one_hot(15)
    for i, th in enumerate(np.linspace(0, np.pi, lat + 2)[1:-1]):
        for k, ph in enumerate(np.linspace(0, 2 * np.pi, lon, endpoint=False)):
            off = HEAD_RADII * np.array([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)])
            ids[i, k] = mesh.add(HEAD_CENTRE + off, w, off, "head")
    top = mesh.add(HEAD_CENTRE + HEAD_RADII * [0, 1, 0], w, HEAD_RADII * [0, 1, 0], "head")
    bot = mesh.add(HEAD_CENTRE - HEAD_RADII * [0, 1, 0], w, -HEAD_RADII * [0, 1, 0], "head")
    for i in range(lat - 1):
        for k in range(lon):
            k2 = (k + 1) % lon
            mesh.faces += [[ids[i, k], ids[i + 1, k2], ids[i, k2]], [ids[i, k], ids[i + 1, k], ids[i + 1, k2]]]
    for k in range(lon):
        k2 = (k + 1) % lon
        mesh.faces += [[top, ids[0, k], ids[0, k2]], [bot, ids[-1, k2], ids[-1, k]]]


def _build_parts(head_lat: int) -> _Mesh:
    m = _Mesh()
    x, y, z = np.eye(3)
    torso_lo = np.array([0.0, -0.12, 0.0])
    torso_skin = _torso_skin(-0.12, 0.50)
    # Rings every centimetre up the torso, so that one is centred on each spine joint.
    _tube(m, 0, 12, (0.15, 0.10), (0.13, 0.08), x, 63, 32, "torso", torso_skin, p0=torso_lo)
    for j in (0, 3, 6, 9):
        i = int(round((JOINTS[j, 1] - torso_lo[1]) / 0.01))
        m.rings.setdefault(j, []).append(np.arange(i * 32, (i + 1) * 32))
    _tube(m, 12, 15, (0.045, 0.045), (0.05, 0.05), x, 6, 16, "limb", _limb_skin(12, 9, 15))
    for side, (hip, knee, ankle, foot, collar, sh, elb, wr, hand) in (
            (1, (1, 4, 7, 10, 13, 16, 18, 20, 22)), (-1, (2, 5, 8, 11, 14, 17, 19, 21, 23))):
        _tube(m, hip, knee, (0.075, 0.075), (0.052, 0.052), x, 18, 20, "limb", _limb_skin(hip, 0, knee))
        _tube(m, knee, ankle, (0.052, 0.052), (0.038, 0.038), x, 18, 20, "limb", _limb_skin(knee, hip, ankle))
        heel = JOINTS[ankle] + np.array([0.0, -0.06, -0.05])
        _tube(m, ankle, foot, (0.045, 0.035), (0.045, 0.028), x, 8, 16, "limb", _limb_skin(ankle, knee, foot),
              p0=heel)
        toe = JOINTS[foot] + np.array([0.0, -0.01, 0.07])
        _tube(m, foot, foot, (0.045, 0.028), (0.04, 0.02), x, 5, 16, "limb", _limb_skin(foot, ankle, None),
              p1=toe)
        _tube(m, collar, sh, (0.05, 0.05), (0.05, 0.05), z, 4, 12, "limb", _limb_skin(collar, 9, sh))
        _tube(m, sh, elb, (0.048, 0.048), (0.038, 0.038), z, 16, 18, "limb", _limb_skin(sh, collar, elb))
        _tube(m, elb, wr, (0.038, 0.038), (0.028, 0.028), z, 14, 18, "limb", _limb_skin(elb, sh, wr))
        _tube(m, wr, hand, (0.045, 0.015), (0.048, 0.015), z, 5, 16, "limb", _limb_skin(wr, elb, hand))
        tip = JOINTS[hand] + np.array([side * 0.09, 0.0, 0.0])
        _tube(m, hand, hand, (0.046, 0.013), (0.04, 0.01), z, 5, 16, "limb", _limb_skin(hand, wr, None), p1=tip)
    _head(m, head_lat, 40)
    return m


def _fill_to(m: _Mesh, n: int) -> None:
    """Reach exactly n vertices by splitting torso triangles at their centroids."""
    extra = n - len(m.verts)
    if extra < 0:
        raise ValueError(f"template has {len(m.verts)} vertices, more than {n}")
    torso_faces = [i for i, f in enumerate(m.faces) if m.part[f[0]] == "torso"]
    step = max(1, len(torso_faces) // max(extra, 1))
    for fi in torso_faces[::step][:extra]:
        a, b, c = m.faces[fi]
        v = (np.array(m.verts[a]) + m.verts[b] + m.verts[c]) / 3
        w = (np.array(m.weights[a]) + m.weights[b] + m.weights[c]) / 3
        r = (np.array(m.radial[a]) + m.radial[b] + m.radial[c]) / 3
        d = m.add(v, w, r, "torso")
        m.faces[fi] = [a, b, d]
        m.faces += [[b, c, d], [c, a, d]]


def _landmark_targets() -> dict[str, np.ndarray]:
    """Where each smplx landmark (nose, eyes, toes, fingertips...) lies on this mannequin."""
    c, r = HEAD_CENTRE, HEAD_RADII
    t = {"nose": c + [0, -0.01, r[2]], "reye": c + [-0.035, 0.02, r[2] * 0.9],
         "leye": c + [0.035, 0.02, r[2] * 0.9], "rear": c + [-r[0], 0, 0], "lear": c + [r[0], 0, 0]}
    for s, pre, foot in ((1, "L", 10), (-1, "R", 11)):
        tip = JOINTS[foot] + [0, -0.01, 0.09]
        t[pre + "BigToe"] = tip + [-s * 0.03, 0, 0]
        t[pre + "SmallToe"] = tip + [s * 0.035, 0, -0.01]
        t[pre + "Heel"] = JOINTS[foot - 3] + [0, -0.07, -0.09]
    for s, pre, hand in ((1, "l", 22), (-1, "r", 23)):
        tip = JOINTS[hand] + [s * 0.10, 0, 0]
        t[pre + "thumb"] = JOINTS[hand] + [-s * 0.02, 0, 0.05]
        for k, name in enumerate(("index", "middle", "ring", "pinky")):
            t[pre + name] = tip + [0, 0, 0.03 - 0.02 * k]
    return t


def generate_body_model() -> dict[str, np.ndarray]:
    """The arrays of an SMPL model file: v_template, f, weights, J_regressor, shapedirs, posedirs, kintree_table."""
    m = _build_parts(head_lat=26)
    _fill_to(m, NUM_VERTS)
    verts = np.array(m.verts)
    weights = np.array(m.weights)
    radial = np.array(m.radial)
    part = np.array(m.part)
    faces = np.array(m.faces)

    # Put each landmark's nearest vertex at the id smplx reads it from (a permutation).
    order = np.arange(NUM_VERTS)
    where = np.arange(NUM_VERTS)
    used: set[int] = set()
    for name, target_pos in _landmark_targets().items():
        d = np.linalg.norm(verts - target_pos, axis=1)
        d[list(used)] = np.inf
        src = int(np.argmin(d))
        used.add(src)
        dst = SMPLX_VERTEX_IDS["smplh"][name]
        pos = where[src]
        moved = order[dst]
        order[dst], order[pos] = src, moved
        where[src], where[moved] = dst, pos
    verts, weights, radial, part = verts[order], weights[order], radial[order], part[order]
    faces = where[faces]

    regressor = np.zeros((NUM_JOINTS, NUM_VERTS))
    for j in range(NUM_JOINTS):
        ids = np.concatenate([where[np.asarray(r)] for r in m.rings[j]])
        regressor[j, ids] = 1.0 / len(ids)

    return {
        "v_template": verts,
        "f": faces.astype(np.uint32),
        "weights": weights,
        "J_regressor": regressor,
        "shapedirs": _shape_blend_shapes(verts, radial, part),
        "posedirs": _pose_blend_shapes(weights, radial),
        "kintree_table": np.stack([np.where(PARENTS < 0, 2**32 - 1, PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64),
    }


def _shape_blend_shapes(v: np.ndarray,  # [V, 3]
                        radial: np.ndarray,  # [V, 3]
                        part: np.ndarray,  # [V]
                        ) -> np.ndarray:  # [V, 3, 10]
    """Ten linear shape directions: size, girth, leg, arm and torso length, widths, belly, head, limbs."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    limb, torso, head = part == "limb", part == "torso", part == "head"
    d = np.zeros((len(v), 3, NUM_BETAS))
    d[:, :, 0] = 0.05 * v
    d[:, :, 1] = 0.10 * radial * (~head)[:, None]
    legs = y < JOINTS[1, 1]
    d[legs, 1, 2] = 0.06 * (y[legs] - JOINTS[1, 1])
    arms = np.abs(x) > JOINTS[16, 0]
    d[arms, 0, 3] = 0.07 * (x[arms] - np.sign(x[arms]) * JOINTS[16, 0])
    d[:, 1, 4] = 0.06 * np.clip(y, 0.0, JOINTS[12, 1])
    d[:, 0, 5] = 0.03 * np.sign(x) * np.clip((y - 0.25) / 0.19, 0, 1)
    d[:, 0, 6] = 0.025 * np.sign(x) * np.clip((0.10 - y) / 0.18, 0, 1) * (y > -0.5)
    belly = torso & (z > 0)
    d[belly, 2, 7] = 0.04 * np.exp(-((y[belly] - 0.12) / 0.12) ** 2) * z[belly] / 0.10
    d[head, :, 8] = 0.10 * radial[head]
    d[:, :, 9] = 0.12 * radial * limb[:, None] - 0.06 * radial * torso[:, None]
    return d


def _pose_blend_shapes(weights: np.ndarray,  # [V, 24]
                       radial: np.ndarray,  # [V, 3]
                       ) -> np.ndarray:  # [V, 3, 207]
    """Bulges near bending joints: displacement along the surface normal driven by (R - I) diagonals."""
    normal = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
    d = np.zeros((len(weights), 3, 23 * 9))
    for j in range(1, NUM_JOINTS):
        blend = 4 * weights[:, j] * (1 - weights[:, j])   # 1 where skinning is split evenly, 0 off the joint
        for i in range(3):
            d[:, :, 9 * (j - 1) + 4 * i] = -0.015 * blend[:, None] * normal
    return d
