"""An external test set for the benchmark: cases from another source (site, scanner, collection)
that no run trains on or is chosen with, in the dataset's representation, so that the report can
say how the methods carry over. Layout as nnU-Net's test images: ``imagesTs/CASE_0000<ending>``
and ``labelsTs/CASE<ending>``."""
from __future__ import annotations

from pathlib import Path

from nnunet_diffusion_pretrain.errors import UserFacingError


def external_cases(folder: Path, file_ending: str, num_channels: int = 1) -> list[str]:
    """The cases of ``folder`` that have every channel and a label; refuses a folder that is not
    laid out that way or holds an image without its label."""
    images, labels = folder / "imagesTs", folder / "labelsTs"
    if not images.is_dir() or not labels.is_dir():
        raise UserFacingError(f"--external-test {folder} must hold imagesTs/ and labelsTs/ (as an nnU-Net dataset's "
                              f"test images, with labels)")
    channel0 = sorted(p.name[:-len(f"_0000{file_ending}")] for p in images.glob(f"*_0000{file_ending}"))
    if not channel0:
        raise UserFacingError(f"--external-test {folder}: no images named CASE_0000{file_ending} in imagesTs/ "
                              f"(the dataset's file ending is {file_ending})")
    missing = [f"labelsTs/{c}{file_ending}" for c in channel0 if not (labels / f"{c}{file_ending}").is_file()]
    missing += [f"imagesTs/{c}_{i:04d}{file_ending}" for c in channel0 for i in range(1, num_channels)
                if not (images / f"{c}_{i:04d}{file_ending}").is_file()]
    if missing:
        raise UserFacingError(f"--external-test {folder}: {len(missing)} files missing, first {missing[0]}")
    return channel0
