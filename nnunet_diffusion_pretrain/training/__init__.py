"""The plugin's nnU-Net trainer classes (found by stock commands through ``nnUNet_extTrainer``)."""
from nnunet_diffusion_pretrain.training.diffusion_pretrain_trainer import (
    nnUNetTrainerDiffusionPretrain, nnUNetTrainerDiffusionPretrain_cosine, nnUNetTrainerDiffusionPretrain_cosine_vpred,
    nnUNetTrainerDiffusionPretrain_vpred)

__all__ = ["nnUNetTrainerDiffusionPretrain", "nnUNetTrainerDiffusionPretrain_cosine",
           "nnUNetTrainerDiffusionPretrain_vpred", "nnUNetTrainerDiffusionPretrain_cosine_vpred"]
