"""Folder that ``nnUNet_extTrainer`` points at (installed as ``nnunet_diffusion_pretrain.ext_trainers``).

nnU-Net imports every module here by file name; each only re-exports the plugin's trainers.
"""
