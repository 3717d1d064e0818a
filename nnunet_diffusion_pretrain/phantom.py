"""A small CT-like abdominal phantom, so the whole pipeline runs where real scans cannot ship.

Each volume is a random variation of one abdominal slab in Hounsfield units: air, a body with a
fat rim, spine, aorta, bowel gas, and the four organs of the real test sets (labels 1 liver,
2 right kidney, 3 left kidney, 4 spleen, as in ``../shared/data``). Arrays are (z, y, x) with the
patient's right on the image's left, as in radiological display.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from nnunet_diffusion_pretrain.errors import UserFacingError

LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
DEFAULT_SHAPE = (24, 48, 48)
DEFAULT_SPACING_XYZ = (6.0, 6.0, 8.0)  # z coarsest, so nnU-Net keeps axial 2D slices


@dataclass(frozen=True)
class _Ellipsoid:
    center: tuple[float, float, float]  # (z, y, x) in voxels
    radii: tuple[float, float, float]


def _ellipsoid_mask(grid: tuple[np.ndarray, ...], e: _Ellipsoid) -> np.ndarray:
    z, y, x = grid
    d = ((z - e.center[0]) / e.radii[0]) ** 2 + ((y - e.center[1]) / e.radii[1]) ** 2 \
        + ((x - e.center[2]) / e.radii[2]) ** 2
    return d <= 1.0


def make_phantom_volume(rng: np.random.Generator, shape: tuple[int, int, int] = DEFAULT_SHAPE
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Return (image in HU as float32, label map as uint8) for one random phantom."""
    nz, ny, nx = shape
    grid = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    _, yy, xx = grid
    s = rng.uniform(0.9, 1.1)  # patient size
    cy, cx = ny / 2 + rng.uniform(-2, 2), nx / 2 + rng.uniform(-2, 2)

    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    body_ry, body_rx = 0.33 * ny * s, 0.44 * nx * s
    body = ((yy - cy) / body_ry) ** 2 + ((xx - cx) / body_rx) ** 2 <= 1
    inner = ((yy - cy) / (body_ry - 2.5)) ** 2 + ((xx - cx) / (body_rx - 2.5)) ** 2 <= 1
    image[body] = -100.0  # subcutaneous fat
    image[inner] = 20.0  # muscle / soft tissue

    spine_c = (cy + 0.62 * body_ry, cx)
    spine = (yy - spine_c[0]) ** 2 + (xx - spine_c[1]) ** 2 <= (0.09 * nx * s) ** 2
    image[spine] = 450.0
    aorta = (yy - (spine_c[0] - 0.14 * ny * s)) ** 2 + (xx - (cx + 0.04 * nx)) ** 2 <= (0.04 * nx * s) ** 2
    image[aorta] = 180.0

    for _ in range(rng.integers(2, 5)):  # bowel gas, unlabelled texture
        gas = _Ellipsoid((rng.uniform(0.3, 0.9) * nz, cy - rng.uniform(0.1, 0.5) * body_ry,
                          cx + rng.uniform(-0.3, 0.3) * body_rx),
                         (rng.uniform(2, 4), rng.uniform(1.5, 3.5), rng.uniform(1.5, 3.5)))
        image[_ellipsoid_mask(grid, gas) & inner] = -700.0

    def jitter(v: float, rel: float = 0.12) -> float:
        return v * rng.uniform(1 - rel, 1 + rel)

    organs = [  # (label, HU, ellipsoid), patient's right = image left (small x)
        (LABELS["liver"], 100.0, _Ellipsoid((jitter(0.35 * nz), cy - jitter(0.05 * ny), cx - jitter(0.2 * nx)),
                                           (jitter(0.45 * nz), jitter(0.22 * ny) * s, jitter(0.2 * nx) * s))),
        (LABELS["spleen"], 125.0, _Ellipsoid((jitter(0.3 * nz), cy + jitter(0.1 * ny), cx + jitter(0.27 * nx)),
                                            (jitter(0.25 * nz), jitter(0.1 * ny) * s, jitter(0.07 * nx) * s))),
        (LABELS["right_kidney"], 190.0, _Ellipsoid((jitter(0.6 * nz), spine_c[0] - jitter(0.04 * ny),
                                                    cx - jitter(0.18 * nx)),
                                                   (jitter(0.22 * nz), jitter(0.07 * ny), jitter(0.05 * nx)))),
        (LABELS["left_kidney"], 190.0, _Ellipsoid((jitter(0.55 * nz), spine_c[0] - jitter(0.04 * ny),
                                                   cx + jitter(0.18 * nx)),
                                                  (jitter(0.22 * nz), jitter(0.07 * ny), jitter(0.05 * nx)))),
    ]
    for lab, hu, ell in organs:
        m = _ellipsoid_mask(grid, ell) & inner & ~spine
        image[m] = hu + rng.normal(0, 5)
        label[m] = lab

    image = gaussian_filter(image, sigma=0.6) + rng.normal(0, 10, size=shape).astype(np.float32)
    return image.astype(np.float32), label


def _write_nifti(array: np.ndarray, path: Path, spacing_xyz: tuple[float, float, float]) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path), True)


def write_phantom_dataset(dataset_folder: Path, num_labelled: int, unlabeled_folder: Path | None = None,
                          num_unlabeled: int = 0, seed: int = 0, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                          spacing_xyz: tuple[float, float, float] = DEFAULT_SPACING_XYZ,
                          overwrite: bool = False) -> None:
    """Write an nnU-Net raw dataset (imagesTr/labelsTr/dataset.json) and, optionally, a folder of
    unlabeled scans named like real-world exports (no ``_0000`` suffix)."""
    targets = [dataset_folder] + ([unlabeled_folder] if unlabeled_folder is not None and num_unlabeled else [])
    for t in targets:
        if t.exists() and any(t.iterdir()):
            if not overwrite:
                raise UserFacingError(f"{t} already exists and is not empty; pass --overwrite to replace it")
            shutil.rmtree(t)
    (dataset_folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dataset_folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in tqdm(range(num_labelled), desc="labelled phantoms"):
        image, label = make_phantom_volume(rng, shape)
        _write_nifti(image, dataset_folder / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz", spacing_xyz)
        _write_nifti(label, dataset_folder / "labelsTr" / f"phantom_{i:03d}.nii.gz", spacing_xyz)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": num_labelled,
        "file_ending": ".nii.gz",
        "name": dataset_folder.name,
        "description": "Synthetic CT-like abdominal phantom generated by nnunet_diffusion_pretrain (not real data)",
    }
    (dataset_folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    if unlabeled_folder is not None and num_unlabeled:
        unlabeled_folder.mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(num_unlabeled), desc="unlabeled phantoms"):
            image, _ = make_phantom_volume(rng, shape)
            _write_nifti(image, unlabeled_folder / f"unlabeled_scan_{i:03d}.nii.gz", spacing_xyz)


def raw_dataset_folder(dataset_id: int, name: str) -> Path:
    """Where nnU-Net expects raw dataset ``dataset_id`` (requires ``nnUNet_raw``)."""
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise UserFacingError("nnUNet_raw is not set; export it as for any nnU-Net command")
    return Path(raw) / f"Dataset{dataset_id:03d}_{name}"
