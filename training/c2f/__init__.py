"""Coarse-to-fine training on nnU-Net v2: convert -> plan -> train -> export (see README.md in this folder)."""
