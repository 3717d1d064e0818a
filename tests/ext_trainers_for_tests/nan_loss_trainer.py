"""A trainer for tests only: poisons the input in its second epoch so the loss becomes NaN."""
import torch

from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionPretrain


class nnUNetTrainerDiffusionPretrainNaNTest(nnUNetTrainerDiffusionPretrain):
    def train_step(self, batch: dict) -> dict:
        if self.current_epoch == 1:
            batch["data"] = torch.full_like(batch["data"], float("nan"))
        return super().train_step(batch)
