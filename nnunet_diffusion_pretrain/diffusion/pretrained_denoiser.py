"""Rebuild a pretrained denoiser from its checkpoint and the dataset's plans, for sampling and
feature extraction outside training: EMA weights, the recorded diffusion process, safe loading."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset
from nnunet_diffusion_pretrain.diffusion.pretraining_record import (RECORD_KEY, check_format_version, record_mismatches,
                                                          transfer_requirements)
from nnunet_diffusion_pretrain.diffusion.time_conditioning import TimeConditionedUNet, build_denoiser

PRETRAINER = "nnUNetTrainerDiffusionPretrain"


@dataclass
class PretrainedDenoiser:
    network: TimeConditionedUNet
    settings: DiffusionSettings
    record: dict
    checkpoint_file: Path


def checkpoint_path(dataset: PlannedDataset, plans_identifier: str, trainer: str, fold: str, name: str) -> Path:
    """Where ``nnUNetv2_train`` put the pretraining checkpoint."""
    folder = (Path(os.environ["nnUNet_results"]) / dataset.name / f"{trainer}__{plans_identifier}__"
              f"{dataset.configuration}" / f"fold_{fold}")
    path = folder / name
    if not path.is_file():
        raise UserFacingError(f"no checkpoint {path}; pretrain first: nnUNetv2_train {dataset.name} "
                              f"{dataset.configuration} {fold} -tr {trainer} -p {plans_identifier}")
    return path


def load_pretrained_denoiser(dataset: PlannedDataset, checkpoint_file: Path, device: torch.device
                             ) -> PretrainedDenoiser:
    """The denoiser with the checkpoint's EMA weights (``network_weights``), refusing a checkpoint
    made with other plans, configuration, architecture or channels."""
    try:
        checkpoint = load_checkpoint_safely(checkpoint_file)
    except Exception as e:  # truncated, not a torch file, or pickled code
        raise UserFacingError(f"{checkpoint_file} cannot be loaded safely: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    record = checkpoint.get(RECORD_KEY)
    if record is None:
        raise UserFacingError(f"{checkpoint_file} is not a diffusion pretraining checkpoint (no {RECORD_KEY} record)")
    check_format_version(record, checkpoint_file)
    expected = transfer_requirements(dataset.plans_manager, dataset.configuration, dataset.num_input_channels)
    mismatches = record_mismatches(record, expected)
    if mismatches:
        raise UserFacingError(f"{checkpoint_file} does not fit {dataset.name} {dataset.configuration}: "
                              + "; ".join(mismatches))
    channels = dataset.num_input_channels
    network = build_denoiser(dataset.plans_manager, dataset.configuration_manager, channels)
    network.load_state_dict(checkpoint["network_weights"])
    settings = DiffusionSettings.from_record(record)
    return PretrainedDenoiser(network.to(device).eval(), settings, record, checkpoint_file)
