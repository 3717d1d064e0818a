"""Re-exports the plugin's trainer classes for nnU-Net's trainer lookup; no code of its own."""
from nnunet_diffusion_pretrain.training import *  # noqa: F401,F403
