"""A 3D quadrotor: a rigid body on SO(3) driven by four rotor thrusts, with rotor drag and wind.

State x = [position (3), quaternion wxyz (4), world linear velocity (3), body angular velocity (3)],
MuJoCo's qpos/qvel of a free joint; input u = the four rotor thrusts [N]. `step` reproduces MuJoCo's
semi-implicit Euler step of the MJCF that `mjcf()` writes; the aerodynamic force
`drag * (wind - v)` is not expressible in MJCF, so a MuJoCo simulation applies `aero_force(x)` as
`xfrc_applied` on the body (see `envs.mujoco_sim`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from envs.mjcf import mjcf_document
from envs.physical import check_physical
from envs.rotation import quat_integrate, quat_z_axis
from metatune.errors import MetatuneError


class Quadrotor:
    """X-configuration quadrotor with tensor physical parameters ([] or [B]; wind [3] or [B, 3])."""

    DEFAULTS: dict[str, Any] = {"mass": 1.0, "ixx": 0.01, "iyy": 0.01, "izz": 0.018, "arm": 0.17,
                                "kq": 0.016, "drag": 0.1, "payload": 0.0, "wind": (0.0, 0.0, 0.0)}
    SPIN = (1.0, -1.0, 1.0, -1.0)  # rotor i turns so its drag torque about +z is SPIN[i] * kq * thrust

    def __init__(self, dtype: torch.dtype = torch.float64, dt: float | None = None, gravity: float = 9.81,
                 **physical_params: Any):
        unknown = sorted(set(physical_params) - set(self.DEFAULTS))
        if unknown:
            raise MetatuneError(f"quadrotor has no physical parameter(s) {unknown}; it has {sorted(self.DEFAULTS)}")
        self.name = "quadrotor"
        self.params: dict[str, Tensor] = {}
        for key, default in self.DEFAULTS.items():
            value = physical_params.get(key, default)
            self.params[key] = value if isinstance(value, Tensor) else torch.tensor(value, dtype=dtype)
        if self.params["wind"].shape[-1:] != (3,):
            raise MetatuneError(f"quadrotor wind must have a last dimension of 3, got {tuple(self.params['wind'].shape)}")
        check_physical("quadrotor", self.params)
        self.dt = float(dt or 0.01)
        self.gravity = float(gravity)
        self.nx, self.nu = 13, 4
        # torque = (u @ signs) * (arm / sqrt 2, arm / sqrt 2, kq): roll = +y arms, pitch = -x arms, yaw = SPIN
        self._torque_signs = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, -1.0], list(self.SPIN)],
                                          dtype=torch.float64).T  # [4, 3]
        self._gravity = torch.tensor([0.0, 0.0, self.gravity], dtype=torch.float64)

    def param(self, key: str, like: Tensor) -> Tensor:
        """Physical parameter `key` in the dtype and device of `like`."""
        return self.params[key].to(dtype=like.dtype, device=like.device)

    def rotor_positions(self, like: Tensor) -> Tensor:
        """Rotor positions in the body frame [..., 4, 3] (X configuration)."""
        arm = self.param("arm", like)
        angles = torch.tensor([math.pi / 4 + k * math.pi / 2 for k in range(4)], dtype=like.dtype,
                              device=like.device)
        return torch.stack([arm[..., None] * torch.cos(angles), arm[..., None] * torch.sin(angles),
                            torch.zeros_like(arm[..., None] * angles)], -1)

    def total_mass(self, like: Tensor) -> Tensor:
        return self.param("mass", like) + self.param("payload", like)

    def inertia(self, like: Tensor) -> Tensor:
        """Diagonal of the body inertia [..., 3]."""
        return torch.stack(torch.broadcast_tensors(self.param("ixx", like), self.param("iyy", like),
                                                   self.param("izz", like)), -1)

    def wrench(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Collective thrust [...] and body torque [..., 3] of rotor thrusts u [..., 4].

        Rotor k sits at arm (cos, sin)(pi/4 + k pi/2), so each torque is a signed sum of thrusts
        scaled by arm / sqrt(2) (roll, pitch) or kq (yaw): one small matmul, no per-step geometry.
        """
        arm = self.param("arm", u) / math.sqrt(2)
        scale = torch.stack(torch.broadcast_tensors(arm, arm, self.param("kq", u)), -1)
        return u.sum(-1), (u @ self._torque_signs.to(u)) * scale

    def aero_force(self, x: Tensor) -> Tensor:
        """World-frame aerodynamic force drag * (wind - v) [..., 3]."""
        return self.param("drag", x)[..., None] * (self.param("wind", x) - x[..., 7:10])

    def step(self, x: Tensor, u: Tensor, aero: Tensor | None = None) -> Tensor:
        """One MuJoCo-Euler step: x [..., 13], u [..., 4] -> x_next [..., 13].

        aero [..., 3]: the world-frame aerodynamic force, if not `aero_force(x)` (e.g. under gusts).
        """
        pos, quat, vel, omega = x[..., :3], x[..., 3:7], x[..., 7:10], x[..., 10:13]
        thrust, torque = self.wrench(u)
        m = self.total_mass(x)
        force = quat_z_axis(quat) * thrust[..., None] + (self.aero_force(x) if aero is None else aero)
        acc = force / m[..., None] - self._gravity.to(x)
        inertia = self.inertia(x)
        domega = (torque - torch.linalg.cross(omega, inertia * omega)) / inertia
        vel_next = vel + self.dt * acc
        omega_next = omega + self.dt * domega
        return torch.cat([pos + self.dt * vel_next, quat_integrate(quat, omega_next, self.dt),
                          vel_next, omega_next], -1)

    def hover_thrust(self, like: Tensor) -> Tensor:
        """Per-rotor thrust that holds the robot still in still air [...]."""
        return self.total_mass(like) * self.gravity / 4

    def mjcf(self, index: int | None = None) -> str:
        """The same quadrotor as MJCF (free body, four site motors; aero force left to xfrc_applied)."""
        p: dict[str, Any] = {}
        for k, v in self.params.items():
            v = v.detach().double()
            want = 1 if k == "wind" else 0
            if v.ndim > want:
                if index is None:
                    raise MetatuneError(f"quadrotor: parameter {k} is batched {tuple(v.shape)}; "
                                        "pass index= to write one robot's MJCF")
                v = v.reshape(-1, 3)[index] if k == "wind" else v.reshape(-1)[index]
            p[k] = v.tolist()
        arm = p["arm"]
        sites, motors = [], []
        for k in range(4):
            a = math.pi / 4 + k * math.pi / 2
            sites.append(f'      <site name="rotor{k}" pos="{arm * math.cos(a)!r} {arm * math.sin(a)!r} 0" size="0.01"/>')
            sites.append(f'      <geom type="cylinder" pos="{arm * math.cos(a)!r} {arm * math.sin(a)!r} 0.02" '
                         f'size="0.06 0.005" rgba="0.2 0.2 0.2 0.6"/>')
            motors.append(f'    <motor name="thrust{k}" site="rotor{k}" gear="0 0 1 0 0 {self.SPIN[k] * p["kq"]!r}"/>')
        mass, ixx, iyy, izz = p["mass"] + p["payload"], p["ixx"], p["iyy"], p["izz"]
        worldbody = "\n".join([
            '    <light pos="0 0 6" dir="0 0 -1"/>',
            '    <geom type="plane" size="6 6 0.1" rgba="0.9 0.9 0.9 1"/>',
            '    <body name="quadrotor" pos="0 0 1">',
            '      <freejoint name="root"/>',
            f'      <inertial pos="0 0 0" mass="{mass!r}" diaginertia="{ixx!r} {iyy!r} {izz!r}"/>',
            '      <geom type="box" size="0.06 0.06 0.02" rgba="0.3 0.4 0.8 1"/>',
            f'      <geom type="capsule" fromto="{-arm * 0.7071!r} {-arm * 0.7071!r} 0 {arm * 0.7071!r} {arm * 0.7071!r} 0" size="0.008"/>',
            f'      <geom type="capsule" fromto="{-arm * 0.7071!r} {arm * 0.7071!r} 0 {arm * 0.7071!r} {-arm * 0.7071!r} 0" size="0.008"/>',
            *sites,
            '    </body>'])
        return mjcf_document("quadrotor", self.dt, self.gravity, worldbody, "\n".join(motors))
