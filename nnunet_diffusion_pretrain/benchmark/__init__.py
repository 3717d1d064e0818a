"""The label-efficiency benchmark behind ``nnUNetv2_diffusion_benchmark``."""
