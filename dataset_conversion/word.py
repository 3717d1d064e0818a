"""``nnUNetv2_convert_word``: WORD, Whole abdominal ORgan Dataset (16 organs, CT).

Download: https://github.com/HiLab-git/WORD (WORD-V0.1.0). Expected layout, as shipped:

    WORD-V0.1.0/imagesTr/word_0001.nii.gz, labelsTr/word_0001.nii.gz       (training)
    WORD-V0.1.0/imagesVal/..., labelsVal/...                              (validation -> imagesTs/labelsTs)
    WORD-V0.1.0/imagesTs/..., labelsTs/...                                (test, where labels exist -> imagesTs/labelsTs)

Labels (WORD documentation, also in its dataset.json): 1 liver, 2 spleen, 3 left kidney, 4 right
kidney, 5 stomach, 6 gallbladder, 7 esophagus, 8 pancreas, 9 duodenum, 10 colon, 11 intestine,
12 adrenal, 13 rectum, 14 bladder, 15 head of femur L, 16 head of femur R.

    nnUNetv2_convert_word -i /data/WORD-V0.1.0 -d 504
"""
from __future__ import annotations

from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.folder_layouts import labels_from_provider_json, paired_cases
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

LABELS = {"background": 0, "liver": 1, "spleen": 2, "left_kidney": 3, "right_kidney": 4, "stomach": 5,
          "gallbladder": 6, "esophagus": 7, "pancreas": 8, "duodenum": 9, "colon": 10, "intestine": 11,
          "adrenal": 12, "rectum": 13, "bladder": 14, "head_of_femur_l": 15, "head_of_femur_r": 16}


def find_cases(root: Path) -> list[SourceCase]:
    same_name = lambda stem: f"{stem}.nii.gz"  # noqa: E731
    cases = paired_cases(require_folder(root / "imagesTr", "WORD imagesTr"), root / "labelsTr", ".nii.gz",
                         same_name, str)
    for images, labels in (("imagesVal", "labelsVal"), ("imagesTs", "labelsTs")):
        if (root / images).is_dir() and (root / labels).is_dir():
            cases += paired_cases(root / images, root / labels, ".nii.gz", same_name, str, test=True)
    return cases


@exits_cleanly_on_user_errors
def main() -> int:
    args = conversion_parser(__doc__, 504, "WORD", has_unlabeled=False).parse_args()
    root = require_folder(args.i, "the unpacked WORD-V0.1.0 folder")
    return run_conversion(args, find_cases(root), labels_from_provider_json(root / "dataset.json", LABELS),
                          {"0": "CT"}, "WORD whole abdominal organ dataset (16 organs) converted by "
                          "nnunet_diffusion_pretrain", "https://github.com/HiLab-git/WORD",
                          "GPL-3.0 / research use (see the WORD terms)")
