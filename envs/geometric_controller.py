"""The quadrotor geometric tracking controller on SE(3) with a disturbance observer, tunable gains.

Gains (log scale, so they stay positive) are [K, G]: K knots of a time schedule (K = 1: constant)
and G = 4 gains (position kx, velocity kv, attitude kR, rate kW) or 5 with the observer gain L.
Gains are normalised by the nominal mass and inertia, so kx, kv are in 1/s^2, 1/s, like a PD's, and
smoothly kept between floors and caps chosen so that the discrete loop never diverges numerically (every
corner of the gain box stays finite, though some track badly): no adaptation step can produce a NaN.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from envs.figure_eight import FigureEight
from envs.gain_schedule import scheduled
from envs.quadrotor import Quadrotor
from envs.rotation import quat_to_matrix, vee

GAIN_NAMES = ("kx", "kv", "kR", "kW", "L")
HAND_SET = (9.0, 6.0, 400.0, 40.0, 5.0)  # critically damped at 3 rad/s (position), 20 rad/s (attitude)
# Gain floors, a third of the hand-set gains: without rate damping (kW -> 0) a stiff attitude loop under a
# stiff position loop diverges, and an adaptation step must not be able to get there.
FLOORS = tuple(g / 3 for g in HAND_SET)


def default_log_gains(knots: int = 1, observer: bool = True, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> Tensor:
    """The hand-set gains as a log-gain schedule [knots, 4 or 5]."""
    g = torch.tensor(HAND_SET[: 5 if observer else 4], dtype=dtype, device=device).log()
    return g.expand(knots, -1).clone()


def saturate(gains: Tensor, limits: Tensor, floors: Tensor | None = None) -> Tensor:  # [..., G], [G], [G]
    """Smoothly keep gains between floors and limits: about the identity well inside, never outside."""
    if floors is not None:
        gains = (gains ** 2 + floors ** 2).sqrt()
    return gains / (1 + (gains / limits) ** 4) ** 0.25


def discrete_limits(dt: float, observer: bool) -> Tensor:
    """Gain caps [G] for the explicit time step: with every gain at its cap the loop stays stable."""
    caps = (0.015 / dt ** 2, 0.4 / dt, 0.3 / dt ** 2, 1.0 / dt, 0.5 / dt)  # with FLOORS: all 32 corners finite at dt 0.02
    return torch.tensor(caps[: 5 if observer else 4], dtype=torch.float64)


class GeometricController:
    """Lee-Leok-McClamroch tracking control of a figure-eight, mixed to four rotor thrusts.

    The policy reads the augmented state [quadrotor (13), observer state z (3), clock (1)] and returns
    [rotor thrusts (4), dz/dt (3)]; `ClosedLoopQuadrotor.step` integrates the observer with the robot.
    """

    def __init__(self, nominal: Quadrotor, reference: FigureEight, horizon: int, observer: bool = True,
                 device: torch.device | str = "cpu"):
        """device: where the controller's constants live (that of the states it will be called on)."""
        self.nominal, self.reference, self.horizon, self.observer = nominal, reference, horizon, observer
        like = torch.zeros((), dtype=torch.float64, device=device)
        self.mass = float(nominal.total_mass(like))
        self.inertia = nominal.inertia(like)
        r = nominal.rotor_positions(like)
        spin = torch.tensor(Quadrotor.SPIN, dtype=torch.float64, device=device)
        mixer = torch.stack([torch.ones(4, dtype=torch.float64, device=device), r[:, 1], -r[:, 0],
                             nominal.param("kq", like) * spin])
        self.unmix = torch.linalg.inv(mixer)  # [4, 4]: (thrust, torque) -> rotor thrusts
        self.gravity = nominal.gravity
        self.limits = discrete_limits(nominal.dt, observer).to(device)
        self.floors = torch.tensor(FLOORS[: 5 if observer else 4], dtype=torch.float64, device=device)
        self.e3 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device)
        self.b1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=device)  # desired heading: body x

    def __call__(self, x: Tensor, t: int | Tensor, log_gains: Tensor) -> Tensor:  # [..., 17], [..., K, G] -> [..., 7]
        dtype = x.dtype
        g = saturate(scheduled(log_gains, t, self.horizon).to(dtype), self.limits.to(dtype), self.floors.to(dtype))
        kx, kv, k_r, k_w = g[..., 0:1], g[..., 1:2], g[..., 2:3], g[..., 3:4]
        pos, quat, vel, omega, z = x[..., :3], x[..., 3:7], x[..., 7:10], x[..., 10:13], x[..., 13:16]
        time = x[..., 16]
        p_d, v_d, a_d = self.reference(time)
        m, e3 = self.mass, self.e3.to(dtype)
        d_hat = z + g[..., 4:5] * m * vel if self.observer else torch.zeros_like(vel)
        force = m * (-kx * (pos - p_d) - kv * (vel - v_d) + self.gravity * e3 + a_d) - d_hat
        rot = quat_to_matrix(quat)
        b3 = force / force.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        b1c = self.b1.to(dtype).expand_as(b3)
        b2 = torch.linalg.cross(b3, b1c)
        b2 = b2 / b2.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        rot_d = torch.stack([torch.linalg.cross(b2, b3), b2, b3], -1)
        thrust = (force * rot[..., :, 2]).sum(-1)
        rel = rot_d.transpose(-1, -2) @ rot  # e_R = vee(rel - rel^T) / 2
        e_r = 0.5 * vee(rel - rel.transpose(-1, -2))
        inertia = self.inertia.to(dtype)
        torque = inertia * (-k_r * e_r - k_w * omega) + torch.linalg.cross(omega, inertia * omega)
        u = torch.cat([thrust[..., None], torque], -1) @ self.unmix.to(dtype).T
        if self.observer:  # dz/dt = -L d_hat - L (thrust force + m g): then d(d_hat)/dt = L (d - d_hat)
            applied = rot[..., :, 2] * u.sum(-1, keepdim=True) - m * self.gravity * e3
            dz = -g[..., 4:5] * (d_hat + applied)
        else:
            dz = torch.zeros_like(vel)
        return torch.cat([u, dz], -1)


class ClosedLoopQuadrotor:
    """The quadrotor plus observer state and a clock: step(x [..., 17], u [..., 7]) -> [..., 17].

    Wind is `wind + gust * sin(2 pi gust_hz t + phase)` per axis (gust, phase: [..., 3]).
    """

    def __init__(self, quad: Quadrotor, gust: Tensor, gust_hz: Tensor | float, phase: Tensor):
        self.quad, self.gust, self.gust_hz, self.phase = quad, gust, gust_hz, phase
        self.dt, self.nx, self.nu = quad.dt, 17, 7

    def wind(self, time: Tensor) -> Tensor:  # [...] -> [..., 3]
        base = self.quad.params["wind"].to(time.dtype)
        return base + self.gust.to(time.dtype) * torch.sin(2 * math.pi * self.gust_hz * time[..., None]
                                                           + self.phase.to(time.dtype))

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        quad = self.quad
        wind = self.wind(x[..., 16])
        aero = quad.param("drag", x)[..., None] * (wind - x[..., 7:10])
        nxt = quad.step(x[..., :13], u[..., :4], aero=aero)
        return torch.cat([nxt, x[..., 13:16] + self.dt * u[..., 4:7], x[..., 16:17] + self.dt], -1)
