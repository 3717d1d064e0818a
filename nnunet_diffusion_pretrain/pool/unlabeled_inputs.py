"""Finding and reading unlabeled scans: a folder of image files and/or of DICOM series.

A case is either one image file (or the ``_0000``, ``_0001`` ... channel files of a multi-channel
case, nnU-Net's naming) or one folder holding exactly one DICOM series. Images are read with the
target dataset's own reader class, so that geometry and orientation are handled exactly as nnU-Net
handles the labelled images; DICOM series are assembled with SimpleITK first.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import SimpleITK as sitk

IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class UnreadableCaseError(Exception):
    """A case that cannot enter the pool; the message names the file and the problem."""


@dataclass(frozen=True)
class UnlabeledInput:
    case_id: str
    files: tuple[str, ...] = ()  # image files, one per channel
    dicom_dir: str | None = None

    @property
    def source(self) -> str:
        return self.dicom_dir if self.dicom_dir is not None else ", ".join(self.files)

    def content_hash(self, conversion: dict | None = None) -> str:
        """SHA-256 over the bytes of every source file (and the conversion applied to them, if any):
        re-adding the same scan the same way adds nothing."""
        digest = hashlib.sha256()
        if conversion:
            digest.update(json.dumps(conversion, sort_keys=True).encode())
        paths = self.files if self.dicom_dir is None else _dicom_series_files(self.dicom_dir)
        for path in paths:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def safe_case_id(name: str) -> str:
    """A file-name-safe identifier: no path separators, no '..', nothing outside [A-Za-z0-9_.-]."""
    cleaned = _UNSAFE_ID_CHARS.sub("_", name).strip("._")
    return cleaned or "case"


def _strip_image_ending(name: str) -> str | None:
    for ending in IMAGE_FILE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return None


def _dicom_series_ids(folder: str) -> tuple[str, ...]:
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns about every folder without DICOM
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ())
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _dicom_series_files(folder: str) -> tuple[str, ...]:
    ids = _dicom_series_ids(folder)
    if len(ids) != 1:
        raise UnreadableCaseError(f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids) or 'none'}); "
                                  f"put each series in its own folder")
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))


def discover_unlabeled_inputs(folder: Path) -> tuple[list[UnlabeledInput], list[str]]:
    """List the cases under ``folder`` (image files at any depth, and DICOM series folders), and
    the problems found while grouping channel files (one message per broken case)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    grouped: dict[str, dict[int, str]] = {}
    inputs: list[UnlabeledInput] = []
    problems: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(root).relative_to(folder)
        if _dicom_series_ids(root):
            inputs.append(UnlabeledInput(safe_case_id(str(rel) if str(rel) != "." else folder.name),
                                         dicom_dir=root))
        for name in sorted(files):
            stem = _strip_image_ending(name)
            if stem is None or name.startswith("."):
                continue
            match = _CHANNEL_SUFFIX.match(stem)
            case, channel = (match["case"], int(match["channel"])) if match else (stem, -1)
            key = str(rel / case) if str(rel) != "." else case
            grouped.setdefault(key, {})[channel] = os.path.join(root, name)
    for key, channels in sorted(grouped.items()):
        if -1 in channels:  # plain file name: one file is one case
            paths = [channels.pop(-1)]
            if channels:
                problems.append(f"{paths[0]}: case {key} has both a plain file and _XXXX channel files")
                continue
        else:
            expected = list(range(len(channels)))
            if sorted(channels) != expected:
                problems.append(f"{key}: channel files {sorted(channels)} are not numbered 0..N-1")
                continue
            paths = [channels[c] for c in expected]
        inputs.append(UnlabeledInput(safe_case_id(key), files=tuple(paths)))
    return inputs, problems


class NonFiniteVoxelsError(ValueError):
    """The file holds NaN or infinite voxels (the message names it)."""


def verify_image_file(path: str) -> None:
    """Read the file's voxels to the end without ITK: ITK reads a truncated .nii.gz without
    complaint, and turns a NIfTI file's NaN and infinite voxels into 0 without a word."""
    if path.endswith((".nii", ".nii.gz")):
        data = np.asanyarray(nibabel.load(path).dataobj)
        if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
            raise NonFiniteVoxelsError(f"{path}: contains NaN or infinite voxels")
    elif path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def orientation_code(image: sitk.Image | sitk.ImageFileReader) -> str | None:
    """The anatomical orientation of a 3D image's axes as three letters (ITK's LPS convention,
    e.g. ``LPS``, ``RAS``); None for other dimensions."""
    if image.GetDimension() != 3:
        return None
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def file_orientation(path: str) -> str | None:
    """``orientation_code`` of a file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return orientation_code(reader)


def dominant_orientation(paths: list[str]) -> str | None:
    """The orientation most of ``paths`` are stored in (the labelled cases' reference)."""
    codes = Counter(code for code in map(file_orientation, paths) if code is not None)
    return codes.most_common(1)[0][0] if codes else None


def read_unlabeled_input(item: UnlabeledInput, reader_writer_class: type, file_ending: str, num_channels: int,
                         orientation: str | None = None) -> tuple[np.ndarray, dict, str | None]:
    """Read one case with the dataset's reader, first reoriented to ``orientation`` if it is stored
    otherwise. Returns (c, z, y, x) float32 data, properties, and the orientation it was stored in."""
    reader = reader_writer_class()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = None
            if item.dicom_dir is None:
                for path in item.files:
                    verify_image_file(path)
                paths = list(item.files)
                stored = file_orientation(paths[0])
            else:
                images = [sitk.ReadImage(list(_dicom_series_files(item.dicom_dir)))]
                stored = orientation_code(images[0])
            if orientation is not None and stored is not None and stored != orientation:
                images = [sitk.DICOMOrient(image, orientation) for image in (images or map(sitk.ReadImage, paths))]
            if images is not None:
                paths = [os.path.join(tmp, f"channel_{c:04d}{file_ending}") for c in range(len(images))]
                for image, path in zip(images, paths):
                    sitk.WriteImage(image, path, True)
            data, properties = reader.read_images(paths)
    except UnreadableCaseError:
        raise
    except NonFiniteVoxelsError as e:
        raise UnreadableCaseError(str(e)) from e
    except Exception as e:  # readers raise anything from RuntimeError to EOFError on broken files
        raise UnreadableCaseError(f"{item.source}: cannot be read ({type(e).__name__}: {e})") from e
    if data.ndim != 4:
        raise UnreadableCaseError(f"{item.source}: expected a 3D image, the reader returned shape {data.shape}")
    if data.shape[0] != num_channels:
        raise UnreadableCaseError(f"{item.source}: has {data.shape[0]} channel(s), the dataset expects "
                                  f"{num_channels}")
    if data.size == 0 or min(data.shape[1:]) == 0:
        raise UnreadableCaseError(f"{item.source}: the image is empty (shape {data.shape[1:]})")
    if not np.all(np.isfinite(data)):
        raise UnreadableCaseError(f"{item.source}: contains NaN or infinite voxels")
    if all(float(np.ptp(channel)) == 0.0 for channel in data):
        raise UnreadableCaseError(f"{item.source}: every voxel has the same value; nothing to learn from")
    return data, properties, stored
