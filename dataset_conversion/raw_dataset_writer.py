"""Writing an nnU-Net raw dataset from source cases, with the checks every converter needs.

Per case: images read with SimpleITK (NIfTI/NRRD/MHA files or a DICOM series folder), 3D checked,
the label read (or merged from per-structure masks), image/label geometry compared (size exactly;
spacing, origin and direction within a small tolerance), label values checked to be integers from
the dataset's own label map, then written as ``imagesTr/{case}_{channel:04d}.nii.gz`` and
``labelsTr/{case}.nii.gz`` with the source geometry. The dataset is built in a hidden folder and
renamed into place when complete, so an interrupted or failed conversion never leaves a half
dataset under the real name; an existing dataset is only replaced when asked.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.unlabeled_inputs import NonFiniteVoxelsError, safe_case_id, verify_image_file

GEOMETRY_TOLERANCE = 1e-3  # relative, for spacing and direction; origins compared in mm


class CaseError(Exception):
    """A source case that cannot be converted; the message names the file and the problem."""


@dataclass(frozen=True)
class SourceCase:
    case_id: str
    images: tuple[str, ...]  # one file (or DICOM series folder) per channel
    label: str | None = None
    masks: tuple[tuple[int, str], ...] = ()  # (label value, mask file): merged by merge_masks
    test: bool = False  # goes to imagesTs/labelsTs
    direction: tuple[float, ...] | None = None  # the axes' true directions where the source header's are nominal


@dataclass
class ConversionReport:
    folder: Path
    converted: list[str] = field(default_factory=list)
    test_cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_image(path: str) -> sitk.Image:
    """A file, or a folder holding one DICOM series."""
    try:
        if os.path.isdir(path):
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path) or ()
            if len(ids) != 1:
                raise CaseError(f"{path}: holds {len(ids)} DICOM series; expected exactly one")
            return sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, ids[0]))
        verify_image_file(path)
        return sitk.ReadImage(path)
    except CaseError:
        raise
    except NonFiniteVoxelsError as e:
        raise CaseError(str(e)) from e
    except Exception as e:
        raise CaseError(f"{path}: cannot be read ({str(e).strip().splitlines()[-1]})") from e


def check_same_geometry(reference: sitk.Image, other: sitk.Image, what: str) -> None:
    if reference.GetSize() != other.GetSize():
        raise CaseError(f"{what}: size {other.GetSize()} differs from the image's {reference.GetSize()}")
    for name, a, b, tolerance in (
            ("spacing", reference.GetSpacing(), other.GetSpacing(), GEOMETRY_TOLERANCE * max(reference.GetSpacing())),
            ("origin", reference.GetOrigin(), other.GetOrigin(), GEOMETRY_TOLERANCE * 100),
            ("direction", reference.GetDirection(), other.GetDirection(), GEOMETRY_TOLERANCE)):
        if not np.allclose(a, b, atol=tolerance):
            raise CaseError(f"{what}: {name} {tuple(round(x, 4) for x in b)} differs from the image's "
                            f"{tuple(round(x, 4) for x in a)}")


def merge_masks(masks: tuple[tuple[int, str], ...], reference: sitk.Image) -> np.ndarray:
    """Per-structure binary masks into one label map. Where masks overlap, the structure with fewer
    voxels in this case wins (small organs are not swallowed by large neighbours); ties go to the
    lower label value."""
    label = np.zeros(sitk.GetArrayFromImage(reference).shape, dtype=np.uint8)
    loaded = []
    for value, path in masks:
        mask_image = read_image(path)
        check_same_geometry(reference, mask_image, path)
        mask = sitk.GetArrayFromImage(mask_image) > 0
        loaded.append((int(mask.sum()), value, mask))
    for _, value, mask in sorted(loaded, key=lambda m: (-m[0], -m[1])):  # largest first, smallest painted last
        label[mask] = value
    return label


def _label_array(case: SourceCase, reference: sitk.Image, allowed: set[int]) -> np.ndarray:
    if case.masks:
        return merge_masks(case.masks, reference)
    label_image = read_image(case.label)
    if label_image.GetDimension() != 3:
        raise CaseError(f"{case.label}: expected a 3D label map, got {label_image.GetDimension()}D")
    check_same_geometry(reference, label_image, case.label)
    label = sitk.GetArrayFromImage(label_image)
    check_label_values(label, allowed, case.label)
    return label.astype(np.uint8)


def check_label_values(label: np.ndarray, allowed: set[int], path: str) -> None:
    """Integers from the label map only: anything else would train on a class that does not exist."""
    if not np.issubdtype(label.dtype, np.integer) and not np.array_equal(label, np.round(label)):
        raise CaseError(f"{path}: label values are not integers")
    values = set(np.unique(label).astype(int).tolist())
    if not values <= allowed:
        raise CaseError(f"{path}: label values {sorted(values - allowed)} are not in the dataset's label map "
                        f"{sorted(allowed)}")


def convert_case(case: SourceCase, target: str, allowed: tuple[int, ...]) -> tuple[str, str | None]:
    """Write one case; returns (case_id, error message or None). Runs in a worker process."""
    images_dir = "imagesTs" if case.test else "imagesTr"
    labels_dir = "labelsTs" if case.test else "labelsTr"
    try:
        images = [read_image(p) for p in case.images]
        for path, image in zip(case.images, images):
            if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                raise CaseError(f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D with "
                                f"{image.GetNumberOfComponentsPerPixel()} component(s)")
            check_same_geometry(images[0], image, path)
        label = _label_array(case, images[0], set(allowed)) if (case.label or case.masks) else None
    except CaseError as e:
        return case.case_id, str(e)
    if case.direction is not None:
        for image in images:
            image.SetDirection(case.direction)
    for channel, image in enumerate(images):
        sitk.WriteImage(image, os.path.join(target, images_dir, f"{case.case_id}_{channel:04d}.nii.gz"), True)
    if label is not None:
        label_image = sitk.GetImageFromArray(label)
        label_image.CopyInformation(images[0])
        sitk.WriteImage(label_image, os.path.join(target, labels_dir, f"{case.case_id}.nii.gz"), True)
    return case.case_id, None


def _convert_star(args):
    return convert_case(*args)


def write_raw_dataset(cases: list[SourceCase], target: Path, labels: dict[str, int], channel_names: dict[str, str],
                      description: str, reference: str, license_text: str, overwrite: bool = False,
                      on_error: str = "stop", num_processes: int = 1) -> ConversionReport:
    """Convert ``cases`` into the nnU-Net raw dataset folder ``target``."""
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise UserFacingError(f"{target} already exists; pass --overwrite to replace it")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids) or any(safe_case_id(i) != i for i in ids):
        raise UserFacingError("case identifiers must be unique and file-name safe (converter bug)")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if any(c.test for c in cases) else ()):
        (staging / sub).mkdir(parents=True)
    report = ConversionReport(target)
    jobs = [(case, str(staging), tuple(labels.values())) for case in cases]
    test_ids = {c.case_id for c in cases if c.test}
    pool = multiprocessing.get_context("spawn").Pool(num_processes) if num_processes > 1 else None
    try:
        results = pool.imap_unordered(_convert_star, jobs) if pool else map(_convert_star, jobs)
        for case_id, error in tqdm(results, total=len(jobs), desc=f"converting to {target.name}", unit="case"):
            if error is None:
                (report.test_cases if case_id in test_ids else report.converted).append(case_id)
            elif on_error == "skip":
                report.skipped.append(error)
            else:
                raise UserFacingError(f"{error} (case {case_id}); nothing was written to {target}. Fix the file or "
                                      f"pass --on-error skip to leave such cases out")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if pool:
            pool.terminate()
    if not report.converted:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserFacingError(f"no training case could be converted into {target}")
    generate_dataset_json(str(staging), channel_names, labels, len(report.converted), ".nii.gz",
                          dataset_name=target.name, reference=reference, description=description,
                          license=license_text, converted_by="nnunet_diffusion_pretrain")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return report


def link_unlabeled(files: list[tuple[str, str]], output: Path, copy: bool = False) -> int:
    """Gather unlabeled scans into one folder for ``nnUNetv2_diffusion_add_unlabeled`` (symbolic links
    by default: nothing is duplicated). ``files`` holds (case id, source path)."""
    output.mkdir(parents=True, exist_ok=True)
    for case_id, source in tqdm(files, desc=f"unlabeled scans into {output}", unit="case"):
        ending = ".nii.gz" if source.endswith(".nii.gz") else Path(source).suffix
        destination = output / f"{case_id}{ending}"
        if destination.exists() or destination.is_symlink():
            continue
        if copy:
            shutil.copy(source, destination)
        else:
            destination.symlink_to(os.path.abspath(source))
    return len(files)
