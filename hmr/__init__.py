"""Human mesh recovery: SMPL bodies fitted to 2D keypoints by a meta-learned, uncertainty-aware
test-time optimisation on the metatune engine, with an SMPLify-style baseline (see docs/hmr.md)."""
