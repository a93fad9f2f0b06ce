"""An SMPL-X-format model file built from SMPL-format arrays, for tests and users without SMPL-X files.

Official SMPL-X files cannot be redistributed, so the loader and the fit are exercised on this
rearrangement of the generated body: 10475 vertices (the SMPL vertices, moved so smplx's SMPL-X
landmark ids name the same points, then padded with copies), 55 joints (the 22 body joints, jaw,
eyes and 30 finger joints), flat hands, no expression directions and 51 face landmarks on the head.
With hands, jaw and eyes at rest it poses exactly like the SMPL body it came from.
"""
from __future__ import annotations

import numpy as np
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

NUM_VERTS_SMPLX = 10475
NUM_JOINTS_SMPLX = 55
LEFT_FINGERS, RIGHT_FINGERS = 25, 40   # first finger joint of each hand (index1); middle1 is 3 further
HEAD, JAW = 15, 22


def smplx_parents() -> np.ndarray:  # [55]
    """SMPL-X's kinematic tree: SMPL's first 22 joints, jaw and eyes on the head, 3-joint fingers on the wrists."""
    body = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
    face = [HEAD, HEAD, HEAD]
    left = [20 if i % 3 == 0 else LEFT_FINGERS + i - 1 for i in range(15)]
    right = [21 if i % 3 == 0 else RIGHT_FINGERS + i - 1 for i in range(15)]
    return np.array(body + face + left + right)


def vertex_order(num_smpl: int) -> np.ndarray:  # [10475] SMPL vertex shown at each SMPL-X vertex id
    """Landmark vertices go to smplx's SMPL-X ids; the rest follow in order, then repeat to fill 10475."""
    order = np.full(NUM_VERTS_SMPLX, -1)
    smpl_ids, smplx_ids = SMPLX_VERTEX_IDS["smplh"], SMPLX_VERTEX_IDS["smplx"]
    for name, i in smplx_ids.items():
        order[i] = smpl_ids[name]
    rest = np.setdiff1d(np.arange(num_smpl), order[order >= 0])
    free = np.flatnonzero(order < 0)
    order[free] = np.resize(rest, len(free))   # each SMPL vertex once, then copies
    return order


def smplx_arrays(smpl: dict) -> dict[str, np.ndarray]:
    """SMPL-X file arrays (as in SMPLX_NEUTRAL.npz) from SMPL-format arrays with 24 joints."""
    v = np.asarray(smpl["v_template"])
    order = vertex_order(v.shape[0])
    first = np.zeros(v.shape[0], dtype=np.int64)    # where each SMPL vertex first appears
    first[order[::-1]] = np.arange(NUM_VERTS_SMPLX)[::-1]
    faces = first[np.asarray(smpl["f"], dtype=np.int64)]

    jreg = np.asarray(smpl["J_regressor"].todense() if hasattr(smpl["J_regressor"], "todense")
                      else smpl["J_regressor"])
    # Body rows as in SMPL; the face joints sit at the head; every finger joint at its hand joint, where
    # SMPL's hand joint is, so the middle finger's root can carry the SMPL hand's skinning weights.
    rows = list(range(22)) + [HEAD] * 3 + [22] * 15 + [23] * 15
    regressor = np.zeros((NUM_JOINTS_SMPLX, len(order)))
    regressor[:, first] = jreg[rows]            # copies get no weight, so nothing is counted twice
    weights = np.zeros((len(order), NUM_JOINTS_SMPLX))
    w = np.asarray(smpl["weights"])[order]
    weights[:, :22] = w[:, :22]
    weights[:, LEFT_FINGERS + 3] = w[:, 22]
    weights[:, RIGHT_FINGERS + 3] = w[:, 23]

    posedirs = np.zeros((len(order), 3, (NUM_JOINTS_SMPLX - 1) * 9))
    posedirs[..., :21 * 9] = np.asarray(smpl["posedirs"])[order][..., :21 * 9]   # body correctives kept
    shapedirs = np.zeros((len(order), 3, 20))                                    # 10 shape + 10 expression
    shapedirs[..., :10] = np.asarray(smpl["shapedirs"])[order][..., :10]

    head_faces = np.argsort(-v[order][faces].mean(1)[:, 1])[:51]               # the 51 highest faces
    parents = smplx_parents()
    return {
        "v_template": v[order], "f": faces, "J_regressor": regressor, "weights": weights,
        "kintree_table": np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(NUM_JOINTS_SMPLX)]),
        "posedirs": posedirs, "shapedirs": shapedirs,
        "hands_componentsl": np.eye(45), "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45), "hands_meanr": np.zeros(45),
        "lmk_faces_idx": np.sort(head_faces), "lmk_bary_coords": np.full((51, 3), 1 / 3),
    }
