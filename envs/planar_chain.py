"""Planar serial chains (pendulum, cart-pole, acrobot, two-link arm) as batched torch dynamics.

The chain moves in MuJoCo's x-z plane: hinges turn about +y, the optional root slide runs along +x.
`step` reproduces MuJoCo's semi-implicit Euler step with implicit joint damping, so a chain and the
MJCF it writes (`mjcf()`) simulate the same trajectories.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from envs.mjcf import mjcf_document
from metatune.errors import MetatuneError


@dataclass(frozen=True)
class Link:
    """One body of the chain; a hinge link's frame sits at the tip of the hinge link before it."""

    name: str
    joint: str  # "hinge" (about +y) or "slide" (along +x; root only)
    actuated: bool


def _as(t: Tensor, like: Tensor) -> Tensor:
    return t.to(dtype=like.dtype, device=like.device)


def link_inertial(link: Link, p: dict[str, Tensor], like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Composite mass, centre-of-mass distance and inertia (about y) of a link with its tip payload."""
    m = _as(p[f"mass_{link.name}"], like)
    if link.joint == "slide":
        return m, torch.zeros_like(m), torch.zeros_like(m)
    c = _as(p[f"com_{link.name}"], like)
    inertia = _as(p[f"inertia_{link.name}"], like)
    mp = _as(p[f"payload_{link.name}"], like)
    length = _as(p[f"length_{link.name}"], like)
    mt = m + mp
    ct = (m * c + mp * length) / mt
    it = inertia + m * (c - ct) ** 2 + mp * (length - ct) ** 2
    return mt, ct, it


class PlanarChain:
    """A planar chain with tensor physical parameters (each [] or [B], broadcast over the batch).

    Per link i the parameters are `mass_i`, `com_i` (centre of mass along the link's -z axis at
    angle 0, i.e. hanging down), `inertia_i` (about the centre of mass, about y), `length_i`,
    `damping_i` and `payload_i` (a point mass at the link's tip). A slide link has mass and damping
    only. State x = [qpos, qvel] in MuJoCo's order; input u = actuated joint forces.
    """

    def __init__(self, name: str, links: list[Link], params: dict[str, Tensor], dt: float,
                 gravity: float = 9.81):
        self.name = name
        self.links = links
        self.params = params
        self.dt = float(dt)
        self.gravity = float(gravity)
        self.nq = len(links)
        self.nx = 2 * self.nq
        self.actuated = [i for i, l in enumerate(links) if l.actuated]
        self.nu = len(self.actuated)
        if links[0].joint not in ("hinge", "slide") or any(l.joint != "hinge" for l in links[1:]):
            raise MetatuneError(f"{name}: only a root slide followed by hinges is supported")

    def inertial(self, i: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mass, centre of mass distance (along -z of the link frame), inertia about it."""
        return link_inertial(self.links[i], self.params, like)

    def _offset(self, i: int, like: Tensor) -> Tensor:
        """Distance from link i-1's frame to link i's frame along link i-1's -z axis."""
        if i == 0 or self.links[i - 1].joint == "slide":
            return torch.zeros((), dtype=like.dtype, device=like.device)
        return _as(self.params[f"length_{self.links[i - 1].name}"], like)

    # -- dynamics -------------------------------------------------------------------------------
    def _mass_bias(self, q: Tensor, qd: Tensor) -> tuple[Tensor, Tensor]:
        """Mass matrix [..., n, n] and bias forces (Coriolis + gravity) [..., n] from Kane's equations."""
        n = self.nq
        batch = q.shape[:-1]
        zeros = q.new_zeros(batch)
        # frame origin o (x, z), its velocity Jacobian Jo [..., 2, n], bias acceleration ao,
        # angle phi, angular velocity w, angular Jacobian (a 0/1 row).
        ox, oz = zeros, zeros
        jo = q.new_zeros(*batch, 2, n)
        aox, aoz = zeros, zeros
        phi, w = zeros, zeros
        jphi = q.new_zeros(n)
        mass = q.new_zeros(*batch, n, n)
        bias = q.new_zeros(*batch, n)
        for i, link in enumerate(self.links):
            # move to this link's frame origin: a point at distance d along the parent's -z
            d = self._offset(i, q)
            rx, rz = -d * torch.sin(phi), -d * torch.cos(phi)
            # R(phi) (0, -d) with R = [[c, s], [-s, c]]: (-d s, -d c); w x r = w (rz, -rx)
            jo = jo + torch.stack([rz, -rx], -1)[..., None] * jphi
            aox, aoz = aox - w * w * rx, aoz - w * w * rz
            ox, oz = ox + rx, oz + rz
            onehot = q.new_zeros(n)
            onehot[i] = 1.0
            if link.joint == "slide":
                jo = jo + torch.stack([onehot, torch.zeros_like(onehot)], 0)
            else:
                phi, w = phi + q[..., i], w + qd[..., i]
                jphi = jphi + onehot
            m, c, inertia = self.inertial(i, q)
            cx, cz = -c * torch.sin(phi), -c * torch.cos(phi)
            jc = jo + torch.stack([cz, -cx], -1)[..., None] * jphi
            acx, acz = aox - w * w * cx, aoz - w * w * cz
            mass = mass + m[..., None, None] * jc.transpose(-1, -2) @ jc
            mass = mass + inertia[..., None, None] * jphi[:, None] * jphi[None, :]
            acc = torch.stack([acx, acz + self.gravity], -1)  # bias accel minus gravity (g along -z)
            bias = bias + m[..., None] * (jc.transpose(-1, -2) @ acc.unsqueeze(-1)).squeeze(-1)
        return mass, bias

    def damping(self, like: Tensor) -> Tensor:
        """Joint damping [..., n] (broadcast shape of the parameters)."""
        ds = [_as(self.params[f"damping_{l.name}"], like) for l in self.links]
        return torch.stack(torch.broadcast_tensors(*ds), -1)

    def forces(self, u: Tensor) -> Tensor:
        """Generalised forces [..., n] from the inputs u [..., nu]."""
        select = u.new_zeros(self.nu, self.nq)
        select[range(self.nu), self.actuated] = 1.0
        return u @ select

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """One MuJoCo-Euler step: x [..., 2n], u [..., nu] -> x_next [..., 2n]."""
        n = self.nq
        q, qd = x[..., :n], x[..., n:]
        mass, bias = self._mass_bias(q, qd)
        damp = self.damping(x)
        f = self.forces(u) - bias - damp * qd
        # MuJoCo's Euler integrator treats joint damping implicitly: (M + h D) qacc = f
        lhs = mass + self.dt * torch.diag_embed(damp).expand_as(mass)
        qdd = torch.linalg.solve(lhs, f.unsqueeze(-1)).squeeze(-1)
        qd_next = qd + self.dt * qdd
        return torch.cat([q + self.dt * qd_next, qd_next], -1)

    def energy(self, x: Tensor) -> Tensor:
        """Kinetic + potential energy [...], for the swing-up reference and tests."""
        n = self.nq
        q, qd = x[..., :n], x[..., n:]
        mass, _ = self._mass_bias(q, torch.zeros_like(qd))
        kinetic = 0.5 * (qd.unsqueeze(-2) @ mass @ qd.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return kinetic + self.potential(q)

    def potential(self, q: Tensor) -> Tensor:
        """Gravitational potential energy [...] (zero at the origin's height)."""
        phi = q.new_zeros(q.shape[:-1])
        oz = q.new_zeros(q.shape[:-1])
        total = q.new_zeros(q.shape[:-1])
        for i, link in enumerate(self.links):
            oz = oz - self._offset(i, q) * torch.cos(phi)
            if link.joint == "hinge":
                phi = phi + q[..., i]
            m, c, _ = self.inertial(i, q)
            total = total + m * self.gravity * (oz - c * torch.cos(phi))
        return total

    # -- MJCF -----------------------------------------------------------------------------------
    def scalar_params(self, index: int | None = None) -> dict[str, float]:
        """Physical parameters as floats (element `index` of batched parameters)."""
        out = {}
        for k, v in self.params.items():
            v = v.detach()
            if v.ndim > 0:
                if index is None:
                    raise MetatuneError(f"{self.name}: parameter {k} is batched {tuple(v.shape)}; "
                                        "pass index= to write one robot's MJCF")
                v = v.reshape(-1)[index]
            out[k] = float(v)
        return out

    def mjcf(self, index: int | None = None) -> str:
        """The same chain as an MJCF string (Euler integrator, no contact, unlimited motors)."""
        p = self.scalar_params(index)
        like = torch.zeros((), dtype=torch.float64)
        body_xml: list[str] = []
        closing: list[str] = []
        for i, link in enumerate(self.links):
            pad = "  " * (i + 2)
            pos = 0.0 if i == 0 or self.links[i - 1].joint == "slide" else p[f"length_{self.links[i - 1].name}"]
            body_xml.append(f'{pad}<body name="{link.name}" pos="0 0 {-pos!r}">')
            damping = p[f"damping_{link.name}"]
            if link.joint == "slide":
                m = p[f"mass_{link.name}"]
                body_xml.append(f'{pad}  <joint name="{link.name}" type="slide" axis="1 0 0" damping="{damping!r}"/>')
                body_xml.append(f'{pad}  <inertial pos="0 0 0" mass="{m!r}" diaginertia="1e-3 1e-3 1e-3"/>')
                body_xml.append(f'{pad}  <geom type="box" size="0.15 0.1 0.06" rgba="0.3 0.5 0.8 1"/>')
            else:
                sub = {k: torch.tensor(v, dtype=torch.float64) for k, v in p.items()}
                m, c, inertia = (float(t) for t in link_inertial(link, sub, like))
                length = p[f"length_{link.name}"]
                body_xml.append(f'{pad}  <joint name="{link.name}" type="hinge" axis="0 1 0" damping="{damping!r}"/>')
                body_xml.append(f'{pad}  <inertial pos="0 0 {-c!r}" mass="{m!r}" '
                                f'diaginertia="{inertia!r} {inertia!r} {inertia!r}"/>')
                body_xml.append(f'{pad}  <geom type="capsule" fromto="0 0 0 0 0 {-length!r}" size="0.03" '
                                f'rgba="0.8 0.5 0.2 1"/>')
                body_xml.append(f'{pad}  <geom type="sphere" pos="0 0 {-length!r}" size="0.05" rgba="0.9 0.2 0.2 1"/>')
            closing.insert(0, f"{pad}</body>")
        motors = "\n".join(f'    <motor name="{self.links[i].name}_motor" joint="{self.links[i].name}" gear="1"/>'
                           for i in self.actuated)
        worldbody = "\n".join(['    <light pos="0 -1 4" dir="0 0.3 -1"/>',
                               '    <geom type="plane" size="4 4 0.1" pos="0 0 -2.5" rgba="0.9 0.9 0.9 1"/>',
                               *body_xml, *closing])
        return mjcf_document(self.name, self.dt, self.gravity, worldbody, motors)
