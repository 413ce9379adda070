"""Perceptual barycenters of image sets (solver to come)."""
