"""Resolve a dataset that stock nnU-Net has planned, with errors that say which command to run."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_diffusion_pretrain.errors import UserFacingError


@dataclass
class PlannedDataset:
    name: str
    plans: dict
    dataset_json: dict
    configuration: str
    preprocessed_folder: Path  # nnUNet_preprocessed/DatasetXXX_Name

    @property
    def plans_manager(self) -> PlansManager:
        return PlansManager(self.plans)

    @property
    def configuration_manager(self) -> ConfigurationManager:
        return self.plans_manager.get_configuration(self.configuration)

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])


def load_planned_dataset(dataset: str | int, configuration: str | None, plans_identifier: str = "nnUNetPlans"
                         ) -> PlannedDataset:
    """Load plans and dataset.json of a planned dataset; refuse clearly if planning is missing.
    ``configuration=None`` takes the plans' first configuration (for work that needs none)."""
    if not os.environ.get("nnUNet_preprocessed"):
        raise UserFacingError("nnUNet_preprocessed is not set; export nnUNet_raw, nnUNet_preprocessed and "
                              "nnUNet_results as for any nnU-Net command")
    try:
        name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    except RuntimeError as e:
        raise UserFacingError(f"dataset {dataset} not found in nnUNet_raw, nnUNet_preprocessed or nnUNet_results "
                              f"({e})") from e
    folder = Path(os.environ["nnUNet_preprocessed"]) / name
    plans_file = folder / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise UserFacingError(f"{name} has not been planned with {plans_identifier} ({plans_file} is missing); "
                              f"run nnUNetv2_plan_and_preprocess -d {dataset} first")
    plans = json.loads(plans_file.read_text())
    configuration = configuration or next(iter(plans["configurations"]))
    if configuration not in plans["configurations"]:
        raise UserFacingError(f"configuration {configuration!r} is not in {plans_file.name}; available: "
                              f"{', '.join(plans['configurations'])}")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return PlannedDataset(name, plans, dataset_json, configuration, folder)
