"""What a pretraining checkpoint records about itself, so later stages can refuse a mismatch
(other preprocessing, configuration, architecture, input channels or diffusion process) by name."""
from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.unlabeled_pool import preprocessing_fingerprint

RECORD_KEY = "diffusion_pretraining"
FORMAT_VERSION = 1
# what must match for pretrained weights to transfer into a network built from the caller's plans
TRANSFER_KEYS = ("configuration", "network_class_name", "arch_kwargs", "num_input_channels", "preprocessing")


def pretraining_record(plans_manager: PlansManager, configuration: str, num_input_channels: int,
                       settings: DiffusionSettings, time_embedding_dim: int) -> dict:
    cm = plans_manager.get_configuration(configuration)
    return {
        "format_version": FORMAT_VERSION,
        "dataset_name": plans_manager.dataset_name,
        "plans_name": plans_manager.plans_name,
        "data_identifier": cm.data_identifier,
        "configuration": configuration,
        "network_class_name": cm.network_arch_class_name,
        "arch_kwargs": cm.network_arch_init_kwargs,
        "arch_kwargs_requires_import": list(cm.network_arch_init_kwargs_req_import),
        "num_input_channels": num_input_channels,
        "patch_size": list(cm.patch_size),
        "spacing": list(cm.spacing),
        # what the weights saw: compared instead of plan names, which change when plans are moved
        # to another dataset (nnUNetv2_move_plans_between_datasets) without changing the data
        "preprocessing": {k: v for k, v in preprocessing_fingerprint(plans_manager, cm).items()
                          if k not in ("data_identifier", "image_reader_writer")},
        "time_embedding_dim": time_embedding_dim,
        **settings.to_dict(),
    }


def record_mismatches(stored: dict, expected: dict, keys: tuple[str, ...] | None = None) -> list[str]:
    """Human-readable differences between a checkpoint's record and what the caller expects."""
    keys = keys or tuple(expected)
    return [f"{k}: checkpoint has {stored.get(k)!r}, expected {expected[k]!r}"
            for k in keys if stored.get(k) != expected[k]]
