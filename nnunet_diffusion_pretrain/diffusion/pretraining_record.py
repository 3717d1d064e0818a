"""What a pretraining checkpoint records about itself, so later stages can refuse a mismatch
(other preprocessing, configuration, architecture, input channels or diffusion process) by name."""
from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.pool.unlabeled_pool import preprocessing_fingerprint

RECORD_KEY = "diffusion_pretraining"
# 1: conditioning after each stage (packages <= 0.8); 2: inside each norm, foldable at transfer
FORMAT_VERSION = 2


def check_format_version(record: dict, checkpoint_file) -> None:
    """Refuse a checkpoint whose weights this package cannot use as they were trained."""
    version = record.get("format_version", 1)
    if version < FORMAT_VERSION:
        raise UserFacingError(f"{checkpoint_file} was pretrained by an older version of this plugin (checkpoint "
                              f"format {version}: timestep conditioning after each stage, which does not transfer); "
                              f"pretrain again with -tr nnUNetTrainerDiffusionPretrain")
    if version > FORMAT_VERSION:
        raise UserFacingError(f"{checkpoint_file} has checkpoint format {version}, newer than this plugin reads "
                              f"({FORMAT_VERSION}); upgrade nnunet-diffusion-pretrain")


def transfer_requirements(plans_manager: PlansManager, configuration: str, num_input_channels: int) -> dict:
    """What must match for pretrained weights to fit a network built from these plans. Plan and
    dataset names are not compared: nnUNetv2_move_plans_between_datasets renames them without
    changing the data the weights saw."""
    cm = plans_manager.get_configuration(configuration)
    return {
        "configuration": configuration,
        "network_class_name": cm.network_arch_class_name,
        "arch_kwargs": cm.network_arch_init_kwargs,
        "num_input_channels": num_input_channels,
        "preprocessing": {k: v for k, v in preprocessing_fingerprint(plans_manager, cm).items()
                          if k not in ("data_identifier", "image_reader_writer")},
    }


def pretraining_record(plans_manager: PlansManager, configuration: str, num_input_channels: int,
                       settings: DiffusionSettings, time_embedding_dim: int) -> dict:
    cm = plans_manager.get_configuration(configuration)
    return {
        "format_version": FORMAT_VERSION,
        "dataset_name": plans_manager.dataset_name,
        "plans_name": plans_manager.plans_name,
        "data_identifier": cm.data_identifier,
        **transfer_requirements(plans_manager, configuration, num_input_channels),
        "arch_kwargs_requires_import": list(cm.network_arch_init_kwargs_req_import),
        "patch_size": list(cm.patch_size),
        "spacing": list(cm.spacing),
        "time_embedding_dim": time_embedding_dim,
        **settings.to_dict(),
    }


def record_mismatches(stored: dict, expected: dict, keys: tuple[str, ...] | None = None) -> list[str]:
    """Human-readable differences between a checkpoint's record and what the caller expects."""
    keys = keys or tuple(expected)
    return [f"{k}: checkpoint has {_short(stored.get(k))}, expected {_short(expected[k])}"
            for k in keys if stored.get(k) != expected[k]]


def _short(value, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
