"""The MJCF document every torch robot writes: the shared preamble that makes MuJoCo step as the torch models do."""
from __future__ import annotations


def mjcf_document(name: str, dt: float, gravity: float, worldbody: str, actuators: str) -> str:
    """A whole MJCF model around the robot's worldbody and actuator lines.

    The preamble is what the torch models assume: MuJoCo's semi-implicit Euler at time step dt, gravity
    along -z, contacts off, and geoms that are visual only (no collision, no mass: inertia comes from
    each body's <inertial>). Angles are in radians.
    """
    return f"""<mujoco model="{name}">
  <compiler angle="radian"/>
  <option timestep="{dt!r}" gravity="0 0 {-gravity!r}" integrator="Euler">
    <flag contact="disable"/>
  </option>
  <default><geom contype="0" conaffinity="0" mass="0"/></default>
  <worldbody>
{worldbody}
  </worldbody>
  <actuator>
{actuators}
  </actuator>
</mujoco>
"""
