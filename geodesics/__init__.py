"""Discrete perceptual geodesics between images (solver to come)."""
