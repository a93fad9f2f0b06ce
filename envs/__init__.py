"""envs domain."""
