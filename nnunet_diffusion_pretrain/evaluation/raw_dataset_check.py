"""Checks of an existing nnU-Net raw dataset before anything is planned, preprocessed or written
from it, with one line naming the file and the problem.

nnU-Net's own integrity check (``--verify_dataset_integrity``) covers most of this but stops with
an assertion deep in a worker; and a case identifier such as ``../x`` (possible through
dataset.json's ``dataset`` mapping) would make nnU-Net write outside its folders before any check.
The same per-file checks as our converters: readable, 3D, finite, image/label geometry, integer
label values from the label map.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import (CaseError, check_label_values,
                                                                             check_same_geometry, read_image)
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.unlabeled_inputs import safe_case_id


def _check_case(images: list[str], label: str, allowed: set[int] | None) -> None:
    reference = None
    for path in images:
        image = read_image(path)
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise CaseError(f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D with "
                            f"{image.GetNumberOfComponentsPerPixel()} component(s)")
        if not np.all(np.isfinite(sitk.GetArrayViewFromImage(image))):
            raise CaseError(f"{path}: contains NaN or infinite voxels")
        if reference is None:
            reference = image
        check_same_geometry(reference, image, path)
    label_image = read_image(label)
    if label_image.GetDimension() != 3:
        raise CaseError(f"{label}: expected a 3D label map, got {label_image.GetDimension()}D")
    check_same_geometry(reference, label_image, label)
    if allowed is not None:
        check_label_values(sitk.GetArrayViewFromImage(label_image), allowed, label)


def check_raw_dataset(folder: Path) -> int:
    """Raise ``UserFacingError`` at the first problem; returns the number of cases checked."""
    dataset_json_file = folder / "dataset.json"
    try:
        dataset_json = json.loads(dataset_json_file.read_text())
        labels = dataset_json["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise UserFacingError(f"{dataset_json_file}: not a readable nnU-Net dataset.json ({type(e).__name__}: {e})")
    region_based = any(isinstance(v, (list, tuple)) for v in labels.values())
    allowed = None if region_based else {int(v) for v in labels.values()}
    if dataset_json.get("ignore_label") is not None and allowed is not None:
        allowed.add(int(dataset_json["ignore_label"]))
    cases = get_filenames_of_train_images_and_targets(str(folder), dataset_json)
    for case_id, entry in tqdm(sorted(cases.items()), desc=f"checking {folder.name}", unit="case", disable=None):
        if safe_case_id(case_id) != case_id:
            raise UserFacingError(f"{dataset_json_file}: case identifier {case_id!r} is not a plain file name "
                                  f"(letters, digits, '_', '.', '-'); nnU-Net would write files outside its folders")
        try:
            _check_case(entry["images"], entry["label"], allowed)
        except CaseError as e:
            raise UserFacingError(str(e)) from None
    return len(cases)
