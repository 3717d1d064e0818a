"""``nnUNetv2_convert_amos22``: AMOS 2022, CT part (15 abdominal organs).

Download: https://amos22.grand-challenge.org/ (Zenodo record 7155725, amos22.zip). Expected
layout, as shipped:

    amos22/dataset.json                       (AMOS's own: labels, "training" and "validation" lists)
    amos22/imagesTr/amos_0001.nii.gz, labelsTr/amos_0001.nii.gz
    amos22/imagesVa/..., labelsVa/...         (official validation split -> imagesTs/labelsTs)
    amos22/imagesTs/...                       (unlabeled test images: not converted)

AMOS numbers its CT scans 0001-0500 and its MRI scans from 0501 on; MRI cases are recognised by
that number and skipped (the command prints how many). Labels come from AMOS's dataset.json:
1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta,
9 postcava (inferior vena cava), 10 pancreas, 11 right adrenal gland, 12 left adrenal gland,
13 duodenum, 14 bladder, 15 prostate/uterus.

    nnUNetv2_convert_amos22 -i /data/amos22 -d 503
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.folder_layouts import labels_from_provider_json, strip_ending
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase
from nnunet_diffusion_pretrain.errors import UserFacingError

LABELS = {"background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gall_bladder": 4, "esophagus": 5,
          "liver": 6, "stomach": 7, "aorta": 8, "postcava": 9, "pancreas": 10, "right_adrenal_gland": 11,
          "left_adrenal_gland": 12, "duodenum": 13, "bladder": 14, "prostate_uterus": 15}
FIRST_MRI_NUMBER = 501


def is_mri(case: str) -> bool:
    return int(re.search(r"(\d+)$", case).group(1)) >= FIRST_MRI_NUMBER


def find_cases(root: Path) -> tuple[list[SourceCase], int]:
    provider_json = root / "dataset.json"
    if not provider_json.is_file():
        raise UserFacingError(f"{provider_json} is missing; point -i at the unpacked amos22 folder")
    provided = json.loads(provider_json.read_text())
    cases, mri = [], 0
    for split, test in (("training", False), ("validation", True)):
        for entry in provided.get(split, []):
            case = strip_ending(Path(entry["image"]).name)
            if is_mri(case):
                mri += 1
                continue
            cases.append(SourceCase(case, (str(root / entry["image"]),), str(root / entry["label"]), test=test))
    return cases, mri


@exits_cleanly_on_user_errors
def main() -> int:
    args = conversion_parser(__doc__, 503, "AMOS22CT", has_unlabeled=False).parse_args()
    root = require_folder(args.i, "the unpacked amos22 folder")
    cases, mri = find_cases(root)
    print(f"skipping {mri} MRI cases (AMOS numbers {FIRST_MRI_NUMBER} and above)")
    return run_conversion(args, cases, labels_from_provider_json(root / "dataset.json", LABELS), {"0": "CT"},
                          "AMOS22 CT part (15 abdominal organs) converted by nnunet_diffusion_pretrain",
                          "https://amos22.grand-challenge.org/", "CC BY 4.0 (see the AMOS terms)")
