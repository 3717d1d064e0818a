"""``nnUNetv2_convert_abdomenct1k``: AbdomenCT-1K (liver, kidney, spleen, pancreas) and its unlabeled scans.

Download: https://github.com/JunMa11/AbdomenCT-1K (images on Zenodo/Google Drive in parts, masks in
Mask.zip). Expected layout, as shipped:

    AbdomenCT-1K/AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz ...   (also ImagePart2, ImagePart3)
    AbdomenCT-1K/Mask/Case_00001.nii.gz ...

Cases with a mask form the labelled dataset; images without one are the unlabeled scans.
Labels (AbdomenCT-1K documentation): 1 liver, 2 kidney, 3 spleen, 4 pancreas.

    nnUNetv2_convert_abdomenct1k -i /data/AbdomenCT-1K -d 505 -u /data/AbdomenCT-1K_unlabeled
"""
from __future__ import annotations

from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}


def find_cases(root: Path) -> tuple[list[SourceCase], list[tuple[str, str]]]:
    masks = require_folder(root / "Mask", "AbdomenCT-1K/Mask")
    cases, unlabeled = [], []
    for image in sorted(f for d in sorted(root.glob("*ImagePart*")) for f in d.rglob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        label = masks / f"{case}.nii.gz"
        if label.is_file():
            cases.append(SourceCase(case, (str(image),), str(label)))
        else:
            unlabeled.append((case, str(image)))
    return cases, unlabeled


@exits_cleanly_on_user_errors
def main() -> int:
    args = conversion_parser(__doc__, 505, "AbdomenCT1K", has_unlabeled=True).parse_args()
    cases, unlabeled = find_cases(require_folder(args.i, "the unpacked AbdomenCT-1K folder"))
    return run_conversion(args, cases, LABELS, {"0": "CT"}, "AbdomenCT-1K (liver, kidney, spleen, pancreas) "
                          "converted by nnunet_diffusion_pretrain", "https://github.com/JunMa11/AbdomenCT-1K",
                          "CC BY-NC-SA (see the AbdomenCT-1K terms)", unlabeled)
