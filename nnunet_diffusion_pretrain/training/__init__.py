"""The plugin's nnU-Net trainer classes (found by stock commands through ``nnUNet_extTrainer``).

Importing them also routes ``-pretrained_weights`` through our safe loader (see
``pretrained_weights_hook``) and turns our clear errors into one line (``errors``)."""
from nnunet_diffusion_pretrain.errors import install_user_error_hook
from nnunet_diffusion_pretrain.training.diffusion_pretrain_trainer import (
    nnUNetTrainerDiffusionPretrain, nnUNetTrainerDiffusionPretrain_cosine, nnUNetTrainerDiffusionPretrain_cosine_vpred,
    nnUNetTrainerDiffusionPretrain_poly, nnUNetTrainerDiffusionPretrain_unitRange, nnUNetTrainerDiffusionPretrain_vpred)
from nnunet_diffusion_pretrain.training.pretrained_weights_hook import install as _install_safe_pretrained_loading
from nnunet_diffusion_pretrain.training.transfer_trainers import (
    nnUNetTrainerBudget, nnUNetTrainerBudget_keepSides, nnUNetTrainerDiffusionDecoderFinetune,
    nnUNetTrainerDiffusionDecoderFinetune_keepSides, nnUNetTrainerDiffusionFinetune,
    nnUNetTrainerDiffusionFinetune_encoderLR1, nnUNetTrainerDiffusionFinetune_keepSides,
    nnUNetTrainerDiffusionFinetune_nnssl, nnUNetTrainerDiffusionFinetune_nnssl_keepSides,
    nnUNetTrainerDiffusionFinetune_noEMA, nnUNetTrainerDiffusionFinetune_noWarmup,
    nnUNetTrainerDiffusionFinetune_sawtooth, nnUNetTrainerDiffusionFinetune_sawtooth_keepSides,
    nnUNetTrainerDiffusionLinearProbe, nnUNetTrainerDiffusionLinearProbe_keepSides,
    nnUNetTrainerDiffusionLinearProbe_t5_25_50, nnUNetTrainerDiffusionLinearProbe_t250_500_750)

_install_safe_pretrained_loading()
install_user_error_hook()

__all__ = ["nnUNetTrainerDiffusionPretrain", "nnUNetTrainerDiffusionPretrain_poly",
           "nnUNetTrainerDiffusionPretrain_cosine", "nnUNetTrainerDiffusionPretrain_vpred",
           "nnUNetTrainerDiffusionPretrain_cosine_vpred", "nnUNetTrainerDiffusionPretrain_unitRange",
           "nnUNetTrainerBudget", "nnUNetTrainerBudget_keepSides",
           "nnUNetTrainerDiffusionFinetune", "nnUNetTrainerDiffusionFinetune_keepSides",
           "nnUNetTrainerDiffusionFinetune_nnssl", "nnUNetTrainerDiffusionFinetune_nnssl_keepSides",
           "nnUNetTrainerDiffusionFinetune_sawtooth", "nnUNetTrainerDiffusionFinetune_sawtooth_keepSides",
           "nnUNetTrainerDiffusionFinetune_encoderLR1", "nnUNetTrainerDiffusionFinetune_noWarmup",
           "nnUNetTrainerDiffusionFinetune_noEMA",
           "nnUNetTrainerDiffusionDecoderFinetune", "nnUNetTrainerDiffusionDecoderFinetune_keepSides",
           "nnUNetTrainerDiffusionLinearProbe", "nnUNetTrainerDiffusionLinearProbe_keepSides",
           "nnUNetTrainerDiffusionLinearProbe_t5_25_50", "nnUNetTrainerDiffusionLinearProbe_t250_500_750"]
