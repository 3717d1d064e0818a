"""``nnUNetv2_convert_unlabeled``: a folder of NIfTI/NRRD/MHA files and/or DICOM series (one series per
folder) into a flat folder of NIfTI files with safe case names, for an unlabeled pool or for sharing.
(``nnUNetv2_diffusion_add_unlabeled`` also reads such folders directly.)

    nnUNetv2_convert_unlabeled -i /data/raw_dicoms -o /data/unlabeled_nifti
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import CaseError, read_image
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.unlabeled_inputs import discover_unlabeled_inputs


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", required=True, type=Path, help="input folder")
    parser.add_argument("-o", required=True, type=Path, help="output folder (created; must not hold these cases)")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop")
    args = parser.parse_args()
    inputs, problems = discover_unlabeled_inputs(args.i)
    if not inputs and not problems:
        raise UserFacingError(f"no images or DICOM series found in {args.i}")
    args.o.mkdir(parents=True, exist_ok=True)
    written, errors = 0, list(problems)
    for item in tqdm(inputs, desc="converting unlabeled scans", unit="case"):
        sources = [item.dicom_dir] if item.dicom_dir else list(item.files)
        targets = [args.o / f"{item.case_id}_{c:04d}.nii.gz" for c in range(len(sources))]
        if any(t.exists() for t in targets):
            errors.append(f"{targets[0]} exists already; not overwritten")
            continue
        try:
            images = [read_image(s) for s in sources]
        except CaseError as e:
            errors.append(str(e))
            if args.on_error == "stop":
                break
            continue
        for image, target in zip(images, targets):
            sitk.WriteImage(image, str(target), True)
        written += 1
    for message in errors:
        print(f"ERROR: {message}", file=sys.stderr)
    print(f"{written} case(s) written to {args.o}")
    return 1 if errors and args.on_error == "stop" else 0
