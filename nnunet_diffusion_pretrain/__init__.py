"""Diffusion pretraining on unlabeled CT for nnU-Net v2 (Huang et al., arXiv 2402.15216)."""
__version__ = "0.10.1"
