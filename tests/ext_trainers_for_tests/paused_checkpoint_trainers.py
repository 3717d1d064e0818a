"""Trainers for tests only: with ``nnUNet_test_checkpoint_pause=S`` set, every checkpoint write
stops for S seconds after half of its bytes are on disk, so a test can SIGKILL a run in the
middle of a checkpoint write. Without the variable they are the plugin's trainers unchanged."""
import io
import os
import time

import torch

from nnunet_diffusion_pretrain.training import (nnUNetTrainerBudget, nnUNetTrainerDiffusionDecoderFinetune,
                                                nnUNetTrainerDiffusionFinetune, nnUNetTrainerDiffusionLinearProbe,
                                                nnUNetTrainerDiffusionPretrain)

_torch_save = torch.save


def _save_with_pause(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    _torch_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        os.fsync(out.fileno())
        time.sleep(float(os.environ["nnUNet_test_checkpoint_pause"]))
        out.write(data[len(data) // 2:])


class PausedCheckpointWrites:
    def save_checkpoint(self, filename: str) -> None:
        if not os.environ.get("nnUNet_test_checkpoint_pause"):
            return super().save_checkpoint(filename)
        torch.save = _save_with_pause  # both nnU-Net and the plugin call torch.save at write time
        try:
            super().save_checkpoint(filename)
        finally:
            torch.save = _torch_save


class nnUNetTrainerDiffusionPretrainPaused(PausedCheckpointWrites, nnUNetTrainerDiffusionPretrain):
    pass


class nnUNetTrainerBudgetPaused(PausedCheckpointWrites, nnUNetTrainerBudget):
    pass


class nnUNetTrainerDiffusionFinetunePaused(PausedCheckpointWrites, nnUNetTrainerDiffusionFinetune):
    pass


class nnUNetTrainerDiffusionDecoderFinetunePaused(PausedCheckpointWrites, nnUNetTrainerDiffusionDecoderFinetune):
    pass


class nnUNetTrainerDiffusionLinearProbePaused(PausedCheckpointWrites, nnUNetTrainerDiffusionLinearProbe):
    pass
