"""Datasets derived from a planned source dataset that must train on the source's plans (slice
budgets, synthetic-data augmentation): raw cases copied in, plans moved with nnU-Net's
``move_plans_between_datasets``, the source fingerprint reused (planning on sparse or synthetic
labels would change the CT intensity statistics) and preprocessing with those plans."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import \
    move_plans_between_datasets

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset

DERIVED_MARKER = "derived_from.json"


def derived_raw_folder(target_id: int, name: str, provenance: dict) -> Path:
    """The raw folder of the derived dataset; refuses an ID taken by anything with other provenance."""
    raw_root = Path(os.environ["nnUNet_raw"])
    folder = raw_root / f"Dataset{target_id:03d}_{name}"
    existing = [p for p in raw_root.glob(f"Dataset{target_id:03d}_*")] + \
        [p for p in Path(os.environ["nnUNet_preprocessed"]).glob(f"Dataset{target_id:03d}_*")]
    marker = folder / DERIVED_MARKER
    if existing and not (marker.is_file() and json.loads(marker.read_text()) == provenance):
        raise UserFacingError(f"dataset ID {target_id} is taken ({existing[0]}) by something else than this derived "
                              f"dataset ({provenance}); choose another ID")
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    marker.write_text(json.dumps(provenance, indent=2))
    return folder


def copy_images(files: list[str], target_images: Path, case_id: str, file_ending: str) -> None:
    for channel, f in enumerate(files):
        shutil.copy(f, target_images / f"{case_id}_{channel:04d}{file_ending}")


def ignore_label(labels: dict) -> int:
    """The dataset's ignore label, or the next free value if it has none."""
    return labels["ignore"] if "ignore" in labels else max(v for v in labels.values()) + 1


def preprocess_on_source_plans(source: PlannedDataset, folder: Path, target_id: int, labels: dict, description: str,
                               plans_identifier: str, configuration: str, num_processes: int) -> None:
    """Write dataset.json, move the source plans and fingerprint over, preprocess ``configuration``."""
    file_ending = source.dataset_json["file_ending"]
    (folder / "dataset.json").write_text(json.dumps({
        **source.dataset_json, "labels": labels, "numTraining": len(list((folder / "labelsTr").glob(f"*{file_ending}"))),
        "name": folder.name, "description": description}, indent=2))
    target_preprocessed = Path(os.environ["nnUNet_preprocessed"]) / folder.name
    target_preprocessed.mkdir(parents=True, exist_ok=True)
    move_plans_between_datasets(source.name, folder.name, plans_identifier, plans_identifier)
    shutil.copy(source.preprocessed_folder / "dataset_fingerprint.json", target_preprocessed)
    shutil.copy(folder / "dataset.json", target_preprocessed)  # what nnU-Net's planning would copy
    preprocess_dataset(target_id, plans_identifier, (configuration,), (num_processes,), verbose=False)
