"""A trainer for tests only: fine-tuning validated without mirroring (nnU-Net's own
``nnUNetTrainerNoMirroring`` hook). Mirroring quadruples the validation of real CT volumes on CPU,
which is most of what a real-data test costs, and says nothing about the transfer under test."""
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring)

from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionFinetune


class nnUNetTrainerDiffusionFinetuneNoMirroring(nnUNetTrainerNoMirroring, nnUNetTrainerDiffusionFinetune):
    pass
